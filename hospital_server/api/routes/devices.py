"""Device registration (one-time enrollment code, text and QR), listing and revocation."""

from __future__ import annotations

import base64
from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from sqlmodel import SQLModel

from hospital_server.api.deps import AdminPrincipal, Ctx, DbSession
from hospital_server.devices import (
    DeviceError,
    DeviceStateError,
    list_devices,
    register_device,
    revoke_device,
)
from hospital_server.models import DeviceCreate, DevicePublic
from hospital_server.security import enrollment_qr_png

router = APIRouter(prefix="/api/v1", tags=["devices"])


class DeviceRegistered(SQLModel):
    device: DevicePublic
    enrollment_code: str
    expires_at: datetime
    qr_png_base64: str


class RevocationResult(SQLModel):
    id: str
    status: str
    certificates_revoked: int
    crl_updated: bool


@router.post("/patients/{patient_id}/devices", status_code=status.HTTP_201_CREATED)
def register(
    patient_id: str, data: DeviceCreate, admin: AdminPrincipal, ctx: Ctx, session: DbSession
) -> DeviceRegistered:
    try:
        reg = register_device(
            session,
            patient_id,
            data.kind,
            actor=admin.user_id,
            ttl=ctx.settings.enrollment_code_ttl,
            pepper=ctx.code_pepper,
            max_attempts=ctx.settings.enrollment_code_max_attempts,
        )
    except DeviceError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="patient_not_active") from exc
    session.commit()
    return DeviceRegistered(
        device=DevicePublic.model_validate(reg.device, from_attributes=True),
        enrollment_code=reg.code,
        expires_at=reg.expires_at,
        qr_png_base64=base64.b64encode(enrollment_qr_png(reg.code)).decode(),
    )


@router.get("/devices")
def devices(
    admin: AdminPrincipal, session: DbSession, patient_id: str | None = None
) -> list[DevicePublic]:
    del admin  # authorisation only
    return [
        DevicePublic.model_validate(d, from_attributes=True)
        for d in list_devices(session, patient_id)
    ]


@router.post("/devices/{device_id}/revoke")
def revoke(device_id: str, admin: AdminPrincipal, ctx: Ctx, session: DbSession) -> RevocationResult:
    try:
        credentials = revoke_device(session, device_id, actor=admin.user_id)
    except DeviceStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="device_not_revocable") from exc
    except DeviceError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="device_not_found") from exc
    session.commit()
    # Ingest already refuses the device (database); the CRL tells everyone else.
    serials = [c.serial for c in credentials]
    crl_updated = False
    if ctx.revocations is not None and serials:
        ctx.revocations.revoke_certificates(serials, reason="cessationOfOperation")
        crl_updated = True
    return RevocationResult(
        id=device_id,
        status="revoked",
        certificates_revoked=len(serials),
        crl_updated=crl_updated,
    )
