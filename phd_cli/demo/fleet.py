"""The patient side of the demo: six virtual PHDs on bumble and the device agent, in-process.

What it is for: ``Fleet`` starts one virtual PHD of each kind on a bumble radio and gives
bleak the bumble backend (exactly what ``phd agent run --virtual`` does), so the demo can read
each device's own count of values (and of the observations they carry) sent next to the
agent's counts. ``enroll_all`` is the clinic workflow through the real server API as the
bootstrap admin: a synthetic patient per device, collection consent, device registration
(one-time code), then the agent's own enrollment client (key generated locally, CSR, chain
checked against the pinned root) through ``POST /api/v1/enroll``. ``run_agent`` runs the
unchanged :class:`device_agent.agent.Agent`.

What it must never do: print or log patient names or MRNs (they exist only in request bodies
to the server), or bypass the server to create a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from phd_cli.cmd_agent import SESSION_IDLE
from phd_cli.demo.procs import DemoSetupError
from phd_cli.demo.staff_login import StaffCredentials, StaffLogin, StaffLoginError

if TYPE_CHECKING:
    from device_agent.agent import Agent
    from device_agent.ble import BleBackends
    from device_agent.virtual.phds import VirtualPhd

__all__ = [
    "EnrolledPhd",
    "Fleet",
    "enroll_all",
    "enroll_virtual",
    "make_agent",
    "run_agent",
    "virtual_fleet",
]

LIVE_COUNT = 3  # live measurements per session per device (as `phd agent run --virtual`)


@dataclass(frozen=True, slots=True)
class EnrolledPhd:
    device_id: str
    kind: str
    address: str
    patient_id: str = ""  # the synthetic patient it was registered to (an id, not a name)


@dataclass
class Fleet:
    backends: BleBackends
    phds: list[VirtualPhd]
    enrolled: list[EnrolledPhd] = field(default_factory=list)

    def sent(self) -> dict[str, int]:
        """Values each virtual PHD has notified or indicated so far, by device id."""
        by_address = {p.address: p.sent_total for p in self.phds}
        return {e.device_id: by_address.get(e.address, 0) for e in self.enrolled}

    def observations_sent(self) -> dict[str, int]:
        """Observations the values each virtual PHD sent so far carry, by device id: what
        the agent's decoder makes of them (``VirtualPhd.observations_per_value``), each
        stored glucose record counted once however often it is downloaded."""
        by_address = {p.address: p.observations_sent for p in self.phds}
        return {e.device_id: by_address.get(e.address, 0) for e in self.enrolled}


@contextlib.asynccontextmanager
async def virtual_fleet(*, seed: int = 1, glucose_records: int = 20) -> AsyncIterator[Fleet]:
    from device_agent.ble import BleBackends
    from device_agent.virtual.bleak_backend import bleak_backends
    from device_agent.virtual.phds import start_fleet
    from device_agent.virtual.radio import VirtualRadio

    radio = VirtualRadio()
    phds = await start_fleet(
        radio,
        seed=seed,
        # The devices' default pacing (phds.LIVE_INTERVAL): never two stamped values in one
        # device-clock second, exactly as `phd agent run --virtual`.
        live_count=LIVE_COUNT,
        glucose_records=glucose_records,
    )
    client, scanner = bleak_backends(radio)
    try:
        yield Fleet(backends=BleBackends(client=client, scanner=scanner), phds=phds)
    finally:
        for phd in phds:
            await phd.stop()
        await radio.close()


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> dict[str, object]:
    try:
        response = await client.post(path, json=body)
    except StaffLoginError as exc:
        raise DemoSetupError(str(exc), "the admin logs in with password + TOTP code") from exc
    if response.status_code not in (200, 201):
        raise DemoSetupError(
            f"server refused POST {path.split('/')[3]} with HTTP {response.status_code}",
            "read the server log in the run directory",
        )
    data: dict[str, object] = response.json()
    return data


async def enroll_all(
    fleet: Fleet,
    *,
    server_url: str,
    admin: StaffCredentials,
    root_pem: bytes,
    agent_home: Path,
    verify: ssl.SSLContext | bool = True,
    login: StaffLogin | None = None,
) -> list[EnrolledPhd]:
    """Register each virtual PHD to a new synthetic patient and enroll it with its code.

    ``login``: the admin's session to use (and keep: a TOTP code is good once, so a caller
    that calls the API again after this should pass its own and reuse it).
    """
    from device_agent.ble import PhdLink, SecurityPolicy
    from device_agent.enroll import EnrollClient
    from device_agent.store import AgentHome, PhdInfo

    home = AgentHome(agent_home)
    enroll_client = EnrollClient(server_url, pinned_root_pem=root_pem)
    run_tag = secrets.token_hex(3)
    async with httpx.AsyncClient(
        base_url=server_url, auth=login or StaffLogin(admin), timeout=30.0, verify=verify
    ) as api:
        for index, phd in enumerate(fleet.phds, start=1):
            # Synthetic, and never printed: the server encrypts them per patient.
            patient = await _post(
                api,
                "/api/v1/patients",
                {"name": f"Demo Patient {index}", "mrn": f"DEMO-{run_tag}-{index:02d}"},
            )
            patient_id = str(patient["id"])
            await _post(
                api,
                f"/api/v1/patients/{patient_id}/consents",
                {"kind": "collection", "granted": True},
            )
            registered = await _post(
                api, f"/api/v1/patients/{patient_id}/devices", {"kind": phd.kind}
            )
            code = str(registered["enrollment_code"])
            link = await PhdLink.open(phd.address, fleet.backends, SecurityPolicy())
            try:
                info = await link.device_information()
                kinds = ",".join(link.kinds())
            finally:
                await link.close()
            info_fields = {k: v for k, v in info.items() if k in PhdInfo.__dataclass_fields__}
            credential = await enroll_client.enroll(
                code=code,
                phd=PhdInfo(address=phd.address, kind=kinds, **info_fields),
                home=home,
            )
            fleet.enrolled.append(
                EnrolledPhd(
                    device_id=credential.device_id,
                    kind=phd.kind,
                    address=phd.address,
                    patient_id=patient_id,
                )
            )
    return fleet.enrolled


def make_agent(fleet: Fleet, *, agent_home: Path, gateway_socket: Path, poll: float) -> Agent:
    from device_agent.agent import Agent, AgentConfig
    from device_agent.ble import SecurityPolicy

    config = AgentConfig(
        home=agent_home,
        gateway_socket=gateway_socket,
        policy=SecurityPolicy(),
        poll_interval=poll,
        session_idle=SESSION_IDLE,  # the agent CLI's default, above the devices' pacing
        handoff_interval=0.5,
    )
    return Agent(config, fleet.backends)


async def run_agent(agent: Agent, stop: asyncio.Event) -> None:
    """Run the agent until ``stop``; then deliver what is still spooled (sessions finish
    first: the agent never cuts a session short, so every value read is sealed)."""
    from device_agent.store import AgentHome

    lock = AgentHome(agent.config.home).instance_lock()
    await asyncio.to_thread(lock.__enter__)  # mkdir, open and flock: off the event loop
    try:
        await agent.run(stop)
        for _ in range(20):
            report = await agent.deliver()
            if report is None or not report.remaining:
                return
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(lock.__exit__, None, None, None)


async def enroll_virtual(
    *, server_url: str, root: Path, home: Path, admin: StaffCredentials
) -> list[EnrolledPhd]:
    """``phd demo enroll-virtual``: enroll the six virtual PHDs unless ``home`` has them."""
    from device_agent.store import AgentHome
    from device_agent.virtual.phds import DEVICE_CLASSES

    existing = await asyncio.to_thread(AgentHome(home).credentials)
    if len(existing) >= len(DEVICE_CLASSES):
        return []
    if existing:
        raise DemoSetupError(
            f"agent home {home} holds {len(existing)} of {len(DEVICE_CLASSES)} credentials",
            "an earlier enrollment stopped half-way: revoke those devices and use an empty home",
        )
    root_pem = await asyncio.to_thread(root.read_bytes)
    trust = await asyncio.to_thread(ssl.create_default_context, cafile=str(root))
    async with virtual_fleet() as fleet:
        return await enroll_all(
            fleet,
            server_url=server_url,
            admin=admin,
            root_pem=root_pem,
            agent_home=home,
            verify=trust,
        )
