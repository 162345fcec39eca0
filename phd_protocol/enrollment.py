"""Enrollment and renewal of device credentials, sans I/O: one-time codes and the messages.

HTTP contract (docs/ARCHITECTURE.md, "Enrollment HTTP contract"): the agent POSTs an
:class:`EnrollmentRequest` to ``/api/v1/enroll`` and gets an :class:`EnrollmentResponse`;
later it POSTs a :class:`RenewalRequest` to ``/api/v1/enroll/renew`` and gets an
:class:`EnrollmentResponse` again. Every ``from_json`` bounds the size first, refuses duplicate
keys, unknown keys, missing keys and wrong types, and raises :class:`EnrollmentError` with a
specific :class:`EnrollmentReason`; messages name fields, never values.

One-time codes
--------------
A clinician registers a PHD for a patient; the server issues a code shown as text and QR:
``XXXX-XXXX-XXXX-XXXX-XXXX``, 20 Crockford base32 characters (100 bits). The first group is
the public *handle* the server looks the record up by (20 bits; the server re-draws on a
collision with another live code); the other 80 bits are the secret. Only
``HMAC-SHA256(pepper, label || code)`` is stored. Why a keyed hash and not a slow one: the
code has 100 bits of entropy, so a slow hash adds nothing against guessing, while the pepper
(a server secret outside the database) makes a stolen database useless for testing guesses
offline. Comparison is constant time. Codes live 15 minutes by default, are single use, and
lock after 5 wrong secrets for the same handle (online guessing then succeeds with
probability 5 / 2^80).

State machine of a code record (``attempt_code``), checked in this order::

    state       condition                     -> new state            outcome
    ISSUED      now >= expires_at             -> EXPIRED              code_expired
    ISSUED      secret matches                -> REDEEMED             ok
    ISSUED      wrong, attempts+1 < max       -> ISSUED (attempts+1)  code_invalid
    ISSUED      wrong, attempts+1 == max      -> LOCKED               code_invalid
    REDEEMED    any                           -> REDEEMED             code_used
    LOCKED      any                           -> LOCKED               code_locked
    EXPIRED     any                           -> EXPIRED              code_expired
    CANCELLED   any                           -> CANCELLED            code_cancelled
    ISSUED      cancel_code()                 -> CANCELLED

Renewal
-------
A renewal carries a CSR for the *new* key (its self-signature proves possession of that key)
and a plain signature by the *current* credential key over a canonical form (chosen over
COSE because the message is JSON over HTTPS; the label ``phd-renew-v1`` separates it from
any envelope signature, whose COSE Sig_structure starts with a CBOR array byte)::

    b"phd-renew-v1\\x00" + JSON(sort_keys, no spaces, ASCII) of
        {"cert_kid": hex, "csr_sha256": hex, "device_id": uuid, "nonce": hex, "ts": ms, "v": 1}

``ts`` must be within :data:`RENEWAL_MAX_SKEW` of the server clock and ``nonce`` (16 random
bytes) must not have been seen within that window (:class:`ReplayWindow`), so a captured
renewal cannot be replayed. The server also verifies the current certificate's chain
(purpose device credential, with CRLs): a revoked or expired credential cannot renew, it
must enroll again with a new code.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from phd_protocol import crypto
from phd_protocol.errors import PhdProtocolError
from phd_protocol.pki import (
    CertificateError,
    build_device_csr,
    certificate_kid,
    certificate_public_key,
    csr_public_key,
    load_certificate,
    load_certificates,
)

__all__ = [
    "CODE_ALPHABET",
    "CODE_TTL",
    "INGEST_KID_SIZE",
    "MAX_CODE_ATTEMPTS",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "RENEWAL_MAX_SKEW",
    "CodeAttempt",
    "CodeRecord",
    "CodeState",
    "EnrollmentError",
    "EnrollmentReason",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "IngestKey",
    "PhdInfo",
    "RenewalRequest",
    "ReplayWindow",
    "VerifiedRenewal",
    "attempt_code",
    "cancel_code",
    "code_handle",
    "hash_code",
    "ingest_key_id",
    "issue_code",
    "make_renewal_request",
    "normalize_code",
    "renewal_signing_input",
    "verify_renewal",
]

# Crockford base32 (no I, L, O, U): unambiguous when read aloud or typed from paper.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_GROUPS, _GROUP_LEN = 5, 4
_CODE_LEN = _GROUPS * _GROUP_LEN  # 100 bits
CODE_TTL = timedelta(minutes=15)
MAX_CODE_ATTEMPTS = 5
_CODE_LABEL = b"phd-enroll-code-v1\x00"
_MIN_PEPPER = 32

MAX_REQUEST_BYTES = 16 * 1024
MAX_RESPONSE_BYTES = 64 * 1024
MAX_INGEST_KEYS = 8
_MAX_TEXT = 64

INGEST_KID_SIZE = 16
RENEWAL_MAX_SKEW = timedelta(minutes=5)
_RENEW_LABEL = b"phd-renew-v1\x00"
_NONCE_SIZE = 16

Rng = Callable[[int], bytes]


class EnrollmentReason(enum.StrEnum):
    """Why an enrollment or renewal is refused. Stable names: never rename a value."""

    MALFORMED = "malformed"  # JSON shape, types, lengths or encodings wrong
    TOO_LARGE = "too_large"
    CODE_MALFORMED = "code_malformed"  # not 20 base32 characters
    CODE_INVALID = "code_invalid"  # unknown handle or wrong secret
    CODE_EXPIRED = "code_expired"
    CODE_USED = "code_used"
    CODE_LOCKED = "code_locked"  # too many wrong attempts
    CODE_CANCELLED = "code_cancelled"
    BAD_CSR = "bad_csr"  # CSR malformed, proof of possession fails, or key type refused
    BAD_SIGNATURE = "bad_signature"  # renewal not signed by the current credential
    WRONG_CREDENTIAL = "wrong_credential"  # renewal names a certificate/device that differs
    CLOCK_SKEW = "clock_skew"
    REPLAY = "replay"


class EnrollmentError(PhdProtocolError):
    def __init__(self, reason: EnrollmentReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


def _fail(reason: EnrollmentReason, detail: str = "") -> EnrollmentError:
    return EnrollmentError(reason, detail)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return t.astimezone(UTC)


# --------------------------------------------------------------------------- ingest key ids


def ingest_key_id(public_raw: bytes) -> bytes:
    """Key id of a hospital ingest HPKE public key: SHA-256(label || raw key)[:16]."""
    if len(public_raw) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    return crypto.sha256(b"phd-ingest-kid-v1\x00" + public_raw)[:INGEST_KID_SIZE]


# --------------------------------------------------------------------------- one-time codes


class CodeState(enum.StrEnum):
    ISSUED = "issued"
    REDEEMED = "redeemed"
    LOCKED = "locked"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


_TERMINAL: dict[CodeState, EnrollmentReason] = {
    CodeState.REDEEMED: EnrollmentReason.CODE_USED,
    CodeState.LOCKED: EnrollmentReason.CODE_LOCKED,
    CodeState.EXPIRED: EnrollmentReason.CODE_EXPIRED,
    CodeState.CANCELLED: EnrollmentReason.CODE_CANCELLED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeRecord:
    """What the server stores for a code: never the code itself."""

    handle: str  # first group, the lookup key
    code_hash: bytes  # HMAC-SHA256(pepper, label || normalised code)
    issued_at: datetime
    expires_at: datetime
    state: CodeState = CodeState.ISSUED
    failed_attempts: int = 0
    max_attempts: int = MAX_CODE_ATTEMPTS

    def __post_init__(self) -> None:
        if len(self.handle) != _GROUP_LEN or any(c not in CODE_ALPHABET for c in self.handle):
            raise ValueError("handle must be one code group")
        if len(self.code_hash) != 32:
            raise ValueError("code_hash must be 32 bytes")
        if _aware(self.expires_at) <= _aware(self.issued_at):
            raise ValueError("expires_at must be after issued_at")
        if not 0 <= self.failed_attempts <= self.max_attempts or self.max_attempts < 1:
            raise ValueError("attempt counters out of range")


@dataclass(frozen=True, slots=True)
class CodeAttempt:
    """Result of presenting a code: the record to persist, and the refusal if any."""

    record: CodeRecord
    error: EnrollmentReason | None

    @property
    def ok(self) -> bool:
        return self.error is None


_CROCKFORD_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def normalize_code(text: str) -> str:
    """Upper-case, drop spaces and hyphens, map O->0 and I/L->1; 20 base32 chars or refuse."""
    if len(text) > 64:
        raise _fail(EnrollmentReason.CODE_MALFORMED, "code too long")
    compact = re.sub(r"[\s-]", "", text).upper().translate(_CROCKFORD_ALIASES)
    if len(compact) != _CODE_LEN or any(c not in CODE_ALPHABET for c in compact):
        raise _fail(EnrollmentReason.CODE_MALFORMED, f"code must be {_CODE_LEN} base32 chars")
    return compact


def _display(compact: str) -> str:
    return "-".join(compact[i : i + _GROUP_LEN] for i in range(0, _CODE_LEN, _GROUP_LEN))


def code_handle(text: str) -> str:
    """The handle (first group) of a presented code, for the server's lookup."""
    return normalize_code(text)[:_GROUP_LEN]


