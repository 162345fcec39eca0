"""Clinician API (JSON): a patient's record and readings, care teams, break-glass.

Every read of patient data goes through :func:`authorize` (care team or break-glass,
:mod:`hospital_server.access`) and is audited before the data leaves: the audit entry is
committed first, so a response is never sent for a read the trail does not show. Readings are
written with exact decimals (``phd_protocol.observation.wire_json``): a value "36.60" is sent
as the JSON number 36.60, never through a float.

Error details are public codes: ``not_care_team``, ``role_not_permitted``,
``patient_not_found``, ``user_not_found``, ``record_integrity``, ``invalid_query``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, Field
from sqlmodel import Session

from hospital_server import audit
from hospital_server.access import (
    MAX_BREAK_GLASS,
    AccessDenied,
    BreakGlassRecord,
    Grant,
    add_to_care_team,
    authorize_read,
    break_glass_register,
    care_team,
    declare_break_glass,
    record_read,
    remove_from_care_team,
)
from hospital_server.api.deps import AdminPrincipal, Ctx, CurrentPrincipal, DbSession, require_roles
from hospital_server.auth.principal import Principal
from hospital_server.clinical import (
    MAX_PAGE,
    ReadingQuery,
    RecordIntegrityError,
    read_observations,
    reading_wire,
)
from hospital_server.models import PatientPublic
from hospital_server.patients import PatientNotFoundError, read_patient
from phd_protocol.observation import wire_json

__all__ = ["authorize", "router"]

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["clinical"])

Auditor = Annotated[Principal, Depends(require_roles("auditor"))]


def authorize(session: Session, principal: Principal, patient_id: str) -> Grant:
    """The grant for this read, or 403 (the denial's audit entry is committed first)."""
    try:
        return authorize_read(
            session, user_id=principal.user_id, role=principal.role, patient_id=patient_id
        )
    except AccessDenied as denied:
        session.commit()
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=denied.reason) from None


def integrity_failure(exc: RecordIntegrityError) -> HTTPException:
    log.error("stored record failed its integrity checks: %s", exc)  # ids only
    return HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, detail="record_integrity")


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(wire_json(body), status_code=status_code, media_type="application/json")


@router.get("/patients/{patient_id}", response_model=PatientPublic)
def get_patient(
    patient_id: str, principal: CurrentPrincipal, ctx: Ctx, session: DbSession
) -> PatientPublic:
    grant = authorize(session, principal, patient_id)
    try:
        patient = read_patient(session, ctx.keys, patient_id)
    except PatientNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="patient_not_found") from None
    record_read(
        session, grant, user_id=principal.user_id, patient_id=patient_id, event="patient.read"
    )
    return patient


@router.get(
    "/patients/{patient_id}/observations",
    responses={200: {"description": "A page of readings, newest measurement first."}},
)
def list_observations(
    patient_id: str,
    *,
    principal: CurrentPrincipal,
    ctx: Ctx,
    session: DbSession,
    code: Annotated[list[int] | None, Query(description="MDC code(s) to select")] = None,
    since: Annotated[datetime | None, Query(description="measured at or after")] = None,
    until: Annotated[datetime | None, Query(description="measured before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    try:
        query = ReadingQuery(
            mdc_codes=frozenset(code) if code else None,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail="invalid_query") from None
    grant = authorize(session, principal, patient_id)
    try:
        readings, more = read_observations(session, ctx.keys, patient_id, query)
    except RecordIntegrityError as exc:
        raise integrity_failure(exc) from None
    record_read(
        session, grant, user_id=principal.user_id, patient_id=patient_id, count=len(readings)
    )
    return json_response(
        {
            "items": [reading_wire(r) for r in readings],
            "next_offset": offset + len(readings) if more else None,
        }
    )


# ------------------------------------------------------------------ care teams (admin)


class CareTeamEntry(BaseModel):
    user_id: str
    added_by: str
    added_at: datetime


@router.get("/patients/{patient_id}/care-team")
def get_care_team(
    patient_id: str, admin: AdminPrincipal, session: DbSession
) -> list[CareTeamEntry]:
    del admin  # authorisation only
    return [
        CareTeamEntry(user_id=m.user_id, added_by=m.added_by, added_at=m.added_at)
        for m in care_team(session, patient_id)
    ]


@router.put("/patients/{patient_id}/care-team/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def put_care_team_member(
    patient_id: str, user_id: str, admin: AdminPrincipal, session: DbSession
) -> None:
    try:
        add_to_care_team(session, patient_id=patient_id, user_id=user_id, actor=admin.user_id)
    except ValueError as exc:
        code = str(exc)
        status_code = (
            status.HTTP_409_CONFLICT if code == "role_not_permitted" else status.HTTP_404_NOT_FOUND
        )
        raise HTTPException(status_code, detail=code) from None
    session.commit()


@router.delete("/patients/{patient_id}/care-team/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_care_team_member(
    patient_id: str, user_id: str, admin: AdminPrincipal, session: DbSession
) -> None:
    if not remove_from_care_team(
        session, patient_id=patient_id, user_id=user_id, actor=admin.user_id
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="not_a_member")
    session.commit()


# ------------------------------------------------------------------ break-glass


class BreakGlassRequest(BaseModel):
    reason: str = Field(min_length=10, max_length=500)
    minutes: int = Field(default=60, ge=1, le=int(MAX_BREAK_GLASS.total_seconds() // 60))


class BreakGlassGranted(BaseModel):
    id: str
    patient_id: str
    expires_at: datetime


@router.post("/patients/{patient_id}/break-glass", status_code=status.HTTP_201_CREATED)
def post_break_glass(
    patient_id: str,
    body: BreakGlassRequest,
    principal: CurrentPrincipal,
    ctx: Ctx,
    session: DbSession,
) -> BreakGlassGranted:
    try:
        grant = declare_break_glass(
            session,
            ctx.keys,
            user_id=principal.user_id,
            role=principal.role,
            patient_id=patient_id,
            reason=body.reason,
            duration=timedelta(minutes=body.minutes),
        )
    except AccessDenied as denied:
        session.commit()
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=denied.reason) from None
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, detail="invalid_request"
        ) from None
    session.commit()
    return BreakGlassGranted(id=grant.id, patient_id=patient_id, expires_at=grant.expires_at)


@router.get("/break-glass")
def get_break_glass_register(
    auditor: Auditor,
    ctx: Ctx,
    session: DbSession,
    since: Annotated[datetime, Query(description="grants made at or after")],
) -> list[BreakGlassRecord]:
    """The break-glass register for review (auditors): who, which patient, why, how long."""
    if since.tzinfo is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail="invalid_query")
    entries = break_glass_register(session, ctx.keys, since=since)
    audit.record(
        session,
        "patient.read",
        actor=auditor.user_id,
        view="break_glass_register",
        count=len(entries),
    )
    session.commit()
    return entries
