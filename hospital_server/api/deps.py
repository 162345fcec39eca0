"""FastAPI dependencies: the server context, a database session, the authenticated staff user.

Authentication is HTTP Basic checked against scrypt hashes until the clinician-API issue adds
JWTs. A failed login is audited (``auth.failed``) with the username only when it looks like an
identifier; a success is not audited per request (the token issuer will audit logins).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlmodel import Session

from hospital_server import audit
from hospital_server.context import ServerContext
from hospital_server.models import StaffUser
from hospital_server.staff import authenticate

__all__ = ["AdminUser", "Ctx", "DbSession", "StaffIdentity"]

_basic = HTTPBasic(realm="phd-hospital")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def get_context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(get_context)]


def get_session(ctx: Ctx) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


def current_staff(
    credentials: Annotated[HTTPBasicCredentials, Depends(_basic)], ctx: Ctx
) -> StaffUser:
    with ctx.sessions() as session:
        user = authenticate(session, credentials.username, credentials.password)
        if user is None:
            actor = credentials.username if _SAFE_NAME.match(credentials.username) else "invalid"
            audit.record(session, "auth.failed", actor=actor)
            session.commit()
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="invalid credentials",
                headers={"WWW-Authenticate": 'Basic realm="phd-hospital"'},
            )
        return user


StaffIdentity = Annotated[StaffUser, Depends(current_staff)]


def require_admin(user: StaffIdentity, ctx: Ctx) -> StaffUser:
    if user.role != "admin":
        with ctx.sessions() as session:
            audit.record(session, "authz.denied", actor=user.id, role=user.role)
            session.commit()
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="admin role required")
    return user


AdminUser = Annotated[StaffUser, Depends(require_admin)]
