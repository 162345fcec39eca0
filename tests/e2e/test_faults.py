"""Faults during a steady stream through the whole real path; nothing lost, nothing doubled.

One stack for the module, fault after fault, as an operator's bad day would go: six virtual
PHDs (bumble) -> the device agent (in-process) -> `phd gateway run` (child) -> mosquitto with
mutual TLS and dynamic-security ACLs (child) -> `phd server run` with its ingest worker on
SQLite (child). While the agent keeps reading the devices:

1. the gateway is killed with SIGKILL and started again (its outbox survives on disk);
2. the broker is restarted (every MQTT session and in-flight message on it is gone);
3. the server and its ingest worker are killed with SIGKILL and started again (kill -9
   between commit and ack is covered at unit level in tests/server; this is the plain crash);
4. PHDs drop the link mid-transfer: a glucose meter cut during its stored-record download
   (RACP), and a thermometer and a blood pressure monitor cut between live values.

After each fault the stream must go on (more envelopes committed) and, at the next quiet
moment, every envelope sealed so far must be stored exactly once with each of its observations
once (``phd_cli.demo.stats.stored_once``). At the end the demo's full verdict must hold: every
value a virtual device sent was read, sealed and committed exactly once, nothing rejected or
dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from device_agent.agent import Agent
from phd_cli.demo import setup
from phd_cli.demo.fleet import Fleet, enroll_all, make_agent, run_agent, virtual_fleet
from phd_cli.demo.procs import Supervisor, free_port, require_binary
from phd_cli.demo.stack import Stack, UplinkTuning
from phd_cli.demo.staff_login import StaffCredentials, StaffLogin
from phd_cli.demo.stats import Snapshot, collect, settled, stored_once, verdict

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Faster than the demo: a lost batch is resent 3 s after it went unanswered, and a lost
# broker connection is retried within a second.
TUNING = UplinkTuning(
    ack_timeout=3.0, retry_base=0.3, retry_cap=2.0, reconnect_base=0.3, reconnect_cap=1.0
)
GLUCOSE_RECORDS = 12
GLUCOSE_CUT = 5  # the meter drops the link after this many records of a download
PROGRESS = 4  # envelopes that must be committed after a fault before the next one
WITHIN = 60.0  # seconds for the stream to recover after a fault


class Run:
    def __init__(self, stack: Stack, fleet: Fleet, agent: Agent) -> None:
        self.stack = stack
        self.fleet = fleet
        self.agent = agent

    async def snapshot(self) -> Snapshot:
        paths = self.stack.paths
        return await asyncio.to_thread(
            collect,
            self.fleet,
            self.agent,
            database=paths.database,
            outbox=paths.gateway_outbox,
        )

    async def until(
        self, what: str, condition: Callable[[Snapshot], bool], within: float = WITHIN
    ) -> Snapshot:
        deadline = time.monotonic() + within
        while True:
            self.stack.supervisor.check()  # a child that died by itself fails at once
            snapshot = await self.snapshot()
            if condition(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                problems = stored_once(snapshot)
                pytest.fail(f"{what} within {within:.0f} s; {problems}; {snapshot.to_json()}")
            await asyncio.sleep(0.25)

    async def recovered(self, fault: str, committed_before: int) -> int:
        """The stream goes on after ``fault``, then everything sealed is stored once."""
        after = await self.until(
            f"no progress after {fault}",
            lambda s: s.totals()["committed"] >= committed_before + PROGRESS,
        )
        quiet = await self.until(
            f"not every sealed envelope stored exactly once after {fault}",
            lambda s: settled(s) and not stored_once(s),
        )
        assert quiet.totals()["committed"] >= after.totals()["committed"]
        return quiet.totals()["committed"]


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    mosquitto = require_binary("/usr/sbin/mosquitto", package="mosquitto")
    paths = setup.new_run_dir(tmp_path / "runs", tmp_path / "pki")
    ports = setup.Ports(mqtt=free_port(), http=free_port(), gateway_metrics=free_port())
    return Stack(
        paths=paths,
        ports=ports,
        mosquitto=mosquitto,
        supervisor=Supervisor(paths.logs, stop_timeout=5.0),
        tuning=TUNING,
    )


async def test_faults_during_a_steady_stream_lose_and_double_nothing(stack: Stack) -> None:
    try:
        await stack.prepare_pki()
        await stack.start_broker()
        admin = await stack.prepare_database()
        admin_login = StaffLogin(admin)  # one session for the whole test: a TOTP code is good once
        await stack.start_server()
        await stack.start_gateway()
        root_pem = await asyncio.to_thread(stack.layout.root_ca_cert.read_bytes)
        async with virtual_fleet(glucose_records=GLUCOSE_RECORDS) as fleet:
            await enroll_all(
                fleet,
                server_url=stack.api,
                admin=admin,
                login=admin_login,
                root_pem=root_pem,
                agent_home=stack.paths.agent_home,
                verify=stack.trust,
            )
            by_kind = {p.kind: p for p in fleet.phds}
            # The meter's first download is cut mid-transfer from the start: the agent must
            # resume from its record cursor (and never store a record twice).
            glucose = by_kind["glucose"]
            glucose.faults = replace(glucose.faults, disconnect_after=GLUCOSE_CUT)
            agent = make_agent(
                fleet,
                agent_home=stack.paths.agent_home,
                gateway_socket=stack.paths.gateway_socket,
                poll=1.0,
            )
            stop = asyncio.Event()
            agent_task = asyncio.create_task(run_agent(agent, stop))
            run = Run(stack, fleet, agent)
            try:
                first = await run.until(
                    "the stream never started",
                    lambda s: s.totals()["committed"] >= len(fleet.phds),
                )
                committed = first.totals()["committed"]

                # 1. kill -9 the gateway, start it again.
                old = stack.child("gateway")
                assert old is not None
                assert await stack.stop("gateway", signal.SIGKILL) == -signal.SIGKILL
                await asyncio.sleep(1.0)  # the agent meets a dead socket meanwhile
                new = await stack.start_gateway()
                assert new.pid != old.pid
                committed = await run.recovered("the gateway was killed", committed)

                # 2. restart the broker (SIGTERM: sessions and in-flight messages are gone).
                assert await stack.stop("broker", signal.SIGTERM) is not None
                await asyncio.sleep(1.0)
                await stack.start_broker()
                committed = await run.recovered("the broker restarted", committed)

                # 3. kill -9 the server and its ingest worker, start them again.
                assert await stack.stop("server", signal.SIGKILL) == -signal.SIGKILL
                await asyncio.sleep(1.0)
                await stack.start_server()
                committed = await run.recovered("the server was killed", committed)

                # 4. PHDs drop the link between two live values of a session.
                cut = [by_kind["thermometer"], by_kind["blood_pressure"]]
                dropped = {p.address: p.links_dropped for p in cut}
                for phd in cut:
                    phd.faults = replace(phd.faults, disconnect_after=1)
                await run.until(
                    "no PHD dropped a link mid-transfer",
                    lambda _s: all(p.links_dropped > dropped[p.address] for p in cut),
                )
                for phd in cut:
                    phd.faults = replace(phd.faults, disconnect_after=None)
                committed = await run.recovered("links dropped mid-transfer", committed)
            finally:
                stop.set()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(agent_task, 60.0)
            agent_task.result()  # the agent itself never failed
            final = await run.until("the stream did not drain", settled)
            problems = verdict(final)
            assert problems == [], problems
            # The cut download resumed from its cursor: every stored record arrived, once.
            meter = next(d for d in final.devices if d.kind == "glucose")
            assert glucose.sent_total == GLUCOSE_RECORDS
            assert meter.distinct_observations >= GLUCOSE_RECORDS
            assert glucose.links_dropped >= 1
            # The end of the path: a clinician reads every stored reading back as FHIR.
            await _clinician_reads_everything_as_fhir(stack, admin_login, final)
    finally:
        await asyncio.to_thread(stack.supervisor.stop_all)
    assert stack.supervisor.children == []


def _patients_of(database: Path) -> dict[str, str]:
    """device id -> patient id, read from the server's SQLite database (ids only)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT id, patient_id FROM device").fetchall())


