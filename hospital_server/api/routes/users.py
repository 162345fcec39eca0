"""Staff accounts (admin only): create, list, re-issue the TOTP secret, deactivate.

A new user's response, and a re-issue's, carries the TOTP secret (base32) and its
``otpauth://`` provisioning URI exactly once: the server keeps only the wrapped secret and can
never show it again. Listing shows no secret, hash or counter beyond ``totp_enrolled`` and
``locked``. Deactivation revokes every refresh token of the user, and their access tokens stop
verifying at once. Each change is audited ``user.changed``.

Refusals: 409 ``duplicate_username``, 422 ``password_too_short`` / ``password_too_long`` /
``bad_username``, 404 ``user_not_found``, 409 ``cannot_deactivate_self``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field, SecretStr
from sqlmodel import Session

from hospital_server.api.deps import AdminPrincipal, Ctx, DbSession
from hospital_server.models import StaffUser, utcnow
from hospital_server.staff import (
    StaffError,
    TotpProvisioning,
    create_staff_user,
    deactivate_user,
    list_users,
    provision_totp,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/users", tags=["users"])

Role = Literal["admin", "clinician", "nurse", "researcher", "auditor"]
_USER_ID = re.compile(r"^[0-9a-f-]{36}$")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_STATUS = {
    "duplicate_username": status.HTTP_409_CONFLICT,
    "cannot_deactivate_self": status.HTTP_409_CONFLICT,
    "user_not_found": status.HTTP_404_NOT_FOUND,
}


class UserCreate(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # SecretStr: never echoed by a validation error, a repr or a log line.
    password: SecretStr
    role: Role


class UserPublic(BaseModel):
    id: str
    username: str
    role: str
    active: bool
    created_at: datetime
    totp_enrolled: bool
    locked: bool


class TotpIssued(BaseModel):
    user_id: str
    totp_secret: str
    totp_uri: str


class UserCreated(UserPublic):
    totp_secret: str
    totp_uri: str


def _public(user: StaffUser) -> UserPublic:
    locked = user.locked_until is not None and user.locked_until > utcnow()
    return UserPublic(
        id=user.id,
        username=user.username,
        role=user.role,
        active=user.active,
        created_at=user.created_at,
        totp_enrolled=user.totp_wrapped is not None,
        locked=locked,
    )


def _refused(exc: StaffError) -> HTTPException:
    code = _STATUS.get(exc.reason, status.HTTP_422_UNPROCESSABLE_CONTENT)
    return HTTPException(code, detail=exc.reason)


def _user(session: Session, user_id: str) -> StaffUser:
    user = session.get(StaffUser, user_id) if _USER_ID.match(user_id) else None
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="user_not_found")
    return user


@router.post("", status_code=status.HTTP_201_CREATED)
def create(
    data: UserCreate, admin: AdminPrincipal, ctx: Ctx, session: DbSession, response: Response
) -> UserCreated:
    try:
        user = create_staff_user(
            session,
            data.username,
            data.password.get_secret_value(),
            role=data.role,
            actor=admin.user_id,
        )
        issued = provision_totp(session, ctx.key_provider, user, actor=admin.user_id)
    except StaffError as exc:
        raise _refused(exc) from exc
    session.commit()
    response.headers.update(_NO_STORE)
    return UserCreated(
        **_public(user).model_dump(), totp_secret=issued.secret_base32, totp_uri=issued.uri
    )


@router.get("")
def list_all(admin: AdminPrincipal, session: DbSession) -> list[UserPublic]:
    del admin  # authorisation only
    return [_public(user) for user in list_users(session)]


@router.post("/{user_id}/totp")
def reissue_totp(
    user_id: str, admin: AdminPrincipal, ctx: Ctx, session: DbSession, response: Response
) -> TotpIssued:
    user = _user(session, user_id)
    issued: TotpProvisioning = provision_totp(session, ctx.key_provider, user, actor=admin.user_id)
    session.commit()
    response.headers.update(_NO_STORE)
    return TotpIssued(user_id=user.id, totp_secret=issued.secret_base32, totp_uri=issued.uri)


@router.post("/{user_id}/deactivate")
def deactivate(user_id: str, admin: AdminPrincipal, session: DbSession) -> UserPublic:
    _user(session, user_id)
    try:
        user = deactivate_user(session, user_id, actor=admin.user_id)
    except StaffError as exc:
        raise _refused(exc) from exc
    session.commit()
    return _public(user)
