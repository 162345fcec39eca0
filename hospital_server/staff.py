"""Staff accounts for the interim API authentication (HTTP Basic over TLS, scrypt hashes).

The clinician-API issue replaces this with JWTs and RBAC; until then there is a bootstrap
admin created by ``phd server create-admin`` and staff with roles from DESIGN.md section 5.
Functions never commit and never log passwords or hashes.
"""

from __future__ import annotations

import functools

from sqlmodel import Session, select

from hospital_server import audit
from hospital_server.models import StaffUser, new_id, utcnow
from hospital_server.security import hash_password, verify_password

__all__ = ["ROLES", "authenticate", "create_staff_user"]

ROLES = frozenset({"admin", "clinician", "nurse", "researcher", "auditor"})
MIN_PASSWORD_LENGTH = 12


# Verifying against a real hash even for unknown users keeps the timing of "no such user"
# and "wrong password" alike (no username oracle).
@functools.cache
def _dummy_hash() -> str:
    return hash_password("not-a-real-password-but-same-cost")


def create_staff_user(
    session: Session, username: str, password: str, *, role: str, actor: str
) -> StaffUser:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    if session.exec(select(StaffUser).where(StaffUser.username == username)).first():
        raise ValueError("a staff user with this name already exists")
    user = StaffUser(
        id=new_id(),
        username=username,
        password_hash=hash_password(password),
        role=role,
        created_at=utcnow(),
    )
    session.add(user)
    audit.record(session, "user.changed", actor=actor, subject=user.id, role=role)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> StaffUser | None:
    user = session.exec(select(StaffUser).where(StaffUser.username == username)).first()
    if user is None or not user.active:
        verify_password(password, _dummy_hash())
        return None
    return user if verify_password(password, user.password_hash) else None
