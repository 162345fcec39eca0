"""Gateway records: the server's view of which gateways are revoked.

Gateways are issued by the PKI (``phd pki issue-gateway``) and authenticate to the broker with
their certificates; the server keeps a row per gateway it has seen or revoked. Ingest refuses
envelopes relayed by a revoked gateway (``gateway_revoked``) even if the broker still lets a
message through during the cut-off window. Functions never commit.
"""

from __future__ import annotations

import re

from sqlmodel import Session

from hospital_server import audit
from hospital_server.models import Gateway, utcnow

__all__ = ["GATEWAY_ID", "ensure_gateway", "is_revoked", "revoke_gateway"]

# Same shape as a certificate CN / MQTT identity the PKI accepts for gateways.
GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

ACTIVE = "active"
REVOKED = "revoked"


def _check(gateway_id: str) -> None:
    if not GATEWAY_ID.match(gateway_id):
        raise ValueError("gateway id must be 1-64 of [A-Za-z0-9_.-]")


def ensure_gateway(session: Session, gateway_id: str) -> Gateway:
    _check(gateway_id)
    gateway = session.get(Gateway, gateway_id)
    if gateway is None:
        gateway = Gateway(id=gateway_id, status=ACTIVE, created_at=utcnow())
        session.add(gateway)
        session.flush()
    return gateway


def is_revoked(session: Session, gateway_id: str) -> bool:
    gateway = session.get(Gateway, gateway_id)
    return gateway is not None and gateway.status == REVOKED


def revoke_gateway(session: Session, gateway_id: str, *, actor: str) -> Gateway:
    gateway = ensure_gateway(session, gateway_id)
    if gateway.status != REVOKED:
        gateway.status = REVOKED
        gateway.revoked_at = utcnow()
        session.add(gateway)
        audit.record(session, "gateway.revoked", actor=actor, subject=gateway_id)
        session.flush()
    return gateway
