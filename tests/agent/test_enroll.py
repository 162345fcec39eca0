"""Enrollment and renewal against a test-only enrollment endpoint (httpx.MockTransport).

The endpoint here is a stand-in for the server's ``POST /api/v1/enroll`` until that route
lands, but the certificate it returns is issued by the real hospital CA code
(hospital_server.pki.ca) from the agent's real CSR, and the messages are phd_protocol's.
The attacks: a root other than the pinned one, a certificate for someone else's key, a
refused code.
"""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from device_agent.enroll import EnrollClient, needs_renewal
from device_agent.errors import EnrollError, EnrollFailure
from device_agent.store import AgentHome, PhdInfo
from hospital_server.pki.ca import issue_device_certificate
from hospital_server.pki.layout import PkiLayout
from phd_protocol import crypto, enrollment
from phd_protocol.pki import build_device_csr
from tests.agent.conftest import Hospital

CODE = "ABCD-EFGH-JKMN-PQRS-TVWX"
PHD = PhdInfo(
    address="D0:00:00:00:00:10", model="VBP-200", serial="BLO-000001", system_id="00112233445566aa"
)


def _ingest(hospital: Hospital) -> list[dict[str, str]]:
    kid = enrollment.ingest_key_id(hospital.public_raw)
    return [{"kid": kid.hex(), "public_key": hospital.public_raw.hex()}]


def endpoint(
    pki: PkiLayout,
    hospital: Hospital,
    *,
    root_pem: bytes | None = None,
    swap_key: bool = False,
    status: int = 200,
) -> Callable[[httpx.Request], httpx.Response]:
    seen: dict[str, str] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        if status != 200:
            return httpx.Response(status, json={"detail": "code_invalid"})
        body = json.loads(request.content)
        if request.url.path == "/api/v1/enroll":
            req = enrollment.EnrollmentRequest.from_json(request.content)
            assert req.phd.serial == PHD.serial  # the PHD's DIS data reached the server
            device_id = uuid.uuid4()
            csr = req.csr_pem
        else:
            assert request.url.path == "/api/v1/enroll/renew"
            device_id = uuid.UUID(body["device_id"])
            csr = body["csr_pem"].encode()
        if swap_key:
            csr = build_device_csr(crypto.generate_signing_key())
        cert_pem, chain_pem = issue_device_certificate(pki, csr, device_id)
        seen["device_id"] = str(device_id)
        answer = {
            "device_id": str(device_id),
            "certificate_pem": cert_pem.decode(),
            "chain_pem": chain_pem.decode(),
            "root_pem": (root_pem or pki.root_ca_cert.read_bytes()).decode(),
            "ingest_keys": _ingest(hospital),
        }
        return httpx.Response(200, json=answer)

    return handle


async def _client(
    hospital: Hospital, handler: Callable[[httpx.Request], httpx.Response]
) -> EnrollClient:
    root = await asyncio.to_thread(hospital.pki.root_ca_cert.read_bytes)

    async def async_handler(request: httpx.Request) -> httpx.Response:
        # The CA writes files: keep that off the event loop, as the real server does.
        return await asyncio.to_thread(handler, request)

    return EnrollClient(
        "https://hospital.example",
        pinned_root_pem=root,
        transport=httpx.MockTransport(async_handler),
    )


async def test_enroll_stores_a_pinned_credential_with_a_private_key_file(
    hospital: Hospital, agent_home: AgentHome
) -> None:
    client = await _client(hospital, endpoint(hospital.pki, hospital))
    credential = await client.enroll(code=CODE, phd=PHD, home=agent_home)
    mode = stat.S_IMODE((await asyncio.to_thread(credential.key_path.stat)).st_mode)
    assert mode == 0o600
    assert credential.phd.serial == PHD.serial
    keys = await asyncio.to_thread(credential.read_ingest_keys)
    assert keys[0].public_key == hospital.public_raw
    root = await asyncio.to_thread(credential.root_path.read_bytes)
    assert root == await asyncio.to_thread(hospital.pki.root_ca_cert.read_bytes)
    assert str(uuid.UUID(credential.device_id)) == credential.device_id


async def test_enroll_refuses_a_root_other_than_the_pinned_one(
    hospital: Hospital, agent_home: AgentHome, tmp_path: Path
) -> None:
    from tests.pki_fixtures import make_pki

    rogue = await asyncio.to_thread(make_pki, tmp_path / "rogue", gateways=())
    rogue_root = await asyncio.to_thread(rogue.root_ca_cert.read_bytes)
    # A server (or a man in the middle) certifying with another PKI of the same names.
    client = await _client(hospital, endpoint(rogue, hospital, root_pem=rogue_root))
    with pytest.raises(EnrollError) as caught:
        await client.enroll(code=CODE, phd=PHD, home=agent_home)
    assert caught.value.reason is EnrollFailure.UNTRUSTED_CHAIN
    assert await asyncio.to_thread(agent_home.credentials) == []

    # Same attack, but returning our pinned root while certifying under the rogue CA.
    pinned = await asyncio.to_thread(hospital.pki.root_ca_cert.read_bytes)
    client = await _client(hospital, endpoint(rogue, hospital, root_pem=pinned))
    with pytest.raises(EnrollError) as caught:
        await client.enroll(code=CODE, phd=PHD, home=agent_home)
    assert caught.value.reason is EnrollFailure.UNTRUSTED_CHAIN


async def test_enroll_refuses_a_certificate_for_another_key(
    hospital: Hospital, agent_home: AgentHome
) -> None:
    client = await _client(hospital, endpoint(hospital.pki, hospital, swap_key=True))
    with pytest.raises(EnrollError) as caught:
        await client.enroll(code=CODE, phd=PHD, home=agent_home)
    assert caught.value.reason is EnrollFailure.KEY_MISMATCH
    assert await asyncio.to_thread(agent_home.credentials) == []


async def test_refused_code_is_reported_as_refused(
    hospital: Hospital, agent_home: AgentHome
) -> None:
    client = await _client(hospital, endpoint(hospital.pki, hospital, status=403))
    with pytest.raises(EnrollError) as caught:
        await client.enroll(code=CODE, phd=PHD, home=agent_home)
    assert caught.value.reason is EnrollFailure.REFUSED


async def test_plain_http_is_refused_except_on_loopback() -> None:
    with pytest.raises(EnrollError):
        EnrollClient("http://hospital.example", pinned_root_pem=b"")
    with pytest.raises(EnrollError):  # loopback http is allowed, but the root must parse
        EnrollClient("http://127.0.0.1:8000", pinned_root_pem=b"not a certificate")


async def test_renewal_replaces_key_and_certificate_keeping_the_device_id(
    hospital: Hospital, agent_home: AgentHome
) -> None:
    client = await _client(hospital, endpoint(hospital.pki, hospital))
    credential = await client.enroll(code=CODE, phd=PHD, home=agent_home)
    old_key = await asyncio.to_thread(credential.read_key_pem)
    old_cert = await asyncio.to_thread(credential.cert_path.read_bytes)
    await client.renew(credential)
    assert await asyncio.to_thread(credential.read_key_pem) != old_key
    new_cert = await asyncio.to_thread(credential.cert_path.read_bytes)
    assert new_cert != old_cert
    now = datetime.now(UTC)
    assert not needs_renewal(new_cert, now=now)
    assert needs_renewal(new_cert, now=now + timedelta(days=3650))