def hash_code(pepper: bytes, text: str) -> bytes:
    if len(pepper) < _MIN_PEPPER:
        raise ValueError(f"the code pepper must be at least {_MIN_PEPPER} bytes")
    return crypto.hmac_sha256(pepper, _CODE_LABEL + normalize_code(text).encode("ascii"))


def issue_code(
    *,
    pepper: bytes,
    now: datetime,
    ttl: timedelta = CODE_TTL,
    max_attempts: int = MAX_CODE_ATTEMPTS,
    rng: Rng = secrets.token_bytes,
) -> tuple[str, CodeRecord]:
    """A fresh code for display (``XXXX-XXXX-XXXX-XXXX-XXXX``) and the record to store."""
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    # 13 random bytes = 104 bits; take 100 of them, 5 bits per character.
    value = int.from_bytes(rng(13), "big") >> 4
    compact = "".join(CODE_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(_CODE_LEN)))
    t = _aware(now)
    record = CodeRecord(
        handle=compact[:_GROUP_LEN],
        code_hash=hash_code(pepper, compact),
        issued_at=t,
        expires_at=t + ttl,
        max_attempts=max_attempts,
    )
    return _display(compact), record


def attempt_code(
    record: CodeRecord, presented: str, *, pepper: bytes, now: datetime
) -> CodeAttempt:
    """Apply one presentation of a code to its record (the table in the module docstring).

    Raises EnrollmentError(code_malformed) without touching the record if ``presented`` is
    not even shaped like a code (no attempt is charged for a typo in the alphabet).
    """
    digest = hash_code(pepper, presented)
    if code_handle(presented) != record.handle:
        raise ValueError("the record does not belong to this code's handle")
    terminal = _TERMINAL.get(record.state)
    if terminal is not None:
        return CodeAttempt(record, terminal)
    if _aware(now) >= _aware(record.expires_at):
        return CodeAttempt(replace(record, state=CodeState.EXPIRED), EnrollmentReason.CODE_EXPIRED)
    if crypto.constant_time_equal(digest, record.code_hash):
        return CodeAttempt(replace(record, state=CodeState.REDEEMED), None)
    failed = record.failed_attempts + 1
    state = CodeState.LOCKED if failed >= record.max_attempts else CodeState.ISSUED
    return CodeAttempt(
        replace(record, failed_attempts=failed, state=state), EnrollmentReason.CODE_INVALID
    )


