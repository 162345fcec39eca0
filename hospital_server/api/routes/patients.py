"""Patients and consent (staff API). Responses carry ids and states, not identifiers."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from sqlmodel import SQLModel

from hospital_server.api.deps import AdminPrincipal, Ctx, DbSession
from hospital_server.disposal import AlreadyErasedError, ErasureReason, erase_patient
from hospital_server.models import ConsentCreate, ConsentPublic, PatientCreate, PatientStatus
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


class ErasureRequest(SQLModel):
    reason: ErasureReason


class ErasureDone(SQLModel):
    id: str
    status: str
    devices_revoked: int
    envelopes: int
    observations: int
    quarantined: int
    break_glass: int
    care_team: int


@router.post("/{patient_id}/erase")
def erase(
    patient_id: str, data: ErasureRequest, admin: AdminPrincipal, ctx: Ctx, session: DbSession
) -> ErasureDone:
    """Crypto-shred the patient's data key and delete their readings (docs/disposal.md).
    Irreversible; 404 ``patient_not_found``, 409 ``already_erased``."""
    try:
        report = erase_patient(
            session, ctx.keys, patient_id, actor=admin.user_id, reason=data.reason
        )
    except PatientNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="patient_not_found") from exc
    except AlreadyErasedError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="already_erased") from exc
    session.commit()
    # Ingest already refuses the devices (database); the CRL tells everyone else.
    if ctx.revocations is not None and report.serials:
        ctx.revocations.revoke_certificates(report.serials, reason="cessationOfOperation")
    counts = {k: v for k, v in asdict(report).items() if k not in {"patient_id", "serials"}}
    return ErasureDone(id=patient_id, status=PatientStatus.ERASED, **counts)


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
