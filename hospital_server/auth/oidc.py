"""Optional external OpenID Connect issuer: its access tokens, verified through its JWKS.

When ``oidc_issuer``, ``oidc_jwks_url`` and ``oidc_audience`` are set, a bearer token whose
(unverified) ``iss`` is that issuer is checked here instead of by the built-in issuer:

- the key comes from the issuer's JWK Set (PyJWKClient, cached 5 minutes), selected by the
  token's kid; an unknown kid refetches the set at most once a minute, however many tokens
  name one (a flood of forged kids is not relayed to the identity provider);
- the algorithm is pinned to ``oidc_algorithms`` (ES256 unless configured), issuer and
  audience are pinned, ``exp iat iss aud sub`` are required, times are checked against an
  injectable clock with the built-in issuer's leeway;
- the token maps to a :class:`Principal` only if a staff user whose username equals the
  ``preferred_username`` claim exists and is active; the role is that user's role, and when
  ``oidc_role_claim`` is set the claim (a string or a list of strings) must contain it.

So the identity provider authenticates, and the hospital still decides who is staff and with
which role; deactivating the staff user shuts out the external identity too. The unverified
``iss`` only picks the verifier: each verifier pins its own issuer.

Failures raise :class:`TokenRejectedError`; an unreachable JWKS raises
:class:`IssuerUnavailableError`. PyJWT's exceptions are translated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlmodel import Session, select

from hospital_server.auth.errors import IssuerUnavailableError, TokenRejectedError
from hospital_server.auth.principal import Principal
from hospital_server.auth.tokens import check_times, decode_verified
from hospital_server.models import StaffUser
from hospital_server.settings import Settings
from hospital_server.staff import USERNAME
from phd_protocol import crypto

__all__ = ["OidcVerifier"]

_REQUIRED = ("exp", "iat", "iss", "aud", "sub")
_JWKS_CACHE_SECONDS = 300
_JWKS_TIMEOUT_SECONDS = 5
_UNKNOWN_KID_REFETCH_SECONDS = 60
_SAFE_JTI = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcVerifier:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    role_claim: str | None
    leeway: timedelta
    client: jwt.PyJWKClient

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        """The verifier configured by ``settings``, or None. Fetches nothing yet."""
        if settings.oidc_issuer is None or settings.oidc_jwks_url is None:
            return None
        if settings.oidc_audience is None:  # the settings validator requires all three
            return None
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            algorithms=tuple(settings.oidc_algorithms),
            role_claim=settings.oidc_role_claim,
            leeway=settings.token_leeway,
            client=jwt.PyJWKClient(
                settings.oidc_jwks_url,
                cache_keys=True,
                lifespan=_JWKS_CACHE_SECONDS,
                timeout=_JWKS_TIMEOUT_SECONDS,
                cooldown_duration=_UNKNOWN_KID_REFETCH_SECONDS,
            ),
        )

    def handles(self, token: str) -> bool:
        """Whether the token claims to come from this issuer (unverified: routing only)."""
        try:
            payload = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return payload.get("iss") == self.issuer

    def verify(self, session: Session, token: str, *, now: datetime) -> Principal:
        try:
            signing_key = self.client.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise IssuerUnavailableError("oidc_unavailable") from exc
        except jwt.PyJWKClientError as exc:
            raise TokenRejectedError("unknown_kid") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejectedError("malformed") from exc
        _header, payload = decode_verified(
            token,
            signing_key.key,
            algorithms=list(self.algorithms),
            issuer=self.issuer,
            audience=self.audience,
            require=_REQUIRED,
        )
        check_times(payload, now=now, leeway=self.leeway)
        username = payload.get("preferred_username")
        if not isinstance(username, str) or not USERNAME.match(username):
            raise TokenRejectedError("bad_claim")
        user = session.exec(select(StaffUser).where(StaffUser.username == username)).first()
        if user is None:
            raise TokenRejectedError("unknown_user")
        if not user.active:
            raise TokenRejectedError("inactive", actor=user.id)
        if self.role_claim is not None and not _has_role(payload.get(self.role_claim), user.role):
            raise TokenRejectedError("role_mismatch", actor=user.id)
        return Principal(
            user_id=user.id,
            username=user.username,
            role=user.role,
            token_id=_token_id(payload, token),
        )


def _has_role(claim: Any, role: str) -> bool:
    if isinstance(claim, str):
        return claim == role
    return isinstance(claim, list) and role in claim


def _token_id(payload: dict[str, Any], token: str) -> str:
    """The token's jti when it looks like an id (it may reach audit entries), else a digest
    of the token itself (issuers that omit jti, or use odd characters)."""
    jti = payload.get("jti")
    if isinstance(jti, str) and _SAFE_JTI.match(jti):
        return jti
    return "oidc-" + crypto.sha256(token.encode()).hex()[:32]