def cancel_code(record: CodeRecord) -> CodeRecord:
    """A clinician withdraws an unused code; used or dead codes stay as they are."""
    if record.state is not CodeState.ISSUED:
        return record
    return replace(record, state=CodeState.CANCELLED)


# --------------------------------------------------------------------------- JSON helpers


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _fail(EnrollmentReason.MALFORMED, "duplicate key")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise _fail(EnrollmentReason.MALFORMED, f"non-finite number {name}")


def _load_object(data: bytes | str, limit: int, what: str) -> dict[str, Any]:
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > limit:
        raise _fail(EnrollmentReason.TOO_LARGE, f"{what} larger than {limit} bytes")
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, EnrollmentError):
            raise
        raise _fail(EnrollmentReason.MALFORMED, f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise _fail(EnrollmentReason.MALFORMED, f"{what} must be a JSON object")
    return value


def _exact_keys(obj: Mapping[str, Any], required: set[str], where: str) -> None:
    keys = set(obj)
    if keys != required:
        missing, extra = sorted(required - keys), sorted(keys - required)
        raise _fail(EnrollmentReason.MALFORMED, f"{where}: missing {missing}, unexpected {extra}")


def _text(obj: Mapping[str, Any], key: str, *, limit: int, optional: bool = False) -> str | None:
    value = obj[key]
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise _fail(EnrollmentReason.MALFORMED, f"{key} must be a string of 1-{limit} chars")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value if c not in "\n\r"):
        raise _fail(EnrollmentReason.MALFORMED, f"{key} contains control characters")
    return value


