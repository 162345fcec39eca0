"""Envelope verification policy: who may send, when, and in which order; pure functions.

What it is for: after :func:`phd_protocol.envelope.open_envelope` has decrypted an envelope,
decide whether the hospital accepts it. Everything the decision needs comes in as values (the
credential record the server keeps, the replay window it persisted, the time it received the
envelope); nothing here touches a database or a clock, so the server, the CLI and the tests run
the very same rules.

Checks, in order; the first failure decides the one reason (DESIGN.md section 7)::

    step                                              reason on failure
    ------------------------------------------------  ---------------------
    credential looked up by the COSE kid             unknown_credential
    signature verifies with that credential's key     bad_signature
      (and the COSE alg matches the key type)
    signed payload parses (shape, bounds)             malformed
    payload rcpt == framing rcpt_kid                  unknown_recipient_key
      (the HPKE info already bound the framing kid)
    payload dev == the credential's device id         not_enrolled
    credential revoked at or before payload ts        credential_revoked
    payload ts outside [not_before, not_after]        credential_expired
    enrollment ended at or before payload ts          not_enrolled
    payload ts outside [now - max_age, now + future]  clock_skew
    seq already seen, or older than the window        replay
    obs/raw sections parse (deterministic, bounded)   malformed

Validity and revocation are judged at the *time of sealing* (payload ts), so an agent that
was offline may still deliver readings taken while its credential was good; the skew bound
limits how far back a sender may claim to have sealed. The signature is checked before the
payload is parsed, so unauthenticated bytes never reach the payload parser.

A :class:`ReplayWindow` is the sliding anti-replay window of RFC 4303 section 3.4.3 applied to
the per-credential ``seq``: the highest seq accepted plus a bitmap of the ``size`` seqs below
it. It is an immutable value: :meth:`ReplayWindow.accept` returns the next window, which the
server persists in the same transaction as the readings. A seq the window calls SEEN may be a
harmless redelivery: the server answers ``duplicate`` when (device, seq) is already stored
and only otherwise ``replay``.

This module must never log, never read the clock, and never report more than the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from phd_protocol import cose, crypto
from phd_protocol.cbor import CborValue
from phd_protocol.envelope import (
    EnvelopeError,
    KeyRing,
    OpenedEnvelope,
    Payload,
    RawRecord,
    open_envelope,
)
from phd_protocol.errors import RejectReason

if TYPE_CHECKING:  # certificate type for annotations; X.509 parsing lives in phd_protocol.pki
    from cryptography import x509

__all__ = [
    "DEFAULT_REPLAY_WINDOW",
    "CredentialLookup",
    "CredentialRecord",
    "ReplayVerdict",
    "ReplayWindow",
    "VerificationPolicy",
    "VerifiedEnvelope",
    "check_skew",
    "check_standing",
    "credential_from_certificate",
    "open_and_verify",
    "verify_envelope",
]

DEFAULT_REPLAY_WINDOW = 1024


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialRecord:
    """What the hospital knows about one device credential (from its own DB or certificate).

    Times are timezone-aware. ``revoked_at``/``enrollment_ended_at`` are None while in force.
    """

    kid: bytes
    device_id: str
    public_key: crypto.VerifyingKey = field(repr=False)
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    enrollment_ended_at: datetime | None = None
    # Millisecond copies and the key's COSE alg, computed once: checks run per envelope.
    _window: tuple[int, int, int | None, int | None] = field(init=False, repr=False, compare=False)
    _alg: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.kid) != 32:
            raise ValueError("a credential kid is the SHA-256 of the certificate (32 bytes)")
        # ValueError for other key types.
        object.__setattr__(self, "_alg", crypto.signature_algorithm(self.public_key))
        window = (
            _ms(self.not_before),
            _ms(self.not_after),
            None if self.revoked_at is None else _ms(self.revoked_at),
            None if self.enrollment_ended_at is None else _ms(self.enrollment_ended_at),
        )
        object.__setattr__(self, "_window", window)


# The server implements this over its database: kid -> record, or None when unknown.
CredentialLookup = Callable[[bytes], CredentialRecord | None]


def credential_from_certificate(
    cert: x509.Certificate,
    *,
    revoked_at: datetime | None = None,
    enrollment_ended_at: datetime | None = None,
) -> CredentialRecord:
    """A record from a device certificate the hospital issued (CN = device id).

    The caller decides whether to trust ``cert`` (for example with
    :func:`phd_protocol.pki.verify_chain` for the device-credential purpose).
    """
    from cryptography.x509.oid import NameOID  # noqa: PLC0415 -- X.509 only on this path

    from phd_protocol.pki import certificate_kid  # noqa: PLC0415 -- keeps x509 off imports

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise ValueError("a device certificate has exactly one CN")
    public = cert.public_key()
    if not isinstance(public, crypto.VerifyingKey):
        raise ValueError("device certificate key is neither Ed25519 nor P-256")
    return CredentialRecord(
        kid=certificate_kid(cert),
        device_id=str(names[0].value),
        public_key=public,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        revoked_at=revoked_at,
        enrollment_ended_at=enrollment_ended_at,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationPolicy:
    """Tunable bounds. ``max_age``: how long an agent may hold a batch before it arrives
    (offline spooling); ``max_future``: how far ahead of the hospital an agent clock may run.
    """

    max_age: timedelta = timedelta(days=30)
    max_future: timedelta = timedelta(minutes=5)
    _bounds_ms: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_age < timedelta(0) or self.max_future < timedelta(0):
            raise ValueError("skew bounds must be non-negative")
        ms = timedelta(milliseconds=1)
        object.__setattr__(self, "_bounds_ms", (self.max_age // ms, self.max_future // ms))


_DEFAULT_POLICY = VerificationPolicy()


class ReplayVerdict(enum.Enum):
    FRESH = "fresh"  # never accepted: may be stored
    SEEN = "seen"  # accepted before (a redelivery, or a replay)
    TOO_OLD = "too_old"  # below the window: cannot tell, so refuse


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayWindow:
    """Sliding anti-replay window over one credential's seq (RFC 4303 section 3.4.3).

    ``highest`` is the largest seq accepted (-1: none yet); bit ``i`` of ``bitmap`` says
    ``highest - i`` was accepted (bit 0 is ``highest`` itself). Persist the three fields.
    """

    highest: int = -1
    bitmap: int = 0
    size: int = DEFAULT_REPLAY_WINDOW

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 1 << 16:
            raise ValueError("window size must be 1..65536")
        if self.highest < -1:
            raise ValueError("highest must be -1 or a seq")
        if self.bitmap < 0 or self.bitmap >> self.size:
            raise ValueError("bitmap wider than the window")
        if (self.highest == -1) != (self.bitmap == 0) or (
            self.highest >= 0 and not self.bitmap & 1
        ):
            raise ValueError("bitmap must mark highest, and only when something was accepted")

    def verdict(self, seq: int) -> ReplayVerdict:
        if seq > self.highest:
            return ReplayVerdict.FRESH
        offset = self.highest - seq
        if offset >= self.size:
            return ReplayVerdict.TOO_OLD
        return ReplayVerdict.SEEN if self.bitmap >> offset & 1 else ReplayVerdict.FRESH

    def accept(self, seq: int) -> ReplayWindow:
        """The window after accepting ``seq``; ValueError if the verdict is not FRESH."""
        if self.verdict(seq) is not ReplayVerdict.FRESH:
            raise ValueError("seq is not fresh")
        mask = (1 << self.size) - 1
        if seq > self.highest:
            shift = seq - self.highest
            bitmap = ((self.bitmap << shift) | 1) & mask if shift < self.size else 1
            return ReplayWindow(highest=seq, bitmap=bitmap, size=self.size)
        bitmap = self.bitmap | (1 << (self.highest - seq))
        return ReplayWindow(highest=self.highest, bitmap=bitmap, size=self.size)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedEnvelope:
    """An envelope that passed every check: who sent it, to which key, and what it says."""

    payload: Payload
    credential: CredentialRecord
    recipient_kid: bytes
    alg: int
    # Parsed sections; empty when verify_envelope(decode_sections=False) left them unparsed.
    observations: tuple[dict[str, CborValue], ...] = ()
    raw: tuple[RawRecord, ...] = ()


def verify_envelope(
    opened: OpenedEnvelope,
    *,
    credentials: CredentialLookup,
    received_at: datetime,
    policy: VerificationPolicy | None = None,
    replay: ReplayWindow | None = None,
    decode_sections: bool = True,
) -> VerifiedEnvelope:
    """Apply the checks of the module docstring, in order; raise EnvelopeError(reason).

    ``replay=None`` skips the replay check (for diagnosis tools that have no window).
    With ``decode_sections`` (the default) the obs and raw sections are parsed last, so a
    malformed section is refused (malformed) only from an otherwise acceptable sender.
    """
    policy = policy or _DEFAULT_POLICY
    message = opened.message
    credential = credentials(message.kid)
    if credential is None:
        raise EnvelopeError(RejectReason.UNKNOWN_CREDENTIAL)
    try:
        cose.verify_sign1(message, credential.public_key, key_alg=credential._alg)
    except crypto.CryptoError:
        raise EnvelopeError(RejectReason.BAD_SIGNATURE) from None
    payload = Payload.decode(message.payload)
    if payload.rcpt != opened.recipient_kid:
        raise EnvelopeError(RejectReason.UNKNOWN_RECIPIENT_KEY)
    if payload.device_id != credential.device_id:
        raise EnvelopeError(RejectReason.NOT_ENROLLED)
    check_standing(credential, payload.ts)
    check_skew(payload.ts, received_at=received_at, policy=policy)
    if replay is not None and replay.verdict(payload.seq) is not ReplayVerdict.FRESH:
        raise EnvelopeError(RejectReason.REPLAY)
    # Built field by field (what the frozen dataclass's __init__ does, without its call
    # overhead): one per envelope, between the two public-key operations.
    verified = object.__new__(VerifiedEnvelope)
    _set = object.__setattr__
    _set(verified, "payload", payload)
    _set(verified, "credential", credential)
    _set(verified, "recipient_kid", opened.recipient_kid)
    _set(verified, "alg", message.alg)
    _set(verified, "observations", payload.observations() if decode_sections else ())
    _set(verified, "raw", payload.raw_records() if decode_sections else ())
    return verified


def check_standing(credential: CredentialRecord, sealed_ms: int) -> None:
    """Revocation, validity and enrollment of ``credential`` at the time of sealing."""
    not_before, not_after, revoked, ended = credential._window
    if revoked is not None and sealed_ms >= revoked:
        raise EnvelopeError(RejectReason.CREDENTIAL_REVOKED)
    if not not_before <= sealed_ms <= not_after:
        raise EnvelopeError(RejectReason.CREDENTIAL_EXPIRED)
    if ended is not None and sealed_ms >= ended:
        raise EnvelopeError(RejectReason.NOT_ENROLLED)


# The last receipt time converted by check_skew, and its milliseconds.
_RECEIVED_MS: list[tuple[datetime | None, int]] = [(None, 0)]


def check_skew(sealed_ms: int, *, received_at: datetime, policy: VerificationPolicy) -> None:
    """Sealing time within [received - max_age, received + max_future]; else clock_skew."""
    # A server checks a whole batch against one receipt time: convert it once (a datetime
    # is immutable, so the same object always gives the same milliseconds).
    last = _RECEIVED_MS[0]
    if last[0] is received_at:
        now = last[1]
    else:
        now = _ms(received_at)
        _RECEIVED_MS[0] = (received_at, now)  # one atomic store: safe across threads
    max_age, max_future = policy._bounds_ms
    if not now - max_age <= sealed_ms <= now + max_future:
        raise EnvelopeError(RejectReason.CLOCK_SKEW)


def open_and_verify(
    data: bytes,
    *,
    keyring: KeyRing,
    credentials: CredentialLookup,
    received_at: datetime,
    policy: VerificationPolicy | None = None,
    replay_window: Callable[[bytes], ReplayWindow] | None = None,
    decode_sections: bool = True,
) -> VerifiedEnvelope:
    """:func:`~phd_protocol.envelope.open_envelope` then :func:`verify_envelope`.

    ``replay_window(credential_kid)`` returns the persisted window of that credential (a fresh
    ``ReplayWindow()`` for a credential never seen); None skips the replay check.
    """
    opened = open_envelope(data, keyring)
    return verify_envelope(
        opened,
        credentials=credentials,
        received_at=received_at,
        policy=policy,
        replay=None if replay_window is None else replay_window(opened.message.kid),
        decode_sections=decode_sections,
    )
