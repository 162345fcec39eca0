"""Cryptographic recipes: the one module of phd_protocol that touches ``cryptography.hazmat``.

Everything else (COSE, envelopes, at-rest encryption, pseudonyms) is built from these few
functions, so a reviewer can check key handling in one place. Rules kept here:

- Randomness is injectable (``rng``: a callable returning n random bytes) so that known-answer
  tests are reproducible; it defaults to :func:`secrets.token_bytes`.
- Every failure to open or verify raises the single opaque :class:`CryptoError`: callers learn
  *that* it failed, never *why* (no padding/tag/length oracle).
- Key objects are loaded once and reused; loading is the slow part (see API-FACTS.md).
- Private keys are never rendered into exception messages or ``repr``.

The X.509 code in :mod:`phd_protocol.pki` necessarily handles key objects too; it uses the key
types and serialization helpers exported here rather than importing hazmat for primitives.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import TypeAlias, cast

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from phd_protocol.errors import PhdProtocolError

__all__ = [
    "AEAD_KEY_SIZE",
    "AEAD_NONCE_SIZE",
    "COSE_EDDSA",
    "COSE_ES256",
    "HPKE_ENC_SIZE",
    "HPKE_TAG_SIZE",
    "CryptoError",
    "Rng",
    "SigningKey",
    "VerifyingKey",
    "aead_decrypt",
    "aead_encrypt",
    "constant_time_equal",
    "generate_hpke_key",
    "generate_signing_key",
    "hmac_sha256",
    "hpke_open",
    "hpke_seal",
    "load_private_key_pem",
    "load_public_key_pem",
    "load_x25519_private_raw",
    "load_x25519_public_raw",
    "private_key_pem",
    "public_key_pem",
    "sha256",
    "sign",
    "signature_algorithm",
    "verify",
    "x25519_public_raw",
]

Rng: TypeAlias = Callable[[int], bytes]
SigningKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
VerifyingKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

AEAD_KEY_SIZE = 32  # AES-256-GCM
AEAD_NONCE_SIZE = 12
HPKE_ENC_SIZE = 32  # X25519 encapsulated key (RFC 9180 section 7.1, Nenc)
HPKE_TAG_SIZE = 16  # AES-256-GCM tag (RFC 9180 section 7.3, Nt)

# RFC 9180 suite fixed by DESIGN.md section 4: base mode, DHKEM(X25519, HKDF-SHA256),
# HKDF-SHA256, AES-256-GCM.
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

# COSE algorithm identifiers (RFC 9053 section 2): EdDSA = -8, ES256 = -7.
COSE_EDDSA = -8
COSE_ES256 = -7
_P256_COORD = 32
# One ECDSA-with-SHA-256 parameter object for every ES256 operation (immutable; building it
# per call was a measurable part of opening an ES256 envelope).
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class CryptoError(PhdProtocolError):
    """An open, decrypt or verify failed. Deliberately carries no detail."""

    def __init__(self) -> None:
        super().__init__("cryptographic check failed")


# --------------------------------------------------------------------------- hashing, MACs


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    if len(key) < 32:
        raise ValueError("HMAC key must be at least 32 bytes")
    return hmac.new(key, data, hashlib.sha256).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --------------------------------------------------------------------------- signatures


def generate_signing_key(algorithm: int = COSE_EDDSA) -> SigningKey:
    """A new device or audit signing key: Ed25519 (COSE -8) or P-256 (COSE -7)."""
    if algorithm == COSE_EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == COSE_ES256:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported COSE algorithm {algorithm}")


def signature_algorithm(key: SigningKey | VerifyingKey) -> int:
    """The COSE algorithm id for a key, or ValueError for a key type we do not accept."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return COSE_EDDSA
    # Past the Ed25519 branch only EC keys remain; the curve must be P-256.
    if isinstance(key.curve, ec.SECP256R1):
        return COSE_ES256
    raise ValueError("only Ed25519 and P-256 keys are accepted")


