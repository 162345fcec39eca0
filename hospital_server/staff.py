"""Staff accounts: creation, the TOTP second factor, deactivation, listing.

Roles are DESIGN.md section 5's (admins manage, they do not read clinical data). Passwords are
scrypt hashes (:mod:`hospital_server.security`); a TOTP secret is 20 random bytes wrapped by
the key provider's KEK with ``b"totp\\x00" + user id`` as context, so a wrapped secret copied
onto another user's row does not unwrap. The secret leaves this module only inside a
:class:`TotpProvisioning`, which the API or the CLI shows to its owner exactly once.

Functions never commit and never log passwords, hashes or secrets; they audit
``user.changed`` with ids and codes. Errors: :class:`StaffError` (a ``ValueError``) with a
``reason`` code the API answers with.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from hospital_server import audit
from hospital_server.auth import refresh, totp
from hospital_server.keys import KeyProvider, WrappedKey
from hospital_server.models import StaffUser, new_id, utcnow
from hospital_server.security import hash_password, verify_password

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "USERNAME",
    "StaffError",
    "TotpProvisioning",
    "create_staff_user",
    "deactivate_user",
    "dummy_password_check",
    "list_users",
    "provision_totp",
    "totp_context",
    "totp_secret",
]

ROLES = frozenset({"admin", "clinician", "nurse", "researcher", "auditor"})
MIN_PASSWORD_LENGTH = 12
# scrypt takes any length; the bound keeps one login request from hashing megabytes.
MAX_PASSWORD_LENGTH = 1024
# Login names are identifiers (they may appear beside ids in operator output), not free text.
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TOTP_CONTEXT = b"totp\x00"


def totp_context(user_id: str) -> bytes:
    """Associated data of a wrapped TOTP secret: it opens for that staff user only."""
    return _TOTP_CONTEXT + user_id.encode()


class StaffError(ValueError):
    """A staff change was refused; ``reason`` is the code the API answers with."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpProvisioning:
    """A new TOTP secret for its owner's authenticator app: shown once, never stored clear."""

    user_id: str
    secret_base32: str
    uri: str

    def __repr__(self) -> str:
        return f"TotpProvisioning(user_id={self.user_id!r}, secret=<redacted>)"


# Verifying against a real hash even for unknown users keeps the timing of "no such user"
# and "wrong password" alike (no username oracle).
@functools.cache
def _dummy_hash() -> str:
    return hash_password("not-a-real-password-but-same-cost")


def dummy_password_check(password: str) -> None:
    """Spend the time of one password check on nothing (unknown, locked or inactive users)."""
    verify_password(password, _dummy_hash())


def create_staff_user(
    session: Session, username: str, password: str, *, role: str, actor: str
) -> StaffUser:
    """A new active account without a second factor (it cannot log in until
    :func:`provision_totp`). Flushes; the caller commits."""
    if role not in ROLES:
        raise StaffError("unknown_role", f"unknown role {role!r}")
    if not USERNAME.match(username):
        raise StaffError("bad_username", "usernames are 1-64 letters, digits, '.', '_' or '-'")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(
            "password_too_short", f"passwords need at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise StaffError(
            "password_too_long", f"passwords have at most {MAX_PASSWORD_LENGTH} characters"
        )
    if session.exec(select(StaffUser).where(StaffUser.username == username)).first():
        raise StaffError("duplicate_username", "a staff user with this name already exists")
    user = StaffUser(
        id=new_id(),
        username=username,
        password_hash=hash_password(password),
        role=role,
        created_at=utcnow(),
    )
    session.add(user)
    audit.record(session, "user.changed", actor=actor, subject=user.id, change="created", role=role)
    session.flush()
    return user


def provision_totp(
    session: Session,
    keys: KeyProvider,
    user: StaffUser,
    *,
    actor: str,
    secret: bytes | None = None,
    now: datetime | None = None,
) -> TotpProvisioning:
    """Give ``user`` a new TOTP secret (random unless one is passed, e.g. by an operator's
    automation), replacing any previous one. A re-issue also revokes the user's refresh
    tokens: whoever held the old factor may hold a session too. Flushes; caller commits."""
    if secret is None:
        secret = totp.new_secret()
    elif len(secret) < totp.SECRET_BYTES:
        raise StaffError("weak_totp_secret", "a TOTP secret needs at least 160 bits")
    reissue = user.totp_wrapped is not None
    wrapped = keys.wrap(secret, context=totp_context(user.id))
    user.totp_wrapped = wrapped.blob
    user.totp_kek_id = wrapped.kek_id
    user.totp_last_step = None
    session.add(user)
    if reissue:
        refresh.revoke_user(session, user.id, now=now or utcnow())
    audit.record(
        session,
        "user.changed",
        actor=actor,
        subject=user.id,
        change="totp_reissued" if reissue else "totp_issued",
    )
    session.flush()
    return TotpProvisioning(
        user_id=user.id,
        secret_base32=totp.secret_base32(secret),
        uri=totp.provisioning_uri(secret, account=user.username),
    )


def totp_secret(keys: KeyProvider, user: StaffUser) -> bytes | None:
    """The user's TOTP secret, or None when none was provisioned. Raises
    :class:`~hospital_server.keys.KeyUnavailableError` if the wrap does not open."""
    if user.totp_wrapped is None or user.totp_kek_id is None:
        return None
    return keys.unwrap(
        WrappedKey(user.totp_kek_id, user.totp_wrapped),
        context=totp_context(user.id),
    )


def deactivate_user(
    session: Session, user_id: str, *, actor: str, now: datetime | None = None
) -> StaffUser:
    """Deactivate the account and revoke its refresh tokens; its access tokens stop
    verifying at once (verification re-reads the user). Idempotent. Flushes."""
    user = session.get(StaffUser, user_id)
    if user is None:
        raise StaffError("user_not_found", "no staff user with this id")
    if user_id == actor:
        raise StaffError("cannot_deactivate_self", "an admin cannot deactivate themselves")
    user.active = False
    session.add(user)
    refresh.revoke_user(session, user.id, now=now or utcnow())
    audit.record(session, "user.changed", actor=actor, subject=user.id, change="deactivated")
    session.flush()
    return user


def list_users(session: Session) -> list[StaffUser]:
    return list(session.exec(select(StaffUser).order_by(col(StaffUser.username))).all())
