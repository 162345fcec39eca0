"""COSE_Sign1 (RFC 9052 section 4.2) with EdDSA (-8) and ES256 (-7), in one strict profile.

What it is for: the signature layer of Envelope v1. A device signs its payload with its
credential key; the hospital checks the signature with the certificate named by ``kid``.

The profile accepted (and produced) here is deliberately narrow, so there is one encoding per
message and nothing an attacker can steer::

    18([                      ; tag 18, COSE_Sign1 (RFC 9052 section 4.2)
        h'A2 01 <alg> 04 <kid>',  ; protected: exactly {1: alg, 4: kid}, deterministic CBOR
        {},                   ; unprotected: empty (everything that matters is signed)
        h'<payload>',         ; attached payload (detached payloads are refused)
        h'<signature>'        ; 64 bytes: Ed25519, or ES256 as raw r||s (RFC 9053 section 2.1)
    ])

    Sig_structure = ["Signature1", protected, h'', payload]   ; RFC 9052 section 4.4

The algorithm is taken from the protected header but must also match the verifying key's type
(no algorithm confusion: an ES256 header never gets an Ed25519 key checked against it, nor the
reverse). Structural problems raise :class:`CoseError` (a ParseError); a signature that does
not verify raises the opaque :class:`~phd_protocol.crypto.CryptoError`.

This module must never verify with a key chosen by the message (the caller looks the key up by
``kid`` through its own trust decisions), never accept an unprotected ``alg`` or ``kid``, and
never log.
"""

from __future__ import annotations

from dataclasses import dataclass

from phd_protocol import cbor, crypto
from phd_protocol.crypto import COSE_EDDSA, COSE_ES256, SigningKey, VerifyingKey
from phd_protocol.errors import ParseError

__all__ = [
    "HEADER_ALG",
    "HEADER_KID",
    "MAX_KID_SIZE",
    "SUPPORTED_ALGORITHMS",
    "CoseError",
    "Sign1",
    "sig_structure",
    "sign1",
    "verify_sign1",
]

HEADER_ALG = 1  # RFC 9052 section 3.1, Table 2
HEADER_KID = 4
SUPPORTED_ALGORITHMS = frozenset({COSE_EDDSA, COSE_ES256})
MAX_KID_SIZE = 64
_SIGNATURE_SIZE = 64  # Ed25519 (RFC 8032) and ES256 r||s (RFC 9053 section 2.1) alike
_CONTEXT_SIGNATURE1 = "Signature1"


