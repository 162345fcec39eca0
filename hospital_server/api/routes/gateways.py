"""Gateway revocation: database first (ingest refuses it), then CRL and broker cut-off."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from hospital_server.api.deps import AdminPrincipal, Ctx, DbSession
from hospital_server.gateways import GATEWAY_ID, revoke_gateway
from hospital_server.models import GatewayPublic

router = APIRouter(prefix="/api/v1/gateways", tags=["gateways"])


@router.post("/{gateway_id}/revoke")
def revoke(gateway_id: str, admin: AdminPrincipal, ctx: Ctx, session: DbSession) -> GatewayPublic:
    if not GATEWAY_ID.match(gateway_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="bad_gateway_id")
    gateway = revoke_gateway(session, gateway_id, actor=admin.user_id)
    session.commit()
    if ctx.revocations is not None:
        ctx.revocations.revoke_gateway(gateway_id, reason="keyCompromise")
    return GatewayPublic.model_validate(gateway, from_attributes=True)
