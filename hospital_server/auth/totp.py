"""Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP), the second login factor.

Parameters are the ones every authenticator app assumes: HMAC-SHA1, 6 digits, 30-second
steps from the Unix epoch (RFC 6238 section 4), secrets of 20 random bytes (RFC 4226 section 4
asks for at least 128 bits and recommends 160). A code is checked against the current step
and one step either side (RFC 6238 section 5.2: clock drift and typing time), each candidate
compared in constant time and all three always computed, so timing does not tell which one
matched. Accepting a code once is the caller's job (``StaffUser.totp_last_step``): this
module only says which step matched.

Pure functions: time and randomness are parameters; nothing here stores, logs or renders a
secret except :func:`secret_base32` and :func:`provisioning_uri`, which exist to show it to
its owner exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Callable
from urllib.parse import quote, urlencode

__all__ = [
    "DIGITS",
    "ISSUER",
    "SECRET_BYTES",
    "STEP_SECONDS",
    "WINDOW",
    "hotp",
    "match_step",
    "new_secret",
    "parse_base32",
    "provisioning_uri",
    "secret_base32",
    "time_step",
    "totp",
]

STEP_SECONDS = 30  # RFC 6238 section 4.1, X (the default every app uses)
DIGITS = 6  # RFC 4226 section 5.3, Digit
SECRET_BYTES = 20  # RFC 4226 section 4, R6: 160 bits recommended
WINDOW = 1  # steps accepted either side of the current one (RFC 6238 section 5.2)
ISSUER = "PHD hospital"

_CODE = re.compile(r"^[0-9]{6}$")
_BASE32 = re.compile(r"^[A-Z2-7]+=*$")


def new_secret(rng: Callable[[int], bytes] = secrets.token_bytes) -> bytes:
    return rng(SECRET_BYTES)


def hotp(secret: bytes, counter: int, *, digits: int = DIGITS) -> str:
    """RFC 4226 section 5.3: HMAC-SHA-1 over the 8-byte big-endian counter, dynamic
    truncation, modulo 10^digits, left-padded with zeros."""
    if not 0 <= counter < 2**64:
        raise ValueError("HOTP counter out of range")
    if not 6 <= digits <= 8:
        raise ValueError("HOTP codes have 6 to 8 digits")
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F  # section 5.4: low 4 bits of the last byte
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(unix_time: float) -> int:
    """RFC 6238 section 4.2: T = floor((time - T0) / X) with T0 = 0."""
    return int(unix_time // STEP_SECONDS)


def totp(secret: bytes, unix_time: float, *, digits: int = DIGITS) -> str:
    return hotp(secret, time_step(unix_time), digits=digits)


def match_step(secret: bytes, code: str, unix_time: float) -> int | None:
    """The time step within the window whose code equals ``code``, or None.

    A malformed code (not exactly six ASCII digits) never matches. Every candidate is
    computed and compared in constant time; when two steps happen to share a code the
    newest wins, so a replay check on the returned step stays conservative.
    """
    candidate = code.encode() if _CODE.match(code) else b"------"
    now = time_step(unix_time)
    matched: int | None = None
    for step in range(now - WINDOW, now + WINDOW + 1):
        if hmac.compare_digest(hotp(secret, step).encode(), candidate):
            matched = step
    return matched


def secret_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it: RFC 4648 base32, no padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def parse_base32(text: str) -> bytes:
    """A base32 secret typed or pasted by a person (spaces and case ignored); ValueError
    when it is not base32 or shorter than 160 bits."""
    cleaned = "".join(text.split()).upper()
    if not _BASE32.match(cleaned):
        raise ValueError("not a base32 TOTP secret")
    cleaned = cleaned.rstrip("=")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        secret = base64.b32decode(padded)
    except ValueError as exc:
        raise ValueError("not a base32 TOTP secret") from exc
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"a TOTP secret needs at least {SECRET_BYTES * 8} bits")
    return secret


def provisioning_uri(secret: bytes, *, account: str, issuer: str = ISSUER) -> str:
    """``otpauth://totp/ISSUER:ACCOUNT?secret=...`` (the Key URI format authenticator apps
    scan from a QR code); the parameters restate this module's fixed algorithm, digits and
    period so an app never guesses."""
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    query = urlencode(
        {
            "secret": secret_base32(secret),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"
