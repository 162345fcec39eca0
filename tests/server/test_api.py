"""Staff API through httpx's ASGITransport, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from hospital_server.app import create_app
from hospital_server.context import ServerContext, tcp_probe
from hospital_server.models import AuditEvent, Device, EnrollmentCode, Gateway
from hospital_server.settings import Settings
from phd_protocol.enrollment import hash_code
from tests.server.conftest import ADMIN

PATIENT = {"name": "Carol Test", "mrn": "H-1001", "date_of_birth": "1961-07-04"}


def _audit(context: ServerContext, event_type: str) -> list[AuditEvent]:
    with context.sessions() as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.event_type == event_type)))


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "broker": "ok"}
    text = (await client.get("/metrics")).text
    for name in (
        'phd_ingest_envelopes_total{outcome="stored"}',
        'phd_ingest_rejected_total{reason="gateway_revoked"}',
        "phd_ingest_seconds_bucket",
    ):
        assert name in text
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "PHD hospital server"


async def test_readiness_fails_when_the_broker_is_unreachable(
    settings: Settings, context: ServerContext
) -> None:
    # A port nobody listens on: take one from a socket we close at once.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    ctx = ServerContext(
        settings=settings,
        engine=context.engine,
        sessions=context.sessions,
        key_provider=context.key_provider,
        keys=context.keys,
        metrics=context.metrics,
        broker_probe=tcp_probe("127.0.0.1", port, timeout=0.5),
    )
    app = create_app(settings, context=ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["broker"] == "unreachable"
    assert r.json()["database"] == "ok"


@pytest.mark.parametrize(
    ("subscribed", "status", "answer"), [(True, 200, "ok"), (False, 503, "not_subscribed")]
)
async def test_readiness_with_in_process_ingest_workers_waits_for_their_subscription(
    settings: Settings, context: ServerContext, subscribed: bool, status: int, answer: str
) -> None:
    # phd server run --worker: ready only once every worker holds a subscribed session.
    ctx = dataclasses.replace(context, ingest_probe=lambda: subscribed)
    app = create_app(settings, context=ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        r = await c.get("/readyz")
    assert r.status_code == status
    assert r.json()["ingest"] == answer
    assert r.json()["broker"] == "ok"


async def test_readiness_fails_when_the_database_is_unreachable(
    settings: Settings, context: ServerContext, tmp_path: Path
) -> None:
    import socket

    from hospital_server.db import make_engine

    if context.engine.dialect.name == "sqlite":
        url = f"sqlite:///{tmp_path / 'gone' / 'server.db'}"  # its directory does not exist
    else:
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            url = f"postgresql+psycopg://phd@127.0.0.1:{sock.getsockname()[1]}/phd"
    engine = await asyncio.to_thread(make_engine, url)  # not on the event loop
    ctx = ServerContext(
        settings=settings,
        engine=engine,
        sessions=context.sessions,
        key_provider=context.key_provider,
        keys=context.keys,
        metrics=context.metrics,
        broker_probe=lambda: True,
    )
    app = create_app(settings, context=ctx)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://s"
        ) as c:
            r = await c.get("/readyz")
            alive = await c.get("/healthz")  # liveness does not depend on the database
    finally:
        engine.dispose()
    assert r.status_code == 503
    assert r.json() == {"status": "not_ready", "database": "unreachable", "broker": "ok"}
    assert alive.status_code == 200


async def test_staff_endpoints_need_an_admin_bearer_token(
    client: httpx.AsyncClient,
    context: ServerContext,
    clinician_headers: dict[str, str],
) -> None:
    missing = await client.post("/api/v1/patients", json=PATIENT)
    assert missing.status_code == 401
    assert missing.json() == {"detail": "not_authenticated"}
    assert missing.headers["www-authenticate"].startswith("Bearer")
    # HTTP Basic is gone: a correct admin password over Basic is not an authentication.
    basic = await client.post("/api/v1/patients", json=PATIENT, auth=ADMIN)
    assert basic.status_code == 401
    assert basic.json() == {"detail": "not_authenticated"}
    garbage = await client.post(
        "/api/v1/patients", json=PATIENT, headers={"Authorization": "Bearer not.a.token"}
    )
    assert garbage.status_code == 401
    assert garbage.json() == {"detail": "invalid_token"}
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    clinician = await client.post("/api/v1/patients", json=PATIENT, headers=clinician_headers)
    assert clinician.status_code == 403
    assert clinician.json() == {"detail": "role_not_allowed"}
    failed = await asyncio.to_thread(_audit, context, "auth.failed")
    assert [(e.actor, json.loads(e.detail)) for e in failed] == [
        ("unknown", {"reason": "malformed", "via": "bearer", "folded": 0, "summary": False})
    ]
    denied = await asyncio.to_thread(_audit, context, "authz.denied")
    assert [json.loads(e.detail) for e in denied] == [{"role": "clinician", "required": "admin"}]


async def test_patient_consent_device_registration_and_revocation(
    client: httpx.AsyncClient, context: ServerContext, admin_headers: dict[str, str]
) -> None:
    r = await client.post("/api/v1/patients", json=PATIENT, headers=admin_headers)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert set(r.json()) == {"id", "status", "created_at"}  # no identifiers echoed back
    dup = await client.post(
        "/api/v1/patients", json={**PATIENT, "mrn": " h-1001"}, headers=admin_headers
    )
    assert dup.status_code == 409

    for kind, granted in (("collection", True), ("ai_research", True), ("ai_research", False)):
        c = await client.post(
            f"/api/v1/patients/{pid}/consents",
            json={"kind": kind, "granted": granted},
            headers=admin_headers,
        )
        assert c.status_code == 201
    bad = await client.post(
        f"/api/v1/patients/{pid}/consents",
        json={"kind": "marketing", "granted": True},
        headers=admin_headers,
    )
    assert bad.status_code == 422
    history = (await client.get(f"/api/v1/patients/{pid}/consents", headers=admin_headers)).json()
    assert [(h["kind"], h["granted"]) for h in history] == [
        ("collection", True),
        ("ai_research", True),
        ("ai_research", False),
    ]
    assert len(await asyncio.to_thread(_audit, context, "consent.changed")) == 3

    reg = await client.post(
        f"/api/v1/patients/{pid}/devices", json={"kind": "blood_pressure"}, headers=admin_headers
    )
    assert reg.status_code == 201, reg.text
    body = reg.json()
    code = body["enrollment_code"]
    assert len(code.replace("-", "")) == 20
    assert base64.b64decode(body["qr_png_base64"]).startswith(b"\x89PNG\r\n\x1a\n")
    device_id = body["device"]["id"]
    assert body["device"]["status"] == "pending"

    def stored_codes() -> list[str]:
        with context.sessions() as s:
            return [c.code_hash for c in s.exec(select(EnrollmentCode))]

    # Only the hash of the code is at rest.
    assert await asyncio.to_thread(stored_codes) == [hash_code(context.code_pepper, code).hex()]

    listed = (
        await client.get("/api/v1/devices", params={"patient_id": pid}, headers=admin_headers)
    ).json()
    assert [d["id"] for d in listed] == [device_id]

    rev = await client.post(f"/api/v1/devices/{device_id}/revoke", headers=admin_headers)
    assert rev.status_code == 200
    assert rev.json()["status"] == "revoked"
    again = await client.post(f"/api/v1/devices/{device_id}/revoke", headers=admin_headers)
    assert again.status_code == 409
    missing = await client.post("/api/v1/devices/nope/revoke", headers=admin_headers)
    assert missing.status_code == 404

    def device_status() -> str:
        with context.sessions() as s:
            d = s.get(Device, device_id)
            assert d is not None
            return d.status

    assert await asyncio.to_thread(device_status) == "revoked"
    revoked = await asyncio.to_thread(_audit, context, "device.revoked")
    assert [e.subject for e in revoked] == [device_id]
    assert all("Carol" not in e.detail for e in revoked)


async def test_register_device_for_unknown_patient_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    r = await client.post(
        "/api/v1/patients/unknown/devices", json={"kind": "blood_pressure"}, headers=admin_headers
    )
    assert r.status_code == 404


async def test_gateway_revocation_is_recorded_and_audited(
    client: httpx.AsyncClient, context: ServerContext, admin_headers: dict[str, str]
) -> None:
    r = await client.post("/api/v1/gateways/gw-home-7/revoke", headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["status"] == "revoked"
    bad = await client.post("/api/v1/gateways/..%2Fetc/revoke", headers=admin_headers)
    assert bad.status_code in (404, 422)

    def row() -> Gateway | None:
        with context.sessions() as s:
            return s.get(Gateway, "gw-home-7")

    gw = await asyncio.to_thread(row)
    assert gw is not None
    assert gw.status == "revoked"
    events = await asyncio.to_thread(_audit, context, "gateway.revoked")
    assert [(e.subject, json.loads(e.detail)) for e in events] == [("gw-home-7", {})]
