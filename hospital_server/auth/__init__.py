"""Staff authentication for the clinician API: the built-in token issuer and its checks.

Modules:

- :mod:`.principal`: :class:`Principal`, the verified caller the routes see.
- :mod:`.totp`: RFC 6238 one-time codes (pure functions, injectable time and randomness).
- :mod:`.tokens`: ES256 signing keys (wrapped by the KEK, rotated, published as a JWKS),
  access-token issue and verification.
- :mod:`.refresh`: opaque refresh tokens, stored as SHA-256 only, rotated on every use,
  a reused token revokes its whole family.
- :mod:`.login`: the two grants of the token endpoint (password + TOTP, refresh token),
  lockout and their audit entries.
- :mod:`.oidc`: optional external OpenID Connect issuer, verified through its JWKS.

Errors (one root; each carries a machine-readable ``reason`` for the audit log, never shown
to the caller beyond the RFC 6749 / RFC 6750 error code)::

    AuthError
     +-- LoginRefusedError       token endpoint: 401 {"error": "invalid_grant"}
     +-- TokenRejectedError      bearer token: 401 invalid_token
     +-- IssuerUnavailableError  external issuer's keys could not be fetched: 503

Nothing here logs or audits a password, a TOTP code or secret, or a token; audit entries
carry user ids and reason codes only.
"""

from __future__ import annotations

from hospital_server.auth.errors import (
    AuthError,
    IssuerUnavailableError,
    LoginRefusedError,
    TokenRejectedError,
)
from hospital_server.auth.principal import Principal

__all__ = [
    "AuthError",
    "IssuerUnavailableError",
    "LoginRefusedError",
    "Principal",
    "TokenRejectedError",
]
