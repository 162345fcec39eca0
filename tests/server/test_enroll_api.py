"""Enrollment, renewal and revocation through the HTTP API (ASGITransport), with a real PKI
and, for gateway revocation, a real mosquitto whose live session must be cut."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import select

from hospital_server.app import create_app
from hospital_server.context import ServerContext, tcp_probe
from hospital_server.ingest.keyring import recipient_keys
from hospital_server.ingest.mqtt import ingest_tls_context
from hospital_server.models import Credential, Device
from hospital_server.pki.layout import PkiLayout
from hospital_server.revocation import PkiBrokerRevocations
from hospital_server.settings import Settings
from phd_protocol import crypto
from phd_protocol.enrollment import (
    EnrollmentRequest,
    EnrollmentResponse,
    PhdInfo,
    make_renewal_request,
)
from phd_protocol.pki import build_device_csr, load_certificate, load_crls, serial_hex
from tests.mosquitto_fixtures import MosquittoBroker, running_broker
from tests.server.conftest import ADMIN, add_staff_user, bearer_headers

PHD = PhdInfo(model="GL-2", serial="SER-778", manufacturer="Acme", system_id="0011223344556677")


@pytest.fixture
def broker(server_pki: PkiLayout, tmp_path: Path) -> Iterator[MosquittoBroker]:
    with running_broker(server_pki, tmp_path / "broker") as b:
        yield b


@pytest.fixture
def pki_context(
    settings: Settings, server_pki: PkiLayout, broker: MosquittoBroker
) -> Iterator[ServerContext]:
    ctx = ServerContext.build(
        settings.model_copy(update={"pki_dir": server_pki.root}),
        broker_probe=tcp_probe("127.0.0.1", broker.port),
        revocations=PkiBrokerRevocations(
            layout=server_pki,
            control=broker.control_settings(),
            broker_pid_file=broker.files.pid_file,
        ),
    )
    add_staff_user(ctx, *ADMIN, role="admin")
    yield ctx
    ctx.close()


@pytest.fixture
async def api(settings: Settings, pki_context: ServerContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, context=pki_context)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://server"
    ) as c:
        yield c


@pytest.fixture
def admin(pki_context: ServerContext) -> dict[str, str]:
    """The admin's bearer header; enrollment requests themselves go without one."""
    return bearer_headers(pki_context, ADMIN[0])


async def _register(api: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, str]:
    p = await api.post("/api/v1/patients", json={"name": "Dan", "mrn": "E-1"}, headers=admin)
    pid = p.json()["id"]
    await api.post(
        f"/api/v1/patients/{pid}/consents",
        json={"kind": "collection", "granted": True},
        headers=admin,
    )
    r = await api.post(f"/api/v1/patients/{pid}/devices", json={"kind": "glucose"}, headers=admin)
    return r.json()["device"]["id"], r.json()["enrollment_code"]


