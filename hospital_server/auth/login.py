"""The two grants of the token endpoint: password + TOTP, and refresh token.

Password grant, in three steps so that no transaction (and, on SQLite, no write lock) is held
while scrypt runs:

1. *reserve*: one UPDATE counts the attempt as a failure in advance, by username, only if the
   account is active, not locked and below ``login_max_failures``; commit. The same statement
   runs for unknown names (it matches nothing), so existence costs no extra round trip, and
   concurrent guesses cannot exceed the bound: each needs a reservation.
2. *check*: exactly one scrypt verification on every path (against a dummy hash when there is
   no usable account) and the TOTP window, both always evaluated, so neither timing nor the
   answer says which factor failed or whether the name exists.
3. *settle*: on success a conditional UPDATE claims the TOTP step (a code is good once, even
   under concurrent use), clears the counter and the tokens are issued; on failure the
   reserved count stays and, at the bound, the account is locked for ``login_lockout`` (the
   counter restarts at zero, so each lockout admits at most the bound of guesses). Either way
   the outcome is audited: ``auth.login`` (actor: the user id) or ``auth.failed`` (actor: the
   user id, or ``unknown``) with a reason code.

Failure reasons (audit only; the caller sees RFC 6749 ``invalid_grant``): ``unknown_user``,
``bad_password``, ``bad_totp``, ``totp_reused``, ``no_totp``, ``locked``, ``inactive``; for the
refresh grant ``refresh_malformed``, ``refresh_unknown``, ``refresh_reuse``,
``refresh_expired``, ``inactive``. A successful refresh is not audited (it is no login; the
family's login was).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_
from sqlmodel import Session, col, select, update

from hospital_server import audit
from hospital_server.auth import refresh, totp
from hospital_server.auth.errors import LoginRefusedError
from hospital_server.auth.tokens import TokenPolicy, issue_access_token
from hospital_server.context import ServerContext
from hospital_server.keys import KeyUnavailableError
from hospital_server.models import StaffUser, utcnow
from hospital_server.security import verify_password
from hospital_server.staff import dummy_password_check, totp_secret

__all__ = ["TokenGrant", "password_grant", "refresh_grant"]

log = logging.getLogger(__name__)

# Stands in for a missing secret so the TOTP check costs the same with or without one.
_NO_SECRET = bytes(totp.SECRET_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenGrant:
    """What the token endpoint answers (RFC 6749 section 5.1)."""

    user_id: str
    access_token: str
    expires_in: int
    refresh_token: str

    def __repr__(self) -> str:
        return f"TokenGrant(user_id={self.user_id!r}, expires_in={self.expires_in})"


def _refused(
    session: Session,
    reason: str,
    *,
    actor: str,
    failures: int | None = None,
    locked: bool | None = None,
) -> LoginRefusedError:
    """Audit the refusal, commit, and return the error for the caller to raise."""
    if failures is None:
        audit.record(session, "auth.failed", actor=actor, reason=reason)
    else:
        audit.record(
            session, "auth.failed", actor=actor, reason=reason, failures=failures, locked=locked
        )
    session.commit()
    return LoginRefusedError(reason, actor=None if actor == "unknown" else actor)


def _issue(
    ctx: ServerContext,
    session: Session,
    user: StaffUser,
    *,
    now: datetime,
    refresh_token: str,
) -> TokenGrant:
    access = issue_access_token(
        session,
        ctx.key_provider,
        TokenPolicy.from_settings(ctx.settings),
        user_id=user.id,
        role=user.role,
        now=now,
    )
    return TokenGrant(
        user_id=user.id,
        access_token=access.token,
        expires_in=access.expires_in,
        refresh_token=refresh_token,
    )


def password_grant(
    ctx: ServerContext, *, username: str, password: str, code: str, now: datetime | None = None
) -> TokenGrant:
    """Check password and TOTP code; on success issue an access and a refresh token."""
    now = now or utcnow()
    settings = ctx.settings
    with ctx.sessions() as session:
        # 1. reserve
        reserved = session.exec(
            update(StaffUser)
            .where(
                col(StaffUser.username) == username,
                col(StaffUser.active).is_(True),
                or_(col(StaffUser.locked_until).is_(None), col(StaffUser.locked_until) <= now),
                col(StaffUser.failed_logins) < settings.login_max_failures,
            )
            .values(failed_logins=col(StaffUser.failed_logins) + 1)
        ).rowcount
        user = session.exec(select(StaffUser).where(StaffUser.username == username)).first()
        session.commit()

        # 2. check (no transaction open)
        if user is None or reserved != 1:
            dummy_password_check(password)
            totp.match_step(_NO_SECRET, code, now.timestamp())
            if user is None:
                raise _refused(session, "unknown_user", actor="unknown")
            raise _refused(session, "inactive" if not user.active else "locked", actor=user.id)
        password_ok = verify_password(password, user.password_hash)
        try:
            secret = totp_secret(ctx.key_provider, user)
        except KeyUnavailableError:
            log.error("TOTP secret of staff user %s does not unwrap (KEK missing?)", user.id)
            secret = None
        step = totp.match_step(secret or _NO_SECRET, code, now.timestamp())

        # 3. settle
        if password_ok and secret is not None and step is not None:
            claimed = session.exec(
                update(StaffUser)
                .where(
                    col(StaffUser.id) == user.id,
                    or_(
                        col(StaffUser.totp_last_step).is_(None),
                        col(StaffUser.totp_last_step) < step,
                    ),
                )
                .values(totp_last_step=step, failed_logins=0, locked_until=None)
            ).rowcount
            if claimed == 1:
                refresh.prune_expired(session, user.id, now=now)
                token = refresh.issue(
                    session, user.id, now=now, expires_at=now + settings.refresh_token_ttl
                )
                grant = _issue(ctx, session, user, now=now, refresh_token=token)
                audit.record(session, "auth.login", actor=user.id, grant="password")
                session.commit()
                return grant
            reason = "totp_reused"
        elif not password_ok:
            reason = "bad_password"
        else:
            reason = "no_totp" if secret is None else "bad_totp"
        failures = session.exec(
            select(col(StaffUser.failed_logins)).where(StaffUser.id == user.id)
        ).one()
        locked = failures >= settings.login_max_failures
        if locked:
            session.exec(
                update(StaffUser)
                .where(col(StaffUser.id) == user.id)
                .values(failed_logins=0, locked_until=now + settings.login_lockout)
            )
        raise _refused(session, reason, actor=user.id, failures=failures, locked=locked)


def refresh_grant(
    ctx: ServerContext, *, refresh_token: str, now: datetime | None = None
) -> TokenGrant:
    """Spend a refresh token for a new access token and the next refresh token."""
    now = now or utcnow()
    with ctx.sessions() as session:
        try:
            rotated = refresh.rotate(session, refresh_token, now=now)
        except LoginRefusedError as exc:
            # A reuse has revoked the family in this session: commit that with the audit.
            raise _refused(session, exc.reason, actor=exc.actor or "unknown") from exc
        user = session.get(StaffUser, rotated.user_id)
        if user is None or not user.active:
            session.rollback()
            refresh.revoke_family(session, rotated.family_id, now=now)
            raise _refused(session, "inactive", actor=rotated.user_id)
        grant = _issue(ctx, session, user, now=now, refresh_token=rotated.token)
        session.commit()
        return grant