class CoseError(ParseError):
    """A COSE_Sign1 message is not in our profile; the message names the rule, not content."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sign1:
    """A structurally valid COSE_Sign1 message, not yet verified.

    ``protected`` keeps the exact protected-header bytes: the signature covers them, not their
    decoded form.
    """

    alg: int
    kid: bytes
    payload: bytes
    signature: bytes
    protected: bytes

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = cbor.DEFAULT_MAX_SIZE) -> Sign1:
        """Parse a tagged COSE_Sign1; CoseError unless it is exactly our profile."""
        if type(data) is bytes and len(data) <= max_size:  # others: the strict path refuses
            message = _decode_fast(data)
            if message is not None:
                return message
        return cls._decode_strict(data, max_size=max_size)

    @classmethod
    def _decode_strict(cls, data: bytes, *, max_size: int) -> Sign1:
        """The general parser: decides, and names the rule, for anything off the fast path."""
        try:
            # Depth 3: tag -> array -> unprotected map. The payload stays an opaque byte string.
            value = cbor.decode(
                data, max_depth=3, max_size=max_size, tags=frozenset({cbor.TAG_COSE_SIGN1})
            )
        except cbor.CborError as exc:
            raise CoseError(f"COSE_Sign1 is not deterministic CBOR ({exc.rule})") from exc
        if not isinstance(value, cbor.Tag) or value.number != cbor.TAG_COSE_SIGN1:
            raise CoseError("COSE_Sign1 must carry tag 18")
        body = value.value
        if not isinstance(body, list) or len(body) != 4:
            raise CoseError("COSE_Sign1 must be an array of four items")
        protected, unprotected, payload, signature = body
        if not isinstance(protected, bytes):
            raise CoseError("protected header must be a byte string")
        if unprotected != {}:
            raise CoseError("unprotected header must be empty")
        if not isinstance(payload, bytes):
            raise CoseError("payload must be an attached byte string")
        if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_SIZE:
            raise CoseError(f"signature must be {_SIGNATURE_SIZE} bytes")
        alg, kid = _parse_protected(protected)
        return cls(alg=alg, kid=kid, payload=payload, signature=signature, protected=protected)


_SIGN1_START = b"\xd2\x84"  # tag 18, array of 4
_EMPTY_MAP = 0xA0
_SIGNATURE_HEAD = b"\x58\x40"  # byte string of 64 bytes


def _decode_fast(data: bytes) -> Sign1 | None:
    """The profile's one layout, checked byte by byte, or None to leave it to the strict parser.

    Returns a message only when every byte is where the profile puts it, with shortest heads
    and nothing after the signature: exactly the inputs :meth:`Sign1._decode_strict` accepts,
    and the protected header goes through the same :func:`_parse_protected`. Saves a generic
    CBOR walk (and its copies) on every envelope opened.
    """
    if data[:2] != _SIGN1_START:
        return None
    protected_at = cbor.byte_string_at(data, 2)
    if protected_at is None:
        return None
    protected_end = protected_at[1]
    if protected_end >= len(data) or data[protected_end] != _EMPTY_MAP:
        return None
    payload_at = cbor.byte_string_at(data, protected_end + 1)
    if payload_at is None:
        return None
    payload_end = payload_at[1]
    signature_at = payload_end + len(_SIGNATURE_HEAD)
    if data[payload_end:signature_at] != _SIGNATURE_HEAD:
        return None
    if signature_at + _SIGNATURE_SIZE != len(data):
        return None
    protected = data[protected_at[0] : protected_end]
    alg, kid = _parse_protected(protected)
    message = object.__new__(Sign1)  # the frozen dataclass's fields, set directly
    _set = object.__setattr__
    _set(message, "alg", alg)
    _set(message, "kid", kid)
    _set(message, "payload", data[payload_at[0] : payload_end])
    _set(message, "signature", data[signature_at:])
    _set(message, "protected", protected)
    return message


# Protected headers recur (one per device credential): memoise their parse, bounded.
_PROTECTED_CACHE: dict[bytes, tuple[int, bytes]] = {}
_PROTECTED_CACHE_LIMIT = 4096


def _parse_protected(protected: bytes) -> tuple[int, bytes]:
    cached = _PROTECTED_CACHE.get(protected)
    if cached is not None:
        return cached
    parsed = _parse_protected_uncached(protected)
    if len(_PROTECTED_CACHE) < _PROTECTED_CACHE_LIMIT:
        _PROTECTED_CACHE[protected] = parsed
    return parsed


def _parse_protected_uncached(protected: bytes) -> tuple[int, bytes]:
    try:
        header = cbor.decode(protected, max_depth=1, tags=frozenset())
    except cbor.CborError as exc:
        raise CoseError(f"protected header is not deterministic CBOR ({exc.rule})") from exc
    if not isinstance(header, dict) or set(header) != {HEADER_ALG, HEADER_KID}:
        raise CoseError("protected header must be exactly {alg, kid}")
    alg = header[HEADER_ALG]
    kid = header[HEADER_KID]
    if type(alg) is not int or alg not in SUPPORTED_ALGORITHMS:
        raise CoseError("unsupported algorithm")
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KID_SIZE:
        raise CoseError(f"kid must be 1..{MAX_KID_SIZE} bytes")
    return alg, kid


# A signer seals with one (alg, kid) for the life of its credential: memoise, bounded.
_HEADER_CACHE: dict[tuple[int, bytes], bytes] = {}


def _protected_header(alg: int, kid: bytes) -> bytes:
    header = _HEADER_CACHE.get((alg, kid))
    if header is None:
        header = cbor.encode({HEADER_ALG: alg, HEADER_KID: kid})
        if len(_HEADER_CACHE) < _PROTECTED_CACHE_LIMIT:
            _HEADER_CACHE[(alg, bytes(kid))] = header
    return header


# ["Signature1", protected, h'', payload] is assembled from parts rather than run through the
# generic encoder: the payload (kilobytes) is then copied once, into the signed bytes. The
# parts are the deterministic encoding exactly (tests compare with cbor.encode).
_SIG_STRUCTURE_START = b"\x84" + cbor.encode(_CONTEXT_SIGNATURE1)  # array of 4, the context
_EMPTY_BYTES = b"\x40"


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes actually signed (RFC 9052 section 4.4), with empty external AAD."""
    head = cbor.encode_bytes_head
    return b"".join(
        (
            _SIG_STRUCTURE_START,
            head(len(protected)),
            protected,
            _EMPTY_BYTES,
            head(len(payload)),
            payload,
        )
    )


def sign1(key: SigningKey, *, kid: bytes, payload: bytes) -> bytes:
    """Sign ``payload`` and return the tagged COSE_Sign1 bytes; alg follows the key type."""
    if not 1 <= len(kid) <= MAX_KID_SIZE:
        raise ValueError(f"kid must be 1..{MAX_KID_SIZE} bytes")
    alg = crypto.signature_algorithm(key)
    protected = _protected_header(alg, kid)
    signature = crypto.sign(key, sig_structure(protected, payload))
    head = cbor.encode_bytes_head
    # 18([protected, {}, payload, signature]), assembled like sig_structure.
    return b"".join(
        (
            _SIGN1_START,
            head(len(protected)),
            protected,
            b"\xa0",
            head(len(payload)),
            payload,
            head(len(signature)),
            signature,
        )
    )


def verify_sign1(message: Sign1, key: VerifyingKey, *, key_alg: int | None = None) -> None:
    """Verify ``message`` with ``key`` or raise CryptoError (also for an alg/key mismatch).

    ``key_alg`` is ``crypto.signature_algorithm(key)`` when the caller computed it once for a
    key it keeps (as :class:`phd_protocol.policy.CredentialRecord` does); it saves the key
    type checks on every message, and the signature check itself still dispatches on the key.
    """
    if key_alg is None:
        try:
            key_alg = crypto.signature_algorithm(key)
        except ValueError:
            raise crypto.CryptoError from None
    if key_alg != message.alg:
        raise crypto.CryptoError
    crypto.verify(
        key, message.signature, sig_structure(message.protected, message.payload), alg=key_alg
    )