async def test_enroll_then_renew_then_revoke(
    api: httpx.AsyncClient,
    pki_context: ServerContext,
    server_pki: PkiLayout,
    admin: dict[str, str],
) -> None:
    device_id, code = await _register(api, admin)
    key = crypto.generate_signing_key()
    request = EnrollmentRequest(code=code, csr_pem=build_device_csr(key), phd=PHD)

    wrong = EnrollmentRequest(code="0000-0000-0000-0000-0000", csr_pem=request.csr_pem, phd=PHD)
    r = await api.post("/api/v1/enroll", content=wrong.to_json())
    assert (r.status_code, r.json()) == (403, {"reason": "code_invalid"})
    assert (await api.post("/api/v1/enroll", content=b"{")).json() == {"reason": "malformed"}

    r = await api.post("/api/v1/enroll", content=request.to_json())
    assert r.status_code == 200, r.text
    response = EnrollmentResponse.from_json(r.content)
    assert str(response.device_id) == device_id
    keys = await asyncio.to_thread(recipient_keys, server_pki)
    assert [(k.kid, k.public_key) for k in response.ingest_keys] == keys
    assert response.root_pem == await asyncio.to_thread(server_pki.root_ca_cert.read_bytes)

    again = await api.post("/api/v1/enroll", content=request.to_json())
    assert (again.status_code, again.json()) == (403, {"reason": "code_used"})

    def device_row() -> tuple[str, bytes | None, int]:
        with pki_context.sessions() as s:
            d = s.get(Device, device_id)
            assert d is not None
            creds = list(s.exec(select(Credential).where(Credential.device_id == device_id)))
            return d.status, d.info_ct, len(creds)

    status, info_ct, n = await asyncio.to_thread(device_row)
    assert (status, n) == ("enrolled", 1)
    assert info_ct is not None
    assert b"SER-778" not in info_ct  # the device serial is stored encrypted

    renewal = make_renewal_request(
        current_key=key,
        current_certificate=response.certificate,
        new_key=crypto.generate_signing_key(),
        now=datetime.now(UTC),
    )
    r = await api.post("/api/v1/enroll/renew", content=renewal.to_json())
    assert r.status_code == 200, r.text
    renewed = EnrollmentResponse.from_json(r.content)
    assert renewed.certificate_pem != response.certificate_pem
    replay = await api.post("/api/v1/enroll/renew", content=renewal.to_json())
    assert (replay.status_code, replay.json()) == (409, {"reason": "replay"})
    assert (await asyncio.to_thread(device_row))[2] == 2

    r = await api.post(f"/api/v1/devices/{device_id}/revoke", headers=admin)
    assert r.json() == {
        "id": device_id,
        "status": "revoked",
        "certificates_revoked": 2,
        "crl_updated": True,
    }
    crls = load_crls(await asyncio.to_thread(server_pki.crl("device").read_bytes))
    listed = {format(e.serial_number, "x") for crl in crls for e in crl}
    assert {serial_hex(response.certificate), serial_hex(renewed.certificate)} <= listed
    # A revoked credential cannot renew: it must enroll again with a new code.
    late = make_renewal_request(
        current_key=key,
        current_certificate=response.certificate,
        new_key=crypto.generate_signing_key(),
        now=datetime.now(UTC),
    )
    r = await api.post("/api/v1/enroll/renew", content=late.to_json())
    assert (r.status_code, r.json()) == (403, {"reason": "wrong_credential"})


async def test_gateway_revocation_cuts_the_live_session(
    api: httpx.AsyncClient, server_pki: PkiLayout, broker: MosquittoBroker, admin: dict[str, str]
) -> None:
    disconnected = threading.Event()
    connected = threading.Event()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="gw-2", protocol=paho.MQTTv5
    )
    tls = await asyncio.to_thread(
        ingest_tls_context,
        server_pki.ca_bundle,
        server_pki.gateway_chain("gw-2"),
        server_pki.gateway_key("gw-2"),
    )
    client.tls_set_context(tls)
    client.on_connect = lambda *_a: connected.set()
    client.on_disconnect = lambda *_a: disconnected.set()
    await asyncio.to_thread(client.connect, broker.host, broker.port, 30)
    await asyncio.to_thread(client.loop_start)
    try:
        assert await asyncio.to_thread(connected.wait, 10)
        r = await api.post("/api/v1/gateways/gw-2/revoke", headers=admin)
        assert r.status_code == 200
        assert r.json()["status"] == "revoked"
        # Cut within seconds (the requirement is a minute), without restarting the broker.
        assert await asyncio.to_thread(disconnected.wait, 10)
    finally:
        await asyncio.to_thread(client.disconnect)
        await asyncio.to_thread(client.loop_stop)
    crls = load_crls(await asyncio.to_thread(server_pki.crl("gateway").read_bytes))
    revoked = {format(e.serial_number, "x") for crl in crls for e in crl}
    gw_pem = await asyncio.to_thread(server_pki.gateway_cert("gw-2").read_bytes)
    gw_cert = load_certificate(gw_pem)
    assert serial_hex(gw_cert) in revoked
    assert broker.proc is not None
    assert broker.proc.poll() is None  # the broker kept running for everyone else