def sign(key: SigningKey, message: bytes) -> bytes:
    """Sign; ES256 signatures are the fixed-size r||s form COSE requires (RFC 9053 2.1)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    der = key.sign(message, _ECDSA_SHA256)
    r, s = decode_dss_signature(der)
    return r.to_bytes(_P256_COORD, "big") + s.to_bytes(_P256_COORD, "big")


def verify(key: VerifyingKey, signature: bytes, message: bytes, *, alg: int | None = None) -> None:
    """Verify or raise CryptoError. ``alg``: :func:`signature_algorithm` of ``key``, when the
    caller keeps it with the key (saves the key type check on every message)."""
    if alg is None:
        alg = COSE_EDDSA if isinstance(key, ed25519.Ed25519PublicKey) else COSE_ES256
    try:
        if alg == COSE_EDDSA:
            cast("ed25519.Ed25519PublicKey", key).verify(signature, message)
            return
        if len(signature) != 2 * _P256_COORD:
            raise CryptoError
        r = int.from_bytes(signature[:_P256_COORD], "big")
        s = int.from_bytes(signature[_P256_COORD:], "big")
        ec_key = cast("ec.EllipticCurvePublicKey", key)
        ec_key.verify(encode_dss_signature(r, s), message, _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise CryptoError from exc


# --------------------------------------------------------------------------- HPKE


def generate_hpke_key() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.generate()


def x25519_public_raw(key: x25519.X25519PublicKey | x25519.X25519PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, x25519.X25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_x25519_public_raw(data: bytes) -> x25519.X25519PublicKey:
    if len(data) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    return x25519.X25519PublicKey.from_public_bytes(data)


def load_x25519_private_raw(data: bytes) -> x25519.X25519PrivateKey:
    if len(data) != 32:
        raise ValueError("an X25519 private key is 32 bytes")
    return x25519.X25519PrivateKey.from_private_bytes(data)


def hpke_seal(recipient: x25519.X25519PublicKey, plaintext: bytes, *, info: bytes) -> bytes:
    """RFC 9180 single-shot base-mode seal; returns enc (32 bytes) || ciphertext || tag.

    ``cryptography`` draws the ephemeral key from the OS itself, so HPKE output is not
    reproducible; known-answer tests therefore pin the *opening* of stored ciphertexts.
    """
    return _SUITE.encrypt(plaintext, recipient, info=info)


def hpke_open(recipient: x25519.X25519PrivateKey, sealed: bytes, *, info: bytes) -> bytes:
    if len(sealed) < HPKE_ENC_SIZE + HPKE_TAG_SIZE:
        raise CryptoError
    try:
        return _SUITE.decrypt(sealed, recipient, info=info)
    except (InvalidTag, ValueError) as exc:
        raise CryptoError from exc


# --------------------------------------------------------------------------- AEAD at rest


def aead_encrypt(key: bytes, plaintext: bytes, *, aad: bytes, rng: Rng | None = None) -> bytes:
    """AES-256-GCM with a random 96-bit nonce; returns nonce || ciphertext || tag."""
    if len(key) != AEAD_KEY_SIZE:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    nonce = (rng or secrets.token_bytes)(AEAD_NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    if len(key) != AEAD_KEY_SIZE:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    if len(sealed) < AEAD_NONCE_SIZE + 16:
        raise CryptoError
    try:
        return AESGCM(key).decrypt(sealed[:AEAD_NONCE_SIZE], sealed[AEAD_NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise CryptoError from exc


# --------------------------------------------------------------------------- PEM (bytes only)


def private_key_pem(
    key: SigningKey | x25519.X25519PrivateKey, *, passphrase: bytes | None = None
) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_key_pem(key: VerifyingKey | x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key_pem(
    data: bytes, *, passphrase: bytes | None = None
) -> SigningKey | x25519.X25519PrivateKey:
    """Load a PKCS#8 PEM private key of an accepted type; ValueError otherwise."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:  # passphrase given for a plain key or missing for an encrypted one
        raise ValueError("wrong or missing passphrase for this key") from exc
    except ValueError as exc:  # bad decrypt or damaged PEM; do not echo the library's detail
        raise ValueError("wrong passphrase, or not a valid PEM private key") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("unsupported private key type")


def load_public_key_pem(data: bytes) -> VerifyingKey | x25519.X25519PublicKey:
    key = serialization.load_pem_public_key(data)
    if isinstance(key, ed25519.Ed25519PublicKey | x25519.X25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("unsupported public key type")
