"""Access tokens of the built-in issuer: ES256 JWTs (RFC 7519, RFC 9068 profile) via PyJWT.

Signing keys live in ``token_signing_key``: P-256 keys made by :mod:`phd_protocol.crypto`,
the private half wrapped by the key provider's KEK with the kid as context, so every API
instance sharing the database signs and verifies with the same keys. The kid is the key's
RFC 7638 thumbprint. The newest unretired key signs; :func:`rotate_signing_key` adds a new one
and retires the others, which stay published (and keep verifying) until every token they can
have signed has expired, and are then deleted.

An access token's header is ``{"alg": "ES256", "typ": "at+jwt", "kid": ...}``; its claims are
``iss aud sub role jti iat nbf exp``. Verification pins the algorithm to ES256 (so neither
``none`` nor an HMAC keyed with the public key is ever tried), requires every claim, looks the
kid up among this issuer's keys, checks the times against an injectable clock with a small
leeway, and then re-reads the user: a deactivated user, or one whose role changed, is refused
at once although the token has not expired.

Failures raise :class:`~hospital_server.auth.errors.TokenRejectedError` with a reason code; PyJWT's
exceptions are translated here and nowhere else. Tokens and keys are never logged.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from jwt.algorithms import AllowedECKeys, ECAlgorithm
from sqlmodel import Session, col, delete, select

from hospital_server.auth.errors import TokenRejectedError
from hospital_server.auth.principal import Principal
from hospital_server.keys import KeyProvider, WrappedKey
from hospital_server.models import StaffUser, TokenSigningKey
from hospital_server.settings import Settings
from hospital_server.staff import ROLES
from phd_protocol import crypto

__all__ = [
    "ALGORITHM",
    "TOKEN_TYPE",
    "AccessToken",
    "Rotation",
    "TokenPolicy",
    "current_signing_key",
    "issue_access_token",
    "jwks",
    "published_keys",
    "rotate_signing_key",
    "signing_key_context",
    "verify_access_token",
]

ALGORITHM = "ES256"
# RFC 9068 section 2.1: marks an access token (not an ID token). A media type, not a secret.
TOKEN_TYPE = "at+jwt"  # noqa: S105
_REQUIRED = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONTEXT = b"token-signing-key\x00"


def signing_key_context(kid: str) -> bytes:
    """Associated data of a wrapped signing key: it opens under its own kid only."""
    return _CONTEXT + kid.encode()


# PyJWT's ES256 adapter loads a PEM and refuses any curve other than P-256.
_ES256 = ECAlgorithm(ECAlgorithm.SHA256)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPolicy:
    """The issuer's parameters, taken once from :class:`Settings`."""

    issuer: str
    audience: str
    access_ttl: timedelta
    leeway: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenPolicy:
        return cls(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            access_ttl=settings.access_token_ttl,
            leeway=settings.token_leeway,
        )

    @property
    def retired_key_grace(self) -> timedelta:
        """How long a retired key keeps verifying: the longest a token it signed can live."""
        return self.access_ttl + self.leeway


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessToken:
    token: str
    jti: str
    expires_in: int  # seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotation:
    new_kid: str
    retired: tuple[str, ...]
    deleted: tuple[str, ...]


# --------------------------------------------------------------------------- signing keys


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _public_jwk(public_pem: bytes) -> dict[str, str]:
    key = _load_public(public_pem)
    jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    return {"kty": str(jwk["kty"]), "crv": str(jwk["crv"]), "x": str(jwk["x"]), "y": str(jwk["y"])}


