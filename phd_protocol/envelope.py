"""Envelope v1: a reading batch signed with the device key and encrypted to the hospital.

What it is for: the end-to-end protection of readings between the device agent and the
hospital (DESIGN.md section 4). The gateway and the broker relay envelopes blind.

Layers, outermost first (sizes in bytes)::

    framing   CBOR [1, rcpt_kid, hpke_ct]               at most 64 KiB in total (too_large)
    hpke_ct   enc (32) || AES-256-GCM ciphertext || tag (16)   RFC 9180 base mode,
              DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM;
              info = b"phd-envelope-v1/" || rcpt_kid       (binds the recipient key id)
    plaintext COSE_Sign1, tag 18, protected {1: alg, 4: kid}   (phd_protocol.cose; kid is
              SHA-256 of the device certificate DER; EdDSA -8 or ES256 -7)
    payload   deterministic CBOR map:
              v    1
              dev  device id (canonical lower-case UUID text, the certificate's CN)
              seq  per-credential counter, strictly increasing, 0 .. 2**63-1
              ts   agent time in ms since the Unix epoch when sealed
              rcpt recipient key id (must equal the framing's rcpt_kid)
              obs  bytes: CBOR [observation wire dict, ...]   (a section, see Payload)
              raw  bytes: CBOR [{uuid: text, t: ms, b: bytes}, ...]   original GATT values
              phd  {text: scalar}                  device information (model, serial, ...)

Signing comes before encryption so the hospital can prove who produced a batch while the
relays see only ciphertext; the recipient key id sits in the signed payload *and* in the HPKE
info, so a batch signed for one hospital key cannot be re-targeted to another.

:func:`seal` builds an envelope; :func:`open_envelope` undoes the framing and HPKE with a
:class:`KeyRing` (several ingest keys active at once during a rotation) and parses the COSE
structure. Checking the signature and the sender's standing is the job of
:mod:`phd_protocol.policy`. Every refusal is an :class:`EnvelopeError` carrying exactly one
:class:`~phd_protocol.errors.RejectReason`; messages carry the reason and nothing else, so a
sender learns no more than the reason code (no oracle on which byte or check failed).

This module must never log, never read the clock or randomness except through its defaulted
parameters, and never return payload content that has not passed the checks named above.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from phd_protocol import cbor, cose, crypto
from phd_protocol.errors import PhdProtocolError, RejectReason
from phd_protocol.wire import MAX_ENVELOPE_BYTES

if TYPE_CHECKING:  # key types for annotations only; all key operations go through crypto
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

__all__ = [
    "ENVELOPE_VERSION",
    "HPKE_INFO_LABEL",
    "MAX_ENVELOPE_BYTES",
    "MAX_OBSERVATIONS",
    "MAX_RAW_RECORDS",
    "DeviceSigner",
    "EnvelopeError",
    "IngestKey",
    "KeyRing",
    "OpenedEnvelope",
    "Payload",
    "RawRecord",
    "RecipientKey",
    "encrypt_signed",
    "hpke_info",
    "open_envelope",
    "seal",
    "seal_payload",
]

ENVELOPE_VERSION = 1
HPKE_INFO_LABEL = b"phd-envelope-v1/"
MAX_OBSERVATIONS = 512
MAX_RAW_RECORDS = 512
MAX_OBSERVATION_KEYS = 32  # an observation wire dict has about a dozen keys
MAX_RAW_VALUE = 512  # ATT_MTU bound on a characteristic value (Core spec Vol 3 Part F 3.2.9)
MAX_PHD_KEYS = 32
MAX_TEXT = 256  # any text scalar inside phd info or raw uuid
MAX_SEQ = 2**63 - 1
MAX_KID = 32
MIN_KID = 8
_FRAME_OVERHEAD = crypto.HPKE_ENC_SIZE + crypto.HPKE_TAG_SIZE
# Depth of a section: array -> observation map -> components list -> component map -> a
# value's decimal tag -> its array; one spare level. Beyond this, an envelope is hostile.
_SECTION_MAX_DEPTH = 7
_PAYLOAD_KEYS = frozenset({"v", "dev", "seq", "ts", "rcpt", "obs", "raw", "phd"})
_RAW_KEYS = frozenset({"uuid", "t", "b"})

Clock = Callable[[], int]


def _wall_clock_ms() -> int:
    # The default of seal()'s injectable clock (datetime, not time: see tests/test_purity.py).
    return int(datetime.now(UTC).timestamp() * 1000)


class EnvelopeError(PhdProtocolError):
    """An envelope is refused. ``reason`` is the public code; the message is only that code."""

    def __init__(self, reason: RejectReason) -> None:
        self.reason = reason
        super().__init__(reason.value)


def _fail(reason: RejectReason) -> EnvelopeError:
    return EnvelopeError(reason)


def hpke_info(rcpt_kid: bytes) -> bytes:
    """HPKE ``info``: the fixed label then the recipient key id (label length is fixed)."""
    return HPKE_INFO_LABEL + rcpt_kid


def _check_kid(kid: object, what: str) -> bytes:
    if not isinstance(kid, bytes) or not MIN_KID <= len(kid) <= MAX_KID:
        raise ValueError(f"{what} must be {MIN_KID}..{MAX_KID} bytes")
    return kid


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientKey:
    """A hospital ingest public key as the agent holds it (from enrollment)."""

    kid: bytes
    public_key: X25519PublicKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_kid(self.kid, "recipient kid")

    @classmethod
    def from_raw(cls, kid: bytes, public_raw: bytes) -> RecipientKey:
        return cls(kid=kid, public_key=crypto.load_x25519_public_raw(public_raw))


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestKey:
    """A hospital ingest private key with its id. The key never appears in ``repr``."""

    kid: bytes
    private_key: X25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_kid(self.kid, "ingest kid")

    @property
    def recipient(self) -> RecipientKey:
        return RecipientKey(kid=self.kid, public_key=self.private_key.public_key())


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The ingest keys currently accepted, by kid (rotation: old and new overlap)."""

    keys: tuple[IngestKey, ...]
    _by_kid: Mapping[bytes, IngestKey] = field(init=False, repr=False, compare=False)

    def __init__(self, keys: Iterable[IngestKey]) -> None:
        keys = tuple(keys)
        by_kid: dict[bytes, IngestKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ValueError("two ingest keys share a kid")
            by_kid[key.kid] = key
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "_by_kid", by_kid)

    def get(self, kid: bytes) -> IngestKey | None:
        return self._by_kid.get(kid)

    @property
    def kids(self) -> tuple[bytes, ...]:
        return tuple(k.kid for k in self.keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSigner:
    """The agent's sealing identity: device id, certificate kid, and the loaded private key."""

    device_id: str
    kid: bytes
    key: crypto.SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_device_id(self.device_id)
        if len(self.kid) != 32:
            raise ValueError("a device kid is the SHA-256 of the certificate (32 bytes)")
        crypto.signature_algorithm(self.key)  # ValueError for a key type we do not accept


# Canonical UUID text as str(uuid.UUID(...)) prints it; a regex is several times faster than
# parsing and this check runs for every envelope.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _check_device_id(device_id: object) -> str:
    if not isinstance(device_id, str) or _CANONICAL_UUID.fullmatch(device_id) is None:
        raise ValueError("device id must be a canonical (lower-case, hyphenated) UUID")
    return device_id


# --------------------------------------------------------------------------- payload


@dataclass(frozen=True, slots=True, kw_only=True)
class RawRecord:
    """One original characteristic value: its UUID (text), receive time (ms), the bytes."""

    uuid: str
    t: int
    b: bytes

    def __post_init__(self) -> None:
        _check_text(self.uuid, "raw uuid")
        _check_uint(self.t, MAX_SEQ, "raw t")
        _check_bytes(self.b, MAX_RAW_VALUE, "raw b")


# Validators take ``object``: values arrive from decoded CBOR or untyped callers, whatever the
# annotations of the dataclass say.
def _check_text(value: object, what: str) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT:
        raise ValueError(f"{what} must be text of 1..{MAX_TEXT} characters")


def _check_uint(value: object, high: int, what: str) -> None:
    if type(value) is not int or not 0 <= value <= high:
        raise ValueError(f"{what} must be an integer in 0..{high}")


def _check_bytes(value: object, high: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) > high:
        raise ValueError(f"{what} must be at most {high} bytes")


def _check_observation(value: object) -> None:
    # type() first: the exact dict of a wire dict or a decoded map is the common case, and an
    # ABC isinstance check per observation is measurable when sealing.
    if (type(value) is not dict and not isinstance(value, Mapping)) or not (
        1 <= len(value) <= MAX_OBSERVATION_KEYS
    ):
        raise ValueError(f"an observation is a map of 1..{MAX_OBSERVATION_KEYS} keys")
    for key in value:
        if type(key) is not str and not isinstance(key, str):
            raise ValueError("observation keys must be text")


def _check_phd(value: object) -> None:
    if (type(value) is not dict and not isinstance(value, Mapping)) or len(value) > MAX_PHD_KEYS:
        raise ValueError(f"phd info is a map of at most {MAX_PHD_KEYS} keys")
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError("phd info maps text keys to short scalar values")
        kind = type(item)
        if kind is str or isinstance(item, str):
            if len(item) > MAX_TEXT:
                raise ValueError("phd info maps text keys to short scalar values")
        elif item is not None and not isinstance(item, bool | int | bytes):
            raise ValueError("phd info maps text keys to short scalar values")


def _phd_ok(value: object) -> bool:
    try:
        _check_phd(value)
    except ValueError:
        return False
    return True


def _decode_section(section: bytes) -> list[cbor.CborValue]:
    try:
        value = cbor.decode(
            section,
            max_depth=_SECTION_MAX_DEPTH,
            max_size=MAX_ENVELOPE_BYTES,
            tags=frozenset({cbor.TAG_DECIMAL_FRACTION}),
        )
    except cbor.CborError:
        raise _fail(RejectReason.MALFORMED) from None
    if not isinstance(value, list):
        raise _fail(RejectReason.MALFORMED)
    return value


def _raw_record(value: object) -> RawRecord:
    if not isinstance(value, dict) or value.keys() != _RAW_KEYS:
        raise ValueError("raw record shape")
    return RawRecord(uuid=value["uuid"], t=value["t"], b=value["b"])


# The payload map as the deterministic encoding lays it out: its keys sorted by their encodings
# (RFC 8949 section 4.2.1), which puts "v" (always 1) and "ts" first.
_PAYLOAD_ORDER = tuple(sorted(_PAYLOAD_KEYS, key=cbor.encode))
# The bytes of: a map of eight pairs, "v": 1, "ts" (the head of its value follows).
_PAYLOAD_PREFIX = cbor.encode(dict.fromkeys(_PAYLOAD_ORDER, 0) | {"v": ENVELOPE_VERSION})[:7]
_KEY_DEV, _KEY_OBS, _KEY_PHD, _KEY_RAW, _KEY_SEQ, _KEY_RCPT = (
    cbor.encode(key) for key in _PAYLOAD_ORDER[2:]
)
if _PAYLOAD_ORDER != ("v", "ts", "dev", "obs", "phd", "raw", "seq", "rcpt"):  # pragma: no cover
    raise AssertionError("the payload fast path below reads the keys in this order")


# Encoded phd maps already decoded and found within the payload rules (_check_phd), with their
# value (one per device model in practice).
_PHD_CACHE: dict[bytes, dict[cbor.CborKey, cbor.CborValue]] = {}
_PHD_CACHE_LIMIT = 4096


def _decode_payload_fast(data: bytes) -> dict[cbor.CborKey, cbor.CborValue] | None:
    """The payload map read along its one layout, or None to leave it to :func:`cbor.decode`."""
    read = _read_layout(data)
    return None if read is None else read[0]


def _read_layout(data: bytes) -> tuple[dict[cbor.CborKey, cbor.CborValue], bool] | None:
    """:func:`_decode_payload_fast`'s map, and whether its phd map already passed _check_phd.

    Succeeds only on input the strict decoder decodes to the same dict: every key at its
    place, every head in shortest form (``cbor.head_at``, ``cbor.byte_string_at``), text
    valid UTF-8, the phd map through the strict decoder itself (depth 1: scalars only, as
    depth 2 allows there), and nothing after the last value. Anything else (including a
    version other than 1) goes to the strict path, which decides. Unrolled: it runs for
    every envelope opened, between the two public-key operations.
    """
    size = len(data)
    if size > MAX_ENVELOPE_BYTES or not data.startswith(_PAYLOAD_PREFIX):
        return None
    head = cbor.head_at(data, len(_PAYLOAD_PREFIX))
    if head is None or head[0] != 0 or not data.startswith(_KEY_DEV, head[2]):
        return None
    ts = head[1]
    head = cbor.head_at(data, head[2] + len(_KEY_DEV))
    if head is None or head[0] != 3 or head[2] + head[1] > size:
        return None
    pos = head[2] + head[1]
    try:
        dev = data[head[2] : pos].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not data.startswith(_KEY_OBS, pos):
        return None
    obs_at = cbor.byte_string_at(data, pos + len(_KEY_OBS))
    if obs_at is None or not data.startswith(_KEY_PHD, obs_at[1]):
        return None
    phd_at = obs_at[1] + len(_KEY_PHD)
    # A device sends the same PHD information in every envelope: its encoding (up to the raw
    # key) is looked up first. A hit is bytes the strict decoder decoded before, ending
    # exactly there, so decoding them again would give the same map; a "craw" inside a phd
    # string only makes the candidate shorter, which misses and is decoded below.
    raw_key_at = data.find(_KEY_RAW, phd_at)
    candidate = data[phd_at:raw_key_at] if raw_key_at > phd_at else b""
    cached = _PHD_CACHE.get(candidate) if candidate else None
    if cached is not None:
        phd: cbor.CborValue = dict(cached)  # the caller's own copy
        pos = raw_key_at
        phd_checked = True
    else:
        try:
            phd, pos = cbor.decode_item(data, phd_at, max_depth=1, tags=frozenset())
        except cbor.CborError:
            return None
        # Only a map within the rules is memoised; one outside them is refused (malformed) by
        # Payload on every arrival.
        phd_checked = _phd_ok(phd)
        if phd_checked and pos == raw_key_at and len(_PHD_CACHE) < _PHD_CACHE_LIMIT:
            _PHD_CACHE[candidate] = dict(phd)  # type: ignore[arg-type] # _phd_ok: a Mapping
    if not data.startswith(_KEY_RAW, pos):
        return None
    raw_at = cbor.byte_string_at(data, pos + len(_KEY_RAW))
    if raw_at is None or not data.startswith(_KEY_SEQ, raw_at[1]):
        return None
    head = cbor.head_at(data, raw_at[1] + len(_KEY_SEQ))
    if head is None or head[0] != 0 or not data.startswith(_KEY_RCPT, head[2]):
        return None
    rcpt_at = cbor.byte_string_at(data, head[2] + len(_KEY_RCPT))
    if rcpt_at is None or rcpt_at[1] != size:
        return None
    value: dict[cbor.CborKey, cbor.CborValue] = {
        "v": ENVELOPE_VERSION,
        "ts": ts,
        "dev": dev,
        "obs": data[obs_at[0] : obs_at[1]],
        "phd": phd,
        "raw": data[raw_at[0] : raw_at[1]],
        "seq": head[1],
        "rcpt": data[rcpt_at[0] : rcpt_at[1]],
    }
    return value, phd_checked


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """The signed content of an envelope (see the module docstring for the CBOR map).

    ``obs`` and ``raw`` travel as *sections*: byte strings holding the deterministic CBOR
    array of observation wire dicts and of raw records (as COSE wraps its protected header).
    Authentication, standing, skew and replay need only the header fields, so the hospital
    checks those without walking hundreds of observation items, and can keep the exact signed
    bytes of a batch as evidence. :meth:`observations` and :meth:`raw_records` parse a
    section (EnvelopeError(malformed) if it is not the one deterministic encoding of a
    bounded array of maps). Build payloads with :meth:`build`.
    """

    device_id: str
    seq: int
    ts: int
    rcpt: bytes
    obs_section: bytes
    raw_section: bytes
    phd: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_device_id(self.device_id)
        _check_uint(self.seq, MAX_SEQ, "seq")
        _check_uint(self.ts, MAX_SEQ, "ts")
        _check_kid(self.rcpt, "rcpt")
        _check_bytes(self.obs_section, MAX_ENVELOPE_BYTES, "obs section")
        _check_bytes(self.raw_section, MAX_ENVELOPE_BYTES, "raw section")
        _check_phd(self.phd)

    @classmethod
    def build(
        cls,
        *,
        device_id: str,
        seq: int,
        ts: int,
        rcpt: bytes,
        observations: Sequence[Mapping[str, Any]],
        raw: Sequence[RawRecord] = (),
        phd: Mapping[str, Any] | None = None,
    ) -> Payload:
        """Validate and encode; ValueError/TypeError for values outside the payload shape."""
        if len(observations) > MAX_OBSERVATIONS:
            raise ValueError(f"at most {MAX_OBSERVATIONS} observations per envelope")
        for obs in observations:
            _check_observation(obs)
        if len(raw) > MAX_RAW_RECORDS:
            raise ValueError(f"at most {MAX_RAW_RECORDS} raw records per envelope")
        if not all(isinstance(r, RawRecord) for r in cast("Sequence[object]", raw)):
            raise TypeError("raw must hold RawRecord values")
        obs_section = cbor.encode(list(observations))
        raw_section = cbor.encode([{"uuid": r.uuid, "t": r.t, "b": r.b} for r in raw])
        if len(obs_section) + len(raw_section) > MAX_ENVELOPE_BYTES:
            raise _fail(RejectReason.TOO_LARGE)  # split the batch and seal the halves
        return cls(
            device_id=device_id,
            seq=seq,
            ts=ts,
            rcpt=rcpt,
            obs_section=obs_section,
            raw_section=raw_section,
            phd=dict(phd or {}),
        )

    def observations(self) -> tuple[dict[str, cbor.CborValue], ...]:
        """The observation wire dicts; EnvelopeError(malformed) for a bad section."""
        items = _decode_section(self.obs_section)
        if len(items) > MAX_OBSERVATIONS:
            raise _fail(RejectReason.MALFORMED)
        try:
            for item in items:
                _check_observation(item)
        except ValueError:
            raise _fail(RejectReason.MALFORMED) from None
        return tuple(cast("list[dict[str, cbor.CborValue]]", items))

    def raw_records(self) -> tuple[RawRecord, ...]:
        """The original characteristic values; EnvelopeError(malformed) for a bad section."""
        items = _decode_section(self.raw_section)
        if len(items) > MAX_RAW_RECORDS:
            raise _fail(RejectReason.MALFORMED)
        try:
            return tuple(_raw_record(r) for r in items)
        except (ValueError, TypeError):
            raise _fail(RejectReason.MALFORMED) from None

    def to_cbor(self) -> dict[str, cbor.Encodable]:
        return {
            "v": ENVELOPE_VERSION,
            "dev": self.device_id,
            "seq": self.seq,
            "ts": self.ts,
            "rcpt": self.rcpt,
            "obs": self.obs_section,
            "raw": self.raw_section,
            "phd": self.phd,
        }

    def encode(self) -> bytes:
        return cbor.encode(self.to_cbor())

    @classmethod
    def decode(cls, data: bytes) -> Payload:
        """Parse the header of a signed payload; EnvelopeError(malformed) outside the shape.

        Sections are checked to be byte strings here and parsed only on demand.
        """
        read = _read_layout(data) if type(data) is bytes else None
        if read is not None:
            return cls._from_layout(*read)
        try:
            # Depth 2: the payload map and the phd map; no tags (Decimals are in sections).
            value = cbor.decode(data, max_depth=2, max_size=MAX_ENVELOPE_BYTES, tags=frozenset())
        except cbor.CborError:
            raise _fail(RejectReason.MALFORMED) from None
        if not isinstance(value, dict) or value.keys() != _PAYLOAD_KEYS:
            raise _fail(RejectReason.MALFORMED)
        if value["v"] != ENVELOPE_VERSION or type(value["v"]) is not int:
            raise _fail(RejectReason.MALFORMED)
        try:
            return cls(
                device_id=value["dev"],  # type: ignore[arg-type] # validated in __post_init__
                seq=value["seq"],  # type: ignore[arg-type] # validated in __post_init__
                ts=value["ts"],  # type: ignore[arg-type] # validated in __post_init__
                rcpt=value["rcpt"],  # type: ignore[arg-type] # validated in __post_init__
                obs_section=value["obs"],  # type: ignore[arg-type] # validated in __post_init__
                raw_section=value["raw"],  # type: ignore[arg-type] # validated in __post_init__
                phd=value["phd"],  # type: ignore[arg-type] # validated in __post_init__
            )
        except (ValueError, TypeError):
            raise _fail(RejectReason.MALFORMED) from None

    @classmethod
    def _from_layout(cls, value: dict[cbor.CborKey, cbor.CborValue], phd_checked: bool) -> Payload:
        """A payload from what :func:`_read_layout` read: every key at its place, v == 1, ts
        and seq unsigned integers, dev text, rcpt and the sections byte strings within the
        envelope bound, and (``phd_checked``) a phd map that passed :func:`_check_phd`. The
        rules of ``__post_init__`` that this does not already imply are checked here, inline
        (opening an envelope builds one payload, between the two public-key operations), with
        the same outcome: EnvelopeError(malformed)."""
        dev, seq, ts, rcpt, phd = (
            value["dev"],
            value["seq"],
            value["ts"],
            value["rcpt"],
            value["phd"],
        )
        if (
            type(dev) is not str
            or _CANONICAL_UUID.fullmatch(dev) is None
            or type(seq) is not int
            or seq > MAX_SEQ
            or type(ts) is not int
            or ts > MAX_SEQ
            or type(rcpt) is not bytes
            or not MIN_KID <= len(rcpt) <= MAX_KID
        ):
            raise _fail(RejectReason.MALFORMED)
        if not phd_checked:
            try:
                _check_phd(phd)
            except ValueError:
                raise _fail(RejectReason.MALFORMED) from None
        payload = object.__new__(cls)
        _set = object.__setattr__
        _set(payload, "device_id", dev)
        _set(payload, "seq", seq)
        _set(payload, "ts", ts)
        _set(payload, "rcpt", rcpt)
        _set(payload, "obs_section", value["obs"])
        _set(payload, "raw_section", value["raw"])
        _set(payload, "phd", phd)
        return payload


# --------------------------------------------------------------------------- sealing


# The framing [1, rcpt_kid, hpke_ct] in deterministic CBOR starts with these two bytes.
_FRAME_START = cbor.encode([ENVELOPE_VERSION, b"", b""])[:2]


def encrypt_signed(signed: bytes, recipient: RecipientKey) -> bytes:
    """HPKE-encrypt a COSE_Sign1 to ``recipient`` and frame it; EnvelopeError(too_large)."""
    sealed = crypto.hpke_seal(recipient.public_key, signed, info=hpke_info(recipient.kid))
    head = cbor.encode_bytes_head
    # [1, rcpt_kid, hpke_ct] assembled from its deterministic parts: the ciphertext is
    # copied once, into the envelope (tests compare with cbor.encode).
    kid = recipient.kid
    envelope = b"".join((_FRAME_START, head(len(kid)), kid, head(len(sealed)), sealed))
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise _fail(RejectReason.TOO_LARGE)
    return envelope


def seal_payload(payload: Payload, *, signer: DeviceSigner, recipient: RecipientKey) -> bytes:
    """Sign ``payload`` as ``signer`` and encrypt it to ``recipient``.

    The payload's device id and rcpt must match the signer and the recipient: a mismatch is a
    programming error here (ValueError), and a refusal at the hospital.
    """
    if payload.device_id != signer.device_id:
        raise ValueError("payload device id differs from the signer's")
    if payload.rcpt != recipient.kid:
        raise ValueError("payload rcpt differs from the recipient kid")
    return _seal_unchecked(payload, signer=signer, recipient=recipient)


def _seal_unchecked(payload: Payload, *, signer: DeviceSigner, recipient: RecipientKey) -> bytes:
    encoded = payload.encode()
    # Refuse early: an oversized payload cannot fit, and signing it would be wasted work.
    if len(encoded) + _FRAME_OVERHEAD > MAX_ENVELOPE_BYTES:
        raise _fail(RejectReason.TOO_LARGE)
    signed = cose.sign1(signer.key, kid=signer.kid, payload=encoded)
    return encrypt_signed(signed, recipient)


def seal(
    *,
    signer: DeviceSigner,
    recipient: RecipientKey,
    seq: int,
    observations: Sequence[Mapping[str, Any]],
    raw: Sequence[RawRecord] = (),
    phd: Mapping[str, Any] | None = None,
    clock: Clock = _wall_clock_ms,
) -> bytes:
    """Seal one batch. ``seq`` must already be persisted by the caller (DESIGN.md section 4).

    ``clock`` returns the agent's time in ms (injectable for tests). Raises
    EnvelopeError(too_large) when the batch does not fit 64 KiB (split it and retry), and
    ValueError/TypeError for values outside the payload shape.
    """
    payload = Payload.build(
        device_id=signer.device_id,
        seq=seq,
        ts=clock(),
        rcpt=recipient.kid,
        observations=observations,
        raw=raw,
        phd=phd,
    )
    return _seal_unchecked(payload, signer=signer, recipient=recipient)


# --------------------------------------------------------------------------- opening


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedEnvelope:
    """Decrypted but not yet verified: the signature and the sender are still unchecked."""

    recipient_kid: bytes
    message: cose.Sign1
    # The COSE_Sign1 bytes exactly as sealed (``message`` parsed from them): what a verifier
    # stores to re-check the device's signature later.
    signed: bytes


def _parse_frame(data: bytes) -> tuple[bytes, bytes]:
    if len(data) > MAX_ENVELOPE_BYTES:
        raise _fail(RejectReason.TOO_LARGE)
    # Fast path: the one layout, byte by byte, with every bound of the strict path below;
    # whatever it does not recognise goes to the strict path, which decides the reason.
    if data[:2] == _FRAME_START:
        kid_at = cbor.byte_string_at(data, 2)
        if kid_at is not None and MIN_KID <= kid_at[1] - kid_at[0] <= MAX_KID:
            sealed_at = cbor.byte_string_at(data, kid_at[1])
            if (
                sealed_at is not None
                and sealed_at[1] == len(data)
                and sealed_at[1] - sealed_at[0] >= _FRAME_OVERHEAD
            ):
                return data[kid_at[0] : kid_at[1]], data[sealed_at[0] :]
    return _parse_frame_strict(data)


def _parse_frame_strict(data: bytes) -> tuple[bytes, bytes]:
    try:
        frame = cbor.decode(data, max_depth=1, max_items=4, tags=frozenset())
    except cbor.CborError:
        raise _fail(RejectReason.MALFORMED) from None
    if not isinstance(frame, list) or len(frame) != 3:
        raise _fail(RejectReason.MALFORMED)
    version, kid, sealed = frame
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise _fail(RejectReason.MALFORMED)
    if not isinstance(kid, bytes) or not MIN_KID <= len(kid) <= MAX_KID:
        raise _fail(RejectReason.MALFORMED)
    if not isinstance(sealed, bytes) or len(sealed) < _FRAME_OVERHEAD:
        raise _fail(RejectReason.MALFORMED)
    return kid, sealed


def open_envelope(data: bytes, keyring: KeyRing) -> OpenedEnvelope:
    """Undo framing and HPKE; parse the COSE_Sign1 inside. The signature is NOT checked here.

    Reasons: too_large, malformed (framing or COSE structure), unknown_recipient_key (kid not
    in the ring), decrypt_failed (any HPKE failure, one opaque outcome).
    """
    if not isinstance(data, bytes):
        raise TypeError("open_envelope() takes bytes")
    kid, sealed = _parse_frame(data)
    key = keyring.get(kid)
    if key is None:
        raise _fail(RejectReason.UNKNOWN_RECIPIENT_KEY)
    try:
        plaintext = crypto.hpke_open(key.private_key, sealed, info=hpke_info(kid))
    except crypto.CryptoError:
        raise _fail(RejectReason.DECRYPT_FAILED) from None
    try:
        message = cose.Sign1.decode(plaintext, max_size=MAX_ENVELOPE_BYTES)
    except cose.CoseError:
        raise _fail(RejectReason.MALFORMED) from None
    opened = object.__new__(OpenedEnvelope)  # the frozen dataclass's fields, set directly
    _set = object.__setattr__
    _set(opened, "recipient_kid", kid)
    _set(opened, "message", message)
    _set(opened, "signed", plaintext)
    return opened
