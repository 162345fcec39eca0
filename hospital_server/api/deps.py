"""FastAPI dependencies: the server context, a database session, the authenticated caller.

Staff authenticate with bearer access tokens (RFC 6750) from the token endpoint
(``/api/v1/auth/token``, hospital_server.auth) or, when configured, from an external OIDC
issuer. :data:`CurrentPrincipal` verifies the token and re-reads the user (active, same role)
on every request; :func:`require_roles` narrows to roles and audits ``authz.denied``.

Answers: no bearer token -> 401 ``not_authenticated``; a token that fails any check -> 401
``invalid_token`` (RFC 6750 section 3.1; the reason goes to the audit log as ``auth.failed``,
except plain expiry, which is routine; anonymous floods are folded, see
hospital_server.auth.refusals); external issuer unreachable -> 503 ``issuer_unavailable``;
wrong role -> 403 ``role_not_allowed``. Nothing here logs a token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from hospital_server import audit
from hospital_server.auth.errors import IssuerUnavailableError, TokenRejectedError
from hospital_server.auth.oidc import OidcVerifier
from hospital_server.auth.principal import Principal
from hospital_server.auth.refusals import RefusalAudit
from hospital_server.auth.tokens import TokenPolicy, verify_access_token
from hospital_server.context import ServerContext
from hospital_server.db import READ_ONLY
from hospital_server.models import utcnow
from hospital_server.staff import ROLES

__all__ = [
    "AdminPrincipal",
    "Ctx",
    "CurrentPrincipal",
    "DbSession",
    "current_principal",
    "require_roles",
]

# Far above any token we issue (about 600 bytes); bounds the work done on garbage.
_MAX_TOKEN_LENGTH = 8192
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="Access token from POST /api/v1/auth/token (or the configured OIDC issuer)",
)


def get_context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(get_context)]


def get_session(ctx: Ctx) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


def _unauthorized(detail: str, header: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": header},
    )


def _verify(request: Request, ctx: ServerContext, token: str) -> Principal:
    now = utcnow()
    oidc: OidcVerifier | None = getattr(request.app.state, "oidc", None)
    with ctx.sessions() as session:
        session.connection(execution_options=READ_ONLY)
        if oidc is not None and oidc.handles(token):
            return oidc.verify(session, token, now=now)
        policy = TokenPolicy.from_settings(ctx.settings)
        return verify_access_token(session, policy, token, now=now)


def current_principal(
    request: Request,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("not_authenticated", 'Bearer realm="phd-hospital"')
    token = credentials.credentials
    try:
        if len(token) > _MAX_TOKEN_LENGTH:
            raise TokenRejectedError("oversized")
        return _verify(request, ctx, token)
    except TokenRejectedError as exc:
        if exc.reason != "expired":
            refusals: RefusalAudit = request.app.state.refusals
            refusals.refused(exc.reason, actor=exc.actor, via="bearer")
        raise _unauthorized(
            "invalid_token", 'Bearer realm="phd-hospital", error="invalid_token"'
        ) from exc
    except IssuerUnavailableError as exc:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail="issuer_unavailable"
        ) from exc


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[[Principal, ServerContext], Principal]:
    """A dependency admitting only these roles; anyone else gets 403 and an ``authz.denied``
    audit entry (actor: user id; detail: their role and the roles required)."""
    allowed = frozenset(roles)
    if not allowed or not allowed <= ROLES:
        raise ValueError(f"require_roles needs roles among {sorted(ROLES)}")
    required = ":".join(sorted(allowed))

    def dependency(principal: CurrentPrincipal, ctx: Ctx) -> Principal:
        if principal.role not in allowed:
            with ctx.sessions() as session:
                audit.record(
                    session,
                    "authz.denied",
                    actor=principal.user_id,
                    role=principal.role,
                    required=required,
                )
                session.commit()
            raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="role_not_allowed")
        return principal

    return dependency


AdminPrincipal = Annotated[Principal, Depends(require_roles("admin"))]
