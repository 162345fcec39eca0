"""Patients and consent (staff API). Responses carry ids and states, not identifiers."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from sqlmodel import SQLModel

from hospital_server.api.deps import AdminPrincipal, Ctx, DbSession
from hospital_server.models import ConsentCreate, ConsentPublic, PatientCreate
from hospital_server.patients import (
    DuplicateMrnError,
    PatientNotFoundError,
    consent_history,
    create_patient,
    record_consent,
)

router = APIRouter(prefix="/api/v1/patients", tags=["patients"])


class PatientCreated(SQLModel):
    id: str
    status: str
    created_at: datetime


@router.post("", status_code=status.HTTP_201_CREATED)
def create(
    data: PatientCreate, admin: AdminPrincipal, ctx: Ctx, session: DbSession
) -> PatientCreated:
    try:
        patient = create_patient(session, ctx.keys, data, actor=admin.user_id)
    except DuplicateMrnError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="duplicate_mrn") from exc
    session.commit()
    return PatientCreated(id=patient.id, status=patient.status, created_at=patient.created_at)


@router.post("/{patient_id}/consents", status_code=status.HTTP_201_CREATED)
def add_consent(
    patient_id: str, data: ConsentCreate, admin: AdminPrincipal, session: DbSession
) -> ConsentPublic:
    try:
        consent = record_consent(
            session, patient_id, data.kind, granted=data.granted, actor=admin.user_id
        )
    except PatientNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="patient_not_found") from exc
    session.commit()
    return ConsentPublic.model_validate(consent, from_attributes=True)


@router.get("/{patient_id}/consents")
def list_consents(
    patient_id: str, admin: AdminPrincipal, session: DbSession
) -> list[ConsentPublic]:
    del admin  # authorisation only
    return [
        ConsentPublic.model_validate(c, from_attributes=True)
        for c in consent_history(session, patient_id)
    ]
