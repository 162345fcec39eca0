"""Secrets the server checks but never stores: staff passwords, refresh tokens, one-time
enrollment codes.

Passwords are hashed with scrypt (RFC 7914; n=2**14, r=8, p=1, 16-byte salt) into a
self-describing string ``scrypt$n$r$p$salt_hex$hash_hex`` and compared in constant time.
Refresh tokens are 256 random bits (URL-safe base64, 43 characters) stored as their SHA-256
only: a plain hash suffices for a uniformly random secret of that size, and lets the token be
found by an indexed lookup. Enrollment codes themselves come from phd_protocol.enrollment
(handle + secret, stored as a peppered HMAC); this module only renders one as a QR PNG. Never
log a password, a token, a code or a hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import textwrap

import qrcode

__all__ = [
    "OPAQUE_TOKEN_LENGTH",
    "certificate_der_to_pem",
    "enrollment_qr_png",
    "hash_password",
    "new_opaque_token",
    "opaque_token_hash",
    "verify_password",
]

_N, _R, _P = 2**14, 8, 1
_DKLEN = 32
_QR_PREFIX = "phd-enroll:v1:"
_OPAQUE_TOKEN_BYTES = 32
OPAQUE_TOKEN_LENGTH = 43  # base64url of 32 bytes, unpadded


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(hash_hex)
        digest = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt_hex),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def new_opaque_token() -> str:
    """A bearer secret of 256 random bits (a refresh token)."""
    return secrets.token_urlsafe(_OPAQUE_TOKEN_BYTES)


def opaque_token_hash(token: str) -> str:
    """What the database keeps of an opaque token: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def enrollment_qr_png(code: str) -> bytes:
    """The code as a QR PNG, for the patient's phone or the agent's camera."""
    image = qrcode.make(_QR_PREFIX + code)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


def certificate_der_to_pem(der: bytes) -> bytes:
    """PEM text of a DER certificate (the database stores DER; phd_protocol.pki reads PEM)."""
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()