def _required_text(obj: Mapping[str, Any], key: str, *, limit: int) -> str:
    value = _text(obj, key, limit=limit)
    assert value is not None  # not optional
    return value


def _hex(obj: Mapping[str, Any], key: str, size: int) -> bytes:
    value = obj[key]
    if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-f]{{{2 * size}}}", value):
        raise _fail(EnrollmentReason.MALFORMED, f"{key} must be {size} bytes of lower-case hex")
    return bytes.fromhex(value)


def _uuid(obj: Mapping[str, Any], key: str) -> uuid.UUID:
    value = obj[key]
    if not isinstance(value, str) or len(value) != 36:
        raise _fail(EnrollmentReason.MALFORMED, f"{key} must be a UUID string")
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise _fail(EnrollmentReason.MALFORMED, f"{key} must be a UUID string") from exc
    if str(parsed) != value:
        raise _fail(EnrollmentReason.MALFORMED, f"{key} must be a canonical lower-case UUID")
    return parsed


def _dump(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True, kw_only=True)
class PhdInfo:
    """What the agent read from the PHD's Device Information Service (0x180A).

    ``system_id`` is the 8-byte System ID (0x2A23) as hex. These identify a device of a
    patient: the server stores them encrypted, never logs them, never puts them in a
    certificate.
    """

    system_id: str | None = None
    model: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    firmware: str | None = None

    _KEYS = frozenset({"system_id", "model", "serial", "manufacturer", "firmware"})

    def __post_init__(self) -> None:
        if self.system_id is not None and not re.fullmatch(r"[0-9a-f]{16}", self.system_id):
            raise _fail(EnrollmentReason.MALFORMED, "phd.system_id must be 16 lower-case hex")
        for key in ("model", "serial", "manufacturer", "firmware"):
            _text({key: getattr(self, key)}, key, limit=_MAX_TEXT, optional=True)

    def to_dict(self) -> dict[str, str | None]:
        return {k: getattr(self, k) for k in sorted(self._KEYS)}

    @classmethod
    def from_dict(cls, obj: Any) -> PhdInfo:
        if not isinstance(obj, dict):
            raise _fail(EnrollmentReason.MALFORMED, "phd must be an object")
        _exact_keys(obj, set(cls._KEYS), "phd")
        if obj["system_id"] is not None and not isinstance(obj["system_id"], str):
            raise _fail(EnrollmentReason.MALFORMED, "phd.system_id must be a string or null")
        return cls(
            system_id=obj["system_id"],
            **{
                k: _text(obj, k, limit=_MAX_TEXT, optional=True)
                for k in sorted(cls._KEYS - {"system_id"})
            },
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRequest:
    """``POST /api/v1/enroll`` body: ``{code, csr_pem, phd}``."""

    code: str
    csr_pem: bytes
    phd: PhdInfo

    def __post_init__(self) -> None:
        normalize_code(self.code)
        _check_csr(self.csr_pem)

    def to_json(self) -> bytes:
        return _dump(
            {"code": self.code, "csr_pem": self.csr_pem.decode("ascii"), "phd": self.phd.to_dict()}
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> EnrollmentRequest:
        obj = _load_object(data, MAX_REQUEST_BYTES, "enrollment request")
        _exact_keys(obj, {"code", "csr_pem", "phd"}, "enrollment request")
        code = _required_text(obj, "code", limit=64)
        csr = _required_text(obj, "csr_pem", limit=4096)
        return cls(
            code=code, csr_pem=csr.encode("ascii", "replace"), phd=PhdInfo.from_dict(obj["phd"])
        )


def _check_csr(csr_pem: bytes) -> crypto.VerifyingKey:
    try:
        return csr_public_key(csr_pem)
    except CertificateError as exc:
        raise _fail(EnrollmentReason.BAD_CSR, exc.reason.value) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestKey:
    """A hospital ingest HPKE public key and its id; the id is recomputed and checked."""

    kid: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise _fail(EnrollmentReason.MALFORMED, "ingest public key must be 32 bytes")
        if not crypto.constant_time_equal(self.kid, ingest_key_id(self.public_key)):
            raise _fail(EnrollmentReason.MALFORMED, "ingest kid does not match its key")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentResponse:
    """Enrollment/renewal answer: the credential, its chain, the root, the ingest keys.

    ``ingest_keys`` lists the keys the agent may seal to, the one to use first (the active
    key) first; during a rotation the retiring key follows it.
    """

    device_id: uuid.UUID
    certificate_pem: bytes
    chain_pem: bytes
    root_pem: bytes
    ingest_keys: tuple[IngestKey, ...]

    def __post_init__(self) -> None:
        try:
            leaf = load_certificate(self.certificate_pem)
            chain = load_certificates(self.chain_pem)
            load_certificate(self.root_pem)
        except CertificateError as exc:
            raise _fail(EnrollmentReason.MALFORMED, "certificates do not parse") from exc
        if chain[0] != leaf:
            raise _fail(EnrollmentReason.MALFORMED, "chain must start with the certificate")
        if not 1 <= len(self.ingest_keys) <= MAX_INGEST_KEYS:
            raise _fail(EnrollmentReason.MALFORMED, f"1-{MAX_INGEST_KEYS} ingest keys")

    @property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.certificate_pem)

    def to_json(self) -> bytes:
        return _dump(
            {
                "device_id": str(self.device_id),
                "certificate_pem": self.certificate_pem.decode("ascii"),
                "chain_pem": self.chain_pem.decode("ascii"),
                "root_pem": self.root_pem.decode("ascii"),
                "ingest_keys": [
                    {"kid": k.kid.hex(), "public_key": k.public_key.hex()} for k in self.ingest_keys
                ],
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> EnrollmentResponse:
        obj = _load_object(data, MAX_RESPONSE_BYTES, "enrollment response")
        _exact_keys(
            obj,
            {"device_id", "certificate_pem", "chain_pem", "root_pem", "ingest_keys"},
            "enrollment response",
        )
        keys = obj["ingest_keys"]
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_INGEST_KEYS:
            raise _fail(EnrollmentReason.MALFORMED, f"ingest_keys: 1-{MAX_INGEST_KEYS} entries")
        parsed: list[IngestKey] = []
        for k in keys:
            if not isinstance(k, dict):
                raise _fail(EnrollmentReason.MALFORMED, "ingest_keys entries must be objects")
            _exact_keys(k, {"kid", "public_key"}, "ingest_keys entry")
            parsed.append(
                IngestKey(kid=_hex(k, "kid", INGEST_KID_SIZE), public_key=_hex(k, "public_key", 32))
            )
        pems = {
            key: _required_text(obj, key, limit=MAX_RESPONSE_BYTES).encode("ascii", "replace")
            for key in ("certificate_pem", "chain_pem", "root_pem")
        }
        return cls(device_id=_uuid(obj, "device_id"), ingest_keys=tuple(parsed), **pems)


# --------------------------------------------------------------------------- renewal


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalRequest:
    """``POST /api/v1/enroll/renew`` body, signed by the current credential key."""

    device_id: uuid.UUID
    cert_kid: bytes  # certificate_kid of the current credential certificate
    csr_pem: bytes  # CSR of the new key
    ts: int  # agent time, ms since the Unix epoch
    nonce: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.cert_kid) != 32:
            raise _fail(EnrollmentReason.MALFORMED, "cert_kid must be 32 bytes")
        if len(self.nonce) != _NONCE_SIZE:
            raise _fail(EnrollmentReason.MALFORMED, f"nonce must be {_NONCE_SIZE} bytes")
        if not 0 < self.ts < 2**53:
            raise _fail(EnrollmentReason.MALFORMED, "ts out of range")
        if not 64 <= len(self.signature) <= 64:  # Ed25519 and raw ES256 (r||s) are both 64
            raise _fail(EnrollmentReason.MALFORMED, "signature must be 64 bytes")
        _check_csr(self.csr_pem)

    def signing_input(self) -> bytes:
        return renewal_signing_input(
            device_id=self.device_id,
            cert_kid=self.cert_kid,
            csr_pem=self.csr_pem,
            ts=self.ts,
            nonce=self.nonce,
        )

    def to_json(self) -> bytes:
        return _dump(
            {
                "v": 1,
                "device_id": str(self.device_id),
                "cert_kid": self.cert_kid.hex(),
                "csr_pem": self.csr_pem.decode("ascii"),
                "ts": self.ts,
                "nonce": self.nonce.hex(),
                "signature": self.signature.hex(),
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> RenewalRequest:
        obj = _load_object(data, MAX_REQUEST_BYTES, "renewal request")
        _exact_keys(
            obj,
            {"v", "device_id", "cert_kid", "csr_pem", "ts", "nonce", "signature"},
            "renewal request",
        )
        if obj["v"] != 1 or isinstance(obj["v"], bool):
            raise _fail(EnrollmentReason.MALFORMED, "v must be 1")
        ts = obj["ts"]
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise _fail(EnrollmentReason.MALFORMED, "ts must be an integer")
        return cls(
            device_id=_uuid(obj, "device_id"),
            cert_kid=_hex(obj, "cert_kid", 32),
            csr_pem=_required_text(obj, "csr_pem", limit=4096).encode("ascii", "replace"),
            ts=ts,
            nonce=_hex(obj, "nonce", _NONCE_SIZE),
            signature=_hex(obj, "signature", 64),
        )


def renewal_signing_input(
    *, device_id: uuid.UUID, cert_kid: bytes, csr_pem: bytes, ts: int, nonce: bytes
) -> bytes:
    """The exact bytes the current credential signs (see the module docstring)."""
    return _RENEW_LABEL + _dump(
        {
            "cert_kid": cert_kid.hex(),
            "csr_sha256": crypto.sha256(csr_pem).hex(),
            "device_id": str(device_id),
            "nonce": nonce.hex(),
            "ts": ts,
            "v": 1,
        }
    )


def make_renewal_request(
    *,
    current_key: crypto.SigningKey,
    current_certificate: x509.Certificate,
    new_key: crypto.SigningKey,
    now: datetime,
    rng: Rng = secrets.token_bytes,
) -> RenewalRequest:
    """Agent side: CSR for ``new_key``, signed with the current credential key."""
    device_id = _device_id_of(current_certificate)
    csr_pem = build_device_csr(new_key)
    ts = int(_aware(now).timestamp() * 1000)
    nonce = rng(_NONCE_SIZE)
    kid = certificate_kid(current_certificate)
    signature = crypto.sign(
        current_key,
        renewal_signing_input(
            device_id=device_id, cert_kid=kid, csr_pem=csr_pem, ts=ts, nonce=nonce
        ),
    )
    return RenewalRequest(
        device_id=device_id, cert_kid=kid, csr_pem=csr_pem, ts=ts, nonce=nonce, signature=signature
    )


def _device_id_of(cert: x509.Certificate) -> uuid.UUID:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    try:
        return uuid.UUID(str(cns[0].value))
    except (IndexError, ValueError) as exc:
        raise _fail(
            EnrollmentReason.WRONG_CREDENTIAL, "certificate does not name a device"
        ) from exc


@dataclass(slots=True)
class ReplayWindow:
    """Nonces seen within the allowed clock skew (pure in-memory state, bounded).

    Single-process servers keep one; a fleet of servers should keep the same rule in the
    database (unique nonce with an expiry) instead.
    """

    max_skew: timedelta = RENEWAL_MAX_SKEW
    max_entries: int = 100_000
    _seen: dict[bytes, datetime] = field(default_factory=dict)

    def check_and_remember(self, nonce: bytes, *, now: datetime) -> None:
        t = _aware(now)
        for old in [n for n, exp in self._seen.items() if exp < t]:
            del self._seen[old]
        if nonce in self._seen:
            raise _fail(EnrollmentReason.REPLAY, "nonce already used")
        if len(self._seen) >= self.max_entries:
            # Refusing is safer than forgetting a nonce that may still be replayed.
            raise _fail(EnrollmentReason.REPLAY, "replay window full")
        self._seen[nonce] = t + 2 * self.max_skew


@dataclass(frozen=True, slots=True)
class VerifiedRenewal:
    device_id: uuid.UUID
    new_public_key: crypto.VerifyingKey
    csr_pem: bytes


def verify_renewal(
    request: RenewalRequest,
    current_certificate: x509.Certificate,
    *,
    now: datetime,
    replay: ReplayWindow,
    max_skew: timedelta = RENEWAL_MAX_SKEW,
) -> VerifiedRenewal:
    """Server side, after it has verified ``current_certificate``'s chain (with CRLs).

    Checks in order: the request names this certificate and its device (wrong_credential),
    the signature by the certificate's key (bad_signature), the time (clock_skew), the nonce
    (replay), and the new CSR (bad_csr; already checked at construction).
    """
    if not crypto.constant_time_equal(request.cert_kid, certificate_kid(current_certificate)):
        raise _fail(EnrollmentReason.WRONG_CREDENTIAL, "cert_kid does not match")
    if _device_id_of(current_certificate) != request.device_id:
        raise _fail(EnrollmentReason.WRONG_CREDENTIAL, "device_id does not match")
    try:
        public = certificate_public_key(current_certificate)
        crypto.verify(public, request.signature, request.signing_input())
    except (crypto.CryptoError, CertificateError) as exc:
        raise _fail(EnrollmentReason.BAD_SIGNATURE, "renewal signature") from exc
    t = _aware(now)
    sent = datetime.fromtimestamp(request.ts / 1000, UTC)
    if abs(sent - t) > max_skew:
        raise _fail(EnrollmentReason.CLOCK_SKEW, "renewal timestamp outside the allowed skew")
    replay.check_and_remember(request.nonce, now=t)
    return VerifiedRenewal(
        device_id=request.device_id,
        new_public_key=_check_csr(request.csr_pem),
        csr_pem=request.csr_pem,
    )