def _thumbprint(public_pem: bytes) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace."""
    jwk = _public_jwk(public_pem)
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(crypto.sha256(canonical.encode()))


@functools.lru_cache(maxsize=32)
def _load_public(public_pem: bytes) -> AllowedECKeys:
    """Parsed once per key (rows are immutable: the kid is the key's thumbprint)."""
    return _ES256.prepare_key(public_pem)


def _create_signing_key(session: Session, keys: KeyProvider, *, now: datetime) -> TokenSigningKey:
    private = crypto.generate_signing_key(crypto.COSE_ES256)
    public_pem = crypto.public_key_pem(private.public_key())
    kid = _thumbprint(public_pem)
    wrapped = keys.wrap(crypto.private_key_pem(private), context=signing_key_context(kid))
    row = TokenSigningKey(
        kid=kid,
        public_pem=public_pem,
        private_wrapped=wrapped.blob,
        kek_id=wrapped.kek_id,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def current_signing_key(session: Session, keys: KeyProvider, *, now: datetime) -> TokenSigningKey:
    """The newest unretired key; one is created (and flushed, not committed) if none exists."""
    row = session.exec(
        select(TokenSigningKey)
        .where(col(TokenSigningKey.retired_at).is_(None))
        .order_by(col(TokenSigningKey.created_at).desc(), col(TokenSigningKey.kid))
        .limit(1)
    ).first()
    return row if row is not None else _create_signing_key(session, keys, now=now)


def rotate_signing_key(
    session: Session, keys: KeyProvider, policy: TokenPolicy, *, now: datetime
) -> Rotation:
    """Add a new signing key, retire every other active one, delete retired keys whose
    tokens have all expired. Flushes; the caller commits (and audits ``key.rotated``)."""
    active = session.exec(
        select(TokenSigningKey).where(col(TokenSigningKey.retired_at).is_(None))
    ).all()
    new = _create_signing_key(session, keys, now=now)
    retired = []
    for row in active:
        row.retired_at = now
        session.add(row)
        retired.append(row.kid)
    expired = [row.kid for row in _expired_keys(session, policy, now=now)]
    if expired:
        session.exec(delete(TokenSigningKey).where(col(TokenSigningKey.kid).in_(expired)))
    session.flush()
    return Rotation(new_kid=new.kid, retired=tuple(sorted(retired)), deleted=tuple(expired))


def _expired_keys(session: Session, policy: TokenPolicy, *, now: datetime) -> list[TokenSigningKey]:
    cutoff = now - policy.retired_key_grace
    return list(
        session.exec(
            select(TokenSigningKey).where(
                col(TokenSigningKey.retired_at).is_not(None),
                col(TokenSigningKey.retired_at) < cutoff,
            )
        ).all()
    )


def _still_published(row: TokenSigningKey, policy: TokenPolicy, *, now: datetime) -> bool:
    return row.retired_at is None or row.retired_at >= now - policy.retired_key_grace


def published_keys(
    session: Session, policy: TokenPolicy, *, now: datetime
) -> list[TokenSigningKey]:
    """Keys that may have signed a token still valid now: active ones and recently retired."""
    rows = session.exec(
        select(TokenSigningKey).order_by(
            col(TokenSigningKey.created_at).desc(), col(TokenSigningKey.kid)
        )
    ).all()
    return [row for row in rows if _still_published(row, policy, now=now)]


def jwks(
    session: Session, policy: TokenPolicy, *, now: datetime
) -> dict[str, list[dict[str, str]]]:
    """The JWK Set (RFC 7517 section 5) of :func:`published_keys`: public halves only."""
    return {
        "keys": [
            {**_public_jwk(row.public_pem), "kid": row.kid, "use": "sig", "alg": ALGORITHM}
            for row in published_keys(session, policy, now=now)
        ]
    }


# --------------------------------------------------------------------------- issue


def issue_access_token(
    session: Session,
    keys: KeyProvider,
    policy: TokenPolicy,
    *,
    user_id: str,
    role: str,
    now: datetime,
) -> AccessToken:
    """Sign an access token for this user and role with the current key."""
    row = current_signing_key(session, keys, now=now)
    pem = keys.unwrap(
        WrappedKey(row.kek_id, row.private_wrapped), context=signing_key_context(row.kid)
    )
    jti = secrets.token_urlsafe(16)
    issued = int(now.timestamp())
    lifetime = int(policy.access_ttl.total_seconds())
    claims = {
        "iss": policy.issuer,
        "aud": policy.audience,
        "sub": user_id,
        "role": role,
        "jti": jti,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
    }
    token = jwt.encode(
        claims, pem, algorithm=ALGORITHM, headers={"kid": row.kid, "typ": TOKEN_TYPE}
    )
    return AccessToken(token=token, jti=jti, expires_in=lifetime)


# --------------------------------------------------------------------------- verify


def _int_claim(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejectedError("bad_claim")
    return int(value)


def check_times(payload: dict[str, Any], *, now: datetime, leeway: timedelta) -> None:
    """exp, iat and (when present; presence is checked by :func:`decode_verified`) nbf
    against ``now`` (injectable) with ``leeway`` either way."""
    at = now.timestamp()
    slack = leeway.total_seconds()
    if _int_claim(payload, "exp") <= at - slack:
        raise TokenRejectedError("expired")
    if "nbf" in payload and _int_claim(payload, "nbf") > at + slack:
        raise TokenRejectedError("not_yet_valid")
    if _int_claim(payload, "iat") > at + slack:
        raise TokenRejectedError("issued_in_future")


def decode_verified(
    token: str,
    key: Any,
    *,
    algorithms: list[str],
    issuer: str,
    audience: str,
    require: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PyJWT's signature, algorithm, issuer, audience and presence checks, its exceptions
    translated to reason codes; returns (header, payload). Times are left to
    :func:`check_times` (injectable clock)."""
    try:
        decoded = jwt.decode_complete(
            token,
            key=key,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            options={
                "require": list(require),
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAlgorithmError as exc:
        raise TokenRejectedError("bad_algorithm") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenRejectedError("bad_signature") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenRejectedError("wrong_audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenRejectedError("wrong_issuer") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejectedError("missing_claim") from exc
    except jwt.DecodeError as exc:
        raise TokenRejectedError("malformed") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRejectedError("bad_claim") from exc
    except jwt.PyJWTError as exc:  # InvalidKeyError: the key does not fit the algorithm
        raise TokenRejectedError("bad_key") from exc
    header: dict[str, Any] = decoded["header"]
    payload: dict[str, Any] = decoded["payload"]
    return header, payload


def unverified_header(token: str) -> dict[str, Any]:
    try:
        header: dict[str, Any] = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenRejectedError("malformed") from exc
    return header


def verify_access_token(
    session: Session, policy: TokenPolicy, token: str, *, now: datetime
) -> Principal:
    """The principal of a valid access token of this issuer, or TokenRejectedError(reason)."""
    header = unverified_header(token)
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise TokenRejectedError("unknown_kid")
    row = session.get(TokenSigningKey, kid)
    if row is None or not _still_published(row, policy, now=now):
        raise TokenRejectedError("unknown_kid")
    verified_header, payload = decode_verified(
        token,
        _load_public(row.public_pem),
        algorithms=[ALGORITHM],
        issuer=policy.issuer,
        audience=policy.audience,
        require=(*_REQUIRED, "role"),
    )
    if verified_header.get("typ") != TOKEN_TYPE:
        raise TokenRejectedError("wrong_type")
    check_times(payload, now=now, leeway=policy.leeway)
    sub, role, jti = payload["sub"], payload["role"], payload["jti"]
    if not all(isinstance(v, str) for v in (sub, role, jti)) or role not in ROLES:
        raise TokenRejectedError("bad_claim")
    user = session.get(StaffUser, sub)
    if user is None:
        raise TokenRejectedError("unknown_user")
    if not user.active:
        raise TokenRejectedError("inactive", actor=user.id)
    if user.role != role:
        raise TokenRejectedError("role_changed", actor=user.id)
    return Principal(user_id=user.id, username=user.username, role=user.role, token_id=jti)
