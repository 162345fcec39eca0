"""The token endpoint (RFC 6749), logout, and the issuer's public keys (JWKS).

``POST /api/v1/auth/token`` takes a form-encoded body (RFC 6749 section 4.3.2 / 6):

- ``grant_type=password`` with ``username``, ``password`` and ``totp`` (six digits);
- ``grant_type=refresh_token`` with ``refresh_token``.

Success answers ``{"access_token", "token_type": "Bearer", "expires_in", "refresh_token"}``
(section 5.1); errors answer ``{"error": code}`` (section 5.2): 400 ``invalid_request``
(a parameter missing, repeated, empty or oversized), 400 ``unsupported_grant_type``, and 401
``invalid_grant`` for every refused login or refresh, whatever the reason (the reason is in
the audit log only). Every answer carries ``Cache-Control: no-store``.

``POST /api/v1/auth/logout`` (bearer) revokes the refresh token's family: 204, or 400
``unknown_refresh_token`` when it is not one of the caller's. ``GET /.well-known/jwks.json``
publishes the verification keys (creating the first signing key if there is none).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from hospital_server.api.deps import Ctx, CurrentPrincipal
from hospital_server.auth import refresh
from hospital_server.auth.errors import LoginRefusedError
from hospital_server.auth.login import TokenGrant, password_grant, refresh_grant
from hospital_server.auth.tokens import TokenPolicy, current_signing_key, jwks
from hospital_server.models import utcnow
from hospital_server.security import OPAQUE_TOKEN_LENGTH
from hospital_server.staff import MAX_PASSWORD_LENGTH

__all__ = ["router", "wellknown"]

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
wellknown = APIRouter(tags=["auth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_BODY = 4096  # far above any legitimate grant (the password bound is 1024)
_MAX_FIELDS = 8
_LIMITS = {
    "grant_type": 32,
    "username": 64,
    "password": MAX_PASSWORD_LENGTH,
    "totp": 6,
    "refresh_token": OPAQUE_TOKEN_LENGTH,
}


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (RFC 6750 scheme name)
    expires_in: int
    refresh_token: str


class OAuthError(BaseModel):
    error: Literal["invalid_request", "unsupported_grant_type", "invalid_grant"]


class LogoutRequest(BaseModel):
    refresh_token: str = Field(max_length=256)


def _error(code: str, status_code: int) -> JSONResponse:
    headers = dict(_NO_STORE)
    if status_code == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="phd-hospital"'
    return JSONResponse({"error": code}, status_code=status_code, headers=headers)


def _answer(grant: TokenGrant) -> JSONResponse:
    body = TokenResponse(
        access_token=grant.access_token,
        expires_in=grant.expires_in,
        refresh_token=grant.refresh_token,
    )
    return JSONResponse(body.model_dump(), headers=_NO_STORE)


async def _form(request: Request) -> dict[str, str] | None:
    """The form parameters, or None when the body is not a small, well-formed
    ``application/x-www-form-urlencoded`` document without repeated parameters (RFC 6749
    section 3.2: parameters MUST NOT be included more than once)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            return None
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=_MAX_FIELDS,
        )
    except ValueError:  # not UTF-8, malformed, or too many fields
        return None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            return None
        form[name] = value
    return form


def _param(form: dict[str, str], name: str) -> str | None:
    """The parameter if present, non-empty and within its length bound, else None."""
    value = form.get(name)
    if not value or len(value) > _LIMITS[name]:
        return None
    return value


_TOKEN_FORM = {
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["grant_type"],
                "properties": {
                    "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                    "username": {"type": "string", "maxLength": _LIMITS["username"]},
                    "password": {
                        "type": "string",
                        "format": "password",
                        "maxLength": _LIMITS["password"],
                    },
                    "totp": {"type": "string", "pattern": "^[0-9]{6}$"},
                    "refresh_token": {"type": "string", "maxLength": OPAQUE_TOKEN_LENGTH},
                },
            }
        }
    },
    "required": True,
}


@router.post(
    "/token",
    response_model=TokenResponse,
    openapi_extra={"requestBody": _TOKEN_FORM},
    responses={
        400: {"model": OAuthError, "description": "invalid_request or unsupported_grant_type"},
        401: {"model": OAuthError, "description": "invalid_grant (any refused login)"},
    },
)
async def token(request: Request, ctx: Ctx) -> JSONResponse:
    form = await _form(request)
    if form is None or not form.get("grant_type"):
        return _error("invalid_request", status.HTTP_400_BAD_REQUEST)
    grant_type = form["grant_type"]
    try:
        if grant_type == "password":
            username = _param(form, "username")
            password = _param(form, "password")
            code = _param(form, "totp")
            if username is None or password is None or code is None:
                return _error("invalid_request", status.HTTP_400_BAD_REQUEST)
            grant = await run_in_threadpool(
                password_grant, ctx, username=username, password=password, code=code
            )
        elif grant_type == "refresh_token":
            presented = _param(form, "refresh_token")
            if presented is None:
                return _error("invalid_request", status.HTTP_400_BAD_REQUEST)
            grant = await run_in_threadpool(refresh_grant, ctx, refresh_token=presented)
        else:
            return _error("unsupported_grant_type", status.HTTP_400_BAD_REQUEST)
    except LoginRefusedError:
        return _error("invalid_grant", status.HTTP_401_UNAUTHORIZED)
    return _answer(grant)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"description": "unknown_refresh_token"}},
)
def logout(data: LogoutRequest, principal: CurrentPrincipal, ctx: Ctx) -> Response:
    with ctx.sessions() as session:
        revoked = refresh.revoke_presented(
            session, data.refresh_token, user_id=principal.user_id, now=utcnow()
        )
        if not revoked:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="unknown_refresh_token")
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_NO_STORE)


@wellknown.get("/.well-known/jwks.json")
def jwks_document(ctx: Ctx) -> JSONResponse:
    policy = TokenPolicy.from_settings(ctx.settings)
    now = utcnow()
    with ctx.sessions() as session:
        current_signing_key(session, ctx.key_provider, now=now)  # the first one, if none yet
        document = jwks(session, policy, now=now)
        session.commit()
    return JSONResponse(
        document,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=60"},
    )
