"""Refresh tokens: opaque, stored as SHA-256 only, rotated on every use, reuse revokes all.

Rules (RFC 9700 section 4.14.2, refresh token rotation):

- a password login starts a *family*: one token, valid for ``refresh_token_ttl``;
- each use marks the presented token used and issues the next token of the same family; the
  new token keeps the family's expiry, so a session ends ``refresh_token_ttl`` after the
  login however often it is refreshed (a clinician logs in again each shift);
- a used or revoked token presented again means two parties hold the family: the whole family
  is revoked and the attempt is refused as ``refresh_reuse``;
- marking a token used is a conditional UPDATE, so two concurrent uses of one token cannot
  both succeed: the loser is treated as a reuse;
- logout, deactivation and a re-issued TOTP secret revoke families.

Functions flush, never commit; refusals raise
:class:`~hospital_server.auth.errors.LoginRefusedError` whose ``reason`` is one of
``refresh_malformed``, ``refresh_unknown``, ``refresh_reuse``, ``refresh_expired``. On
``refresh_reuse`` the family's revocation is already flushed: the caller must commit it (with
its audit entry) rather than roll back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, delete, select, update

from hospital_server.auth.errors import LoginRefusedError
from hospital_server.models import RefreshToken, new_id
from hospital_server.security import OPAQUE_TOKEN_LENGTH, new_opaque_token, opaque_token_hash

__all__ = [
    "Rotated",
    "issue",
    "prune_expired",
    "revoke_family",
    "revoke_presented",
    "revoke_user",
    "rotate",
]

_FORMAT = re.compile(rf"^[A-Za-z0-9_-]{{{OPAQUE_TOKEN_LENGTH}}}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotated:
    user_id: str
    family_id: str
    token: str

    def __repr__(self) -> str:
        return f"Rotated(user_id={self.user_id!r}, family_id={self.family_id!r})"


def issue(
    session: Session,
    user_id: str,
    *,
    now: datetime,
    expires_at: datetime,
    family_id: str | None = None,
) -> str:
    """A new refresh token (a new family unless ``family_id`` is given)."""
    token = new_opaque_token()
    session.add(
        RefreshToken(
            id=new_id(),
            user_id=user_id,
            family_id=family_id or new_id(),
            token_hash=opaque_token_hash(token),
            issued_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    return token


def _find(session: Session, presented: str) -> RefreshToken | None:
    if not _FORMAT.match(presented):
        return None
    return session.exec(
        select(RefreshToken).where(RefreshToken.token_hash == opaque_token_hash(presented))
    ).first()


def rotate(session: Session, presented: str, *, now: datetime) -> Rotated:
    """Spend ``presented`` and return the next token of its family (see module rules)."""
    if not _FORMAT.match(presented):
        raise LoginRefusedError("refresh_malformed")
    row = _find(session, presented)
    if row is None:
        raise LoginRefusedError("refresh_unknown")
    if row.used_at is not None or row.revoked_at is not None:
        _revoke_after_reuse(session, row, now=now)
    if row.expires_at <= now:
        raise LoginRefusedError("refresh_expired", actor=row.user_id)
    spent = session.exec(
        update(RefreshToken)
        .where(
            col(RefreshToken.id) == row.id,
            col(RefreshToken.used_at).is_(None),
            col(RefreshToken.revoked_at).is_(None),
        )
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # a concurrent use spent it first
        _revoke_after_reuse(session, row, now=now)
    token = issue(session, row.user_id, now=now, expires_at=row.expires_at, family_id=row.family_id)
    return Rotated(user_id=row.user_id, family_id=row.family_id, token=token)


def _revoke_after_reuse(session: Session, row: RefreshToken, *, now: datetime) -> None:
    revoke_family(session, row.family_id, now=now)
    session.flush()
    raise LoginRefusedError("refresh_reuse", actor=row.user_id)


def revoke_family(session: Session, family_id: str, *, now: datetime) -> int:
    result = session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


def revoke_user(session: Session, user_id: str, *, now: datetime) -> int:
    """Revoke every refresh token of the user (deactivation, new second factor)."""
    result = session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.user_id) == user_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


def revoke_presented(session: Session, presented: str, *, user_id: str, now: datetime) -> bool:
    """Logout: revoke the family of ``presented`` if it is one of ``user_id``'s tokens."""
    row = _find(session, presented)
    if row is None or row.user_id != user_id:
        return False
    revoke_family(session, row.family_id, now=now)
    return True


def prune_expired(session: Session, user_id: str, *, now: datetime) -> int:
    """Delete the user's expired refresh tokens (an expired token is refused as unknown
    just the same, so nothing is lost for reuse detection)."""
    result = session.exec(
        delete(RefreshToken).where(
            col(RefreshToken.user_id) == user_id, col(RefreshToken.expires_at) <= now
        )
    )
    return int(result.rowcount)