async def _clinician_reads_everything_as_fhir(
    stack: Stack, admin: StaffLogin, final: Snapshot
) -> None:
    """Admin creates a clinician and puts them on every patient's care team; the clinician
    logs in (password + TOTP at the token endpoint) and pages through each patient's FHIR
    Observation search over HTTPS: every stored reading comes back once, as a valid R4
    resource of that patient and device."""
    patients = await asyncio.to_thread(_patients_of, stack.paths.database)
    password = secrets.token_urlsafe(18)
    async with httpx.AsyncClient(
        base_url=stack.api, auth=admin, verify=stack.trust, timeout=30.0
    ) as api:
        created = await api.post(
            "/api/v1/users",
            json={"username": "e2e-clinician", "password": password, "role": "clinician"},
        )
        assert created.status_code == 201, created.text
        user = created.json()
        for device in final.devices:
            joined = await api.put(
                f"/api/v1/patients/{patients[device.device_id]}/care-team/{user['id']}"
            )
            assert joined.status_code == 204, joined.text
    clinician = StaffCredentials(
        username="e2e-clinician",
        password=password,
        totp_secret=base64.b32decode(user["totp_secret"]),
    )
    async with httpx.AsyncClient(
        base_url=stack.api, auth=StaffLogin(clinician), verify=stack.trust, timeout=30.0
    ) as fhir:
        for device in final.devices:
            patient_id = patients[device.device_id]
            ids: list[str] = []
            url: str | None = f"/fhir/Observation?patient=Patient/{patient_id}&_count=50"
            while url is not None:
                page = await fhir.get(url)
                assert page.status_code == 200, page.text
                Bundle.model_validate_json(page.content)  # an independent R4 validator
                body = page.json()
                for entry in body.get("entry", []):
                    resource = entry["resource"]
                    assert resource["subject"]["reference"].endswith(f"Patient/{patient_id}")
                    assert resource["device"]["reference"].endswith(f"Device/{device.device_id}")
                    ids.append(resource["id"])
                url = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
            assert len(ids) == len(set(ids)) == device.observations > 0, device.kind
