"""The error tree of :mod:`hospital_server.auth` (drawn in the package docstring).

Every error carries ``reason``: a short code for the audit log (``bad_password``,
``refresh_reuse``, ``bad_signature``...). The HTTP layer never echoes it to the caller, so a
refused login cannot tell an attacker which factor was wrong.
"""

from __future__ import annotations

__all__ = ["AuthError", "IssuerUnavailableError", "LoginRefusedError", "TokenRejectedError"]


class AuthError(Exception):
    """Root of authentication errors; ``reason`` is a code, ``actor`` a user id or None."""

    def __init__(self, reason: str, *, actor: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.actor = actor


class LoginRefusedError(AuthError):
    """A grant at the token endpoint failed (RFC 6749 section 5.2 ``invalid_grant``)."""


class TokenRejectedError(AuthError):
    """A bearer token failed verification (RFC 6750 section 3.1 ``invalid_token``)."""


class IssuerUnavailableError(AuthError):
    """The external issuer's key set could not be fetched; the caller may retry later."""
