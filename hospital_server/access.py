"""Who may read which patient's clinical data: care teams and break-glass.

Rules (DESIGN.md section 5), decided here and nowhere else:

- clinicians and nurses read the patients whose care team they are on;
- outside it, a clinician or nurse may declare break-glass for one patient with a reason:
  access for a limited time (at most ``MAX_BREAK_GLASS``), audited ``breakglass.granted``,
  and every read under it flagged ``access=break_glass`` in its audit entry;
- admins manage (users, care teams, devices) but never read clinical data; researchers reach
  data only through pseudonymised exports; auditors read the audit trail and the break-glass
  register, not patient records;
- every refusal is audited ``authz.denied``.

The break-glass reason is free text a person typed, so it may name someone: it is stored
encrypted with the patient's data key (like any identifier) and never written to an audit entry
or a log. Functions add to the caller's session and never commit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from hospital_server import audit
from hospital_server.fieldcrypt import PatientKeys, decrypt_text, encrypt_text
from hospital_server.models import (
    BreakGlass,
    CareTeamMember,
    Patient,
    PatientStatus,
    StaffUser,
    new_id,
    utcnow,
)

__all__ = [
    "CARE_ROLES",
    "MAX_BREAK_GLASS",
    "Access",
    "AccessDenied",
    "BreakGlassRecord",
    "Grant",
    "add_to_care_team",
    "authorize_read",
    "break_glass_register",
    "care_team",
    "declare_break_glass",
    "record_read",
    "remove_from_care_team",
]

CARE_ROLES = frozenset({"clinician", "nurse"})
MAX_BREAK_GLASS = timedelta(hours=4)
MIN_REASON, MAX_REASON = 10, 500


class AccessDenied(Exception):  # noqa: N818 -- a decision, not a malfunction
    """Refused; ``reason`` is a public code (not_care_team, role_not_permitted, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Access(enum.StrEnum):
    CARE_TEAM = "care_team"
    BREAK_GLASS = "break_glass"


@dataclass(frozen=True, slots=True)
class Grant:
    """Why a read is allowed: as a care-team member, or under one break-glass grant."""

    access: Access
    break_glass_id: str | None = None

    def audit_detail(self) -> dict[str, str | None]:
        return {"access": self.access.value, "grant": self.break_glass_id}


@dataclass(frozen=True, slots=True)
class BreakGlassRecord:
    id: str
    user_id: str
    patient_id: str
    reason: str
    granted_at: datetime
    expires_at: datetime


def _deny(session: Session, user_id: str, role: str, patient_id: str, reason: str) -> AccessDenied:
    audit.record(
        session, "authz.denied", actor=user_id, subject=patient_id, role=role, reason=reason
    )
    return AccessDenied(reason)


def authorize_read(
    session: Session, *, user_id: str, role: str, patient_id: str, now: datetime | None = None
) -> Grant:
    """The grant under which ``user_id`` reads ``patient_id``'s clinical data, or AccessDenied.

    A denial is audited in ``session``: the caller must commit it even though it answers
    with an error. An unknown patient is refused like a patient outside the care team
    (``not_care_team``), so the answer does not reveal which patient ids exist.
    """
    now = now or utcnow()
    if role not in CARE_ROLES:
        raise _deny(session, user_id, role, patient_id, "role_not_permitted")
    member = session.get(CareTeamMember, (patient_id, user_id))
    if member is not None:
        return Grant(Access.CARE_TEAM)
    grant = session.exec(
        select(BreakGlass)
        .where(
            col(BreakGlass.user_id) == user_id,
            col(BreakGlass.patient_id) == patient_id,
            col(BreakGlass.expires_at) > now,
        )
        .order_by(col(BreakGlass.expires_at).desc())
    ).first()
    if grant is not None:
        return Grant(Access.BREAK_GLASS, grant.id)
    raise _deny(session, user_id, role, patient_id, "not_care_team")


def record_read(
    session: Session,
    grant: Grant,
    *,
    user_id: str,
    patient_id: str,
    event: str = "observation.read",
    count: int | None = None,
) -> None:
    """Audit a read of ``patient_id``'s data under ``grant`` and commit it: callers send
    the data only after this returns, so there is no answer the trail does not show."""
    detail: dict[str, str | int | None] = {**grant.audit_detail()}
    if count is not None:
        detail["count"] = count
    audit.record(session, event, actor=user_id, subject=patient_id, **detail)
    session.commit()


def declare_break_glass(
    session: Session,
    keys: PatientKeys,
    *,
    user_id: str,
    role: str,
    patient_id: str,
    reason: str,
    duration: timedelta,
    now: datetime | None = None,
) -> BreakGlass:
    """Grant ``user_id`` emergency access to one patient for ``duration``; audited.

    ValueError for a reason or duration outside the bounds; AccessDenied (audited) for a role
    that may not read clinical data or a patient who is not active.
    """
    now = now or utcnow()
    reason = reason.strip()
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise ValueError(f"reason must be {MIN_REASON}..{MAX_REASON} characters")
    if not timedelta(minutes=1) <= duration <= MAX_BREAK_GLASS:
        raise ValueError(f"duration must be 1 minute .. {MAX_BREAK_GLASS}")
    if role not in CARE_ROLES:
        raise _deny(session, user_id, role, patient_id, "role_not_permitted")
    patient = session.get(Patient, patient_id)
    if patient is None or patient.status != PatientStatus.ACTIVE:
        raise _deny(session, user_id, role, patient_id, "patient_not_available")
    grant_id = new_id()
    grant = BreakGlass(
        id=grant_id,
        user_id=user_id,
        patient_id=patient_id,
        reason_ct=encrypt_text(
            keys.get(session, patient_id),
            reason,
            table="break_glass",
            column="reason",
            row_id=grant_id,
            patient_id=patient_id,
        ),
        granted_at=now,
        expires_at=now + duration,
    )
    session.add(grant)
    audit.record(
        session,
        "breakglass.granted",
        actor=user_id,
        subject=patient_id,
        grant=grant_id,
        minutes=int(duration.total_seconds() // 60),
    )
    return grant


def break_glass_register(
    session: Session, keys: PatientKeys, *, since: datetime, limit: int = 500
) -> list[BreakGlassRecord]:
    """Grants made since ``since``, newest first, reasons decrypted (for auditors' review)."""
    rows = session.exec(
        select(BreakGlass)
        .where(col(BreakGlass.granted_at) >= since)
        .order_by(col(BreakGlass.granted_at).desc())
        .limit(limit)
    ).all()
    return [
        BreakGlassRecord(
            id=row.id,
            user_id=row.user_id,
            patient_id=row.patient_id,
            reason=decrypt_text(
                keys.get(session, row.patient_id),
                row.reason_ct,
                table="break_glass",
                column="reason",
                row_id=row.id,
                patient_id=row.patient_id,
            ),
            granted_at=row.granted_at,
            expires_at=row.expires_at,
        )
        for row in rows
    ]


def add_to_care_team(session: Session, *, patient_id: str, user_id: str, actor: str) -> bool:
    """Put a clinician or nurse on a patient's care team; False if already on it.

    ValueError (a public code) for an unknown patient, an unknown or inactive user, or a role
    that does not give care.
    """
    if session.get(Patient, patient_id) is None:
        raise ValueError("patient_not_found")
    user = session.get(StaffUser, user_id)
    if user is None or not user.active:
        raise ValueError("user_not_found")
    if user.role not in CARE_ROLES:
        raise ValueError("role_not_permitted")
    if session.get(CareTeamMember, (patient_id, user_id)) is not None:
        return False
    session.add(
        CareTeamMember(patient_id=patient_id, user_id=user_id, added_by=actor, added_at=utcnow())
    )
    audit.record(
        session,
        "user.changed",
        actor=actor,
        subject=user_id,
        change="care_team_added",
        patient=patient_id,
    )
    return True


def remove_from_care_team(session: Session, *, patient_id: str, user_id: str, actor: str) -> bool:
    """Take a member off a patient's care team; False if they were not on it."""
    member = session.get(CareTeamMember, (patient_id, user_id))
    if member is None:
        return False
    session.delete(member)
    session.flush()  # a second removal in this session then finds nothing
    audit.record(
        session,
        "user.changed",
        actor=actor,
        subject=user_id,
        change="care_team_removed",
        patient=patient_id,
    )
    return True


def care_team(session: Session, patient_id: str) -> list[CareTeamMember]:
    return list(
        session.exec(
            select(CareTeamMember)
            .where(col(CareTeamMember.patient_id) == patient_id)
            .order_by(col(CareTeamMember.added_at))
        ).all()
    )
