"""Secrets the server checks but never stores: staff passwords and one-time enrollment codes.

Passwords are hashed with scrypt (RFC 7914; n=2**14, r=8, p=1, 16-byte salt) into a
self-describing string ``scrypt$n$r$p$salt_hex$hash_hex`` and compared in constant time.
Enrollment codes carry 130 bits of randomness, are shown once (text and QR), and only their
SHA-256 is stored: at that entropy a fast hash is enough and lets us look a code up directly.
Never log a password, a code or a hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets

import qrcode

__all__ = [
    "enrollment_qr_png",
    "hash_enrollment_code",
    "hash_password",
    "new_enrollment_code",
    "normalise_enrollment_code",
    "verify_password",
]

_N, _R, _P = 2**14, 8, 1
_DKLEN = 32
_CODE_BYTES = 17  # 136 bits -> 28 base32 characters (no padding once grouped)
_QR_PREFIX = "phd-enroll:v1:"


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


def new_enrollment_code() -> str:
    """A one-time code in groups of four base32 characters, easy to read out or type."""
    raw = base64.b32encode(secrets.token_bytes(_CODE_BYTES)).decode().rstrip("=")
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def normalise_enrollment_code(code: str) -> str:
    """Accept the code however it was typed: case, spaces and dashes do not matter."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def hash_enrollment_code(code: str) -> str:
    data = b"phd-enroll-code-v1\x00" + normalise_enrollment_code(code).encode()
    return hashlib.sha256(data).hexdigest()


def enrollment_qr_png(code: str) -> bytes:
    """The code as a QR PNG, for the patient's phone or the agent's camera."""
    image = qrcode.make(_QR_PREFIX + code)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()
