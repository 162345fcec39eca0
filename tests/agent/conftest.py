"""Fixtures for the agent tests: a real PKI, credentials, virtual PHDs, a test ingress server.

The ingress server here is test-only and deliberately tiny: it speaks phd_protocol.ingress
exactly as the gateway does (accept after "storing", busy, too large) so the agent's handoff
can be tested without the gateway's outbox. The real gateway is exercised in its own tests and
in the integration tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from device_agent.ble import BleBackends
from device_agent.store import AgentHome, Credential, CredentialFiles, IngestKey, PhdInfo
from device_agent.virtual.bleak_backend import bleak_backends
from device_agent.virtual.phds import VirtualPhd
from device_agent.virtual.radio import VirtualRadio
from hospital_server.pki.ca import issue_device_certificate
from hospital_server.pki.layout import PkiLayout
from phd_protocol import crypto
from phd_protocol.envelope import IngestKey as RingKey
from phd_protocol.envelope import KeyRing
from phd_protocol.ingress import (
    IngressReply,
    IngressStatus,
    RequestReader,
    encode_reply,
)
from phd_protocol.pki import build_device_csr
from tests.pki_fixtures import dev_pki  # noqa: F401  (fixture, used by name)


@dataclass
class Hospital:
    """The ingest key pair the credentials encrypt to, and the PKI that certified them."""

    pki: PkiLayout
    ring: KeyRing
    kid: bytes
    public_raw: bytes


@pytest.fixture(scope="session")
def hospital(dev_pki: PkiLayout) -> Hospital:  # noqa: F811  (fixture injection)
    private = crypto.generate_hpke_key()
    kid = crypto.sha256(crypto.x25519_public_raw(private))[:16]
    ring = KeyRing([RingKey(kid=kid, private_key=private)])
    return Hospital(dev_pki, ring, kid, crypto.x25519_public_raw(private))


MakeCredential = Callable[..., Awaitable[Credential]]


@pytest.fixture
def agent_home(tmp_path: Path) -> AgentHome:
    home = AgentHome(tmp_path / "agent")
    home.ensure()
    return home


@pytest.fixture
def make_credential(agent_home: AgentHome, hospital: Hospital) -> MakeCredential:
    def make_sync(address: str, kind: str) -> Credential:
        device_id = str(uuid.uuid4())
        key = crypto.generate_signing_key()
        cert_pem, chain_pem = issue_device_certificate(
            hospital.pki, build_device_csr(key), uuid.UUID(device_id)
        )
        files = CredentialFiles(
            key_pem=crypto.private_key_pem(key),
            cert_pem=cert_pem,
            chain_pem=chain_pem,
            root_pem=hospital.pki.root_ca_cert.read_bytes(),
            ingest_keys=(IngestKey(kid=hospital.kid, public_key=hospital.public_raw),),
        )
        return agent_home.create_credential(
            device_id=device_id, phd=PhdInfo(address=address, kind=kind), files=files
        )

    async def make(address: str, *, kind: str = "") -> Credential:
        # Issuing writes the CA's files: off the event loop, as the agent does its own I/O.
        return await asyncio.to_thread(make_sync, address, kind)

    return make


@pytest.fixture
async def radio() -> AsyncIterator[VirtualRadio]:
    radio = VirtualRadio()
    yield radio
    await radio.close()


@pytest.fixture
def backends(radio: VirtualRadio) -> BleBackends:
    client, scanner = bleak_backends(radio)
    return BleBackends(client=client, scanner=scanner)


@pytest.fixture
async def phds() -> AsyncIterator[list[VirtualPhd]]:
    started: list[VirtualPhd] = []
    yield started
    for phd in started:
        await phd.stop()


@dataclass
class FakeIngress:
    """A test-only gateway ingress: records accepted envelopes; can be told to be busy."""

    path: Path
    accepted: list[bytes] = field(default_factory=list)
    busy: bool = False
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests = RequestReader()
        try:
            while chunk := await reader.read(65536):
                for envelope in requests.feed(chunk):
                    if self.busy:
                        reply = IngressReply(status=IngressStatus.BUSY, reason="outbox_full")
                    else:
                        self.accepted.append(envelope)
                        reply = IngressReply(status=IngressStatus.ACCEPTED, reason="stored")
                    writer.write(encode_reply(reply))
                    await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.fixture
async def ingress(tmp_path: Path) -> AsyncIterator[FakeIngress]:
    server = FakeIngress(tmp_path / "ingress.sock")
    server.server = await asyncio.start_unix_server(server.handle, path=server.path)
    yield server
    server.server.close()
    await server.server.wait_closed()


@dataclass
class World:
    """Everything an end-to-end agent test needs, as one fixture."""

    radio: VirtualRadio
    backends: BleBackends
    phds: list[VirtualPhd]
    home: AgentHome
    make_credential: MakeCredential
    hospital: Hospital

    async def start(self, phd: VirtualPhd) -> VirtualPhd:
        await phd.start()
        self.phds.append(phd)
        return phd


@pytest.fixture
async def world(
    radio: VirtualRadio,
    agent_home: AgentHome,
    make_credential: MakeCredential,
    hospital: Hospital,
) -> AsyncIterator[World]:
    client, scanner = bleak_backends(radio)
    w = World(radio, BleBackends(client, scanner), [], agent_home, make_credential, hospital)
    yield w
    for phd in w.phds:
        await phd.stop()
