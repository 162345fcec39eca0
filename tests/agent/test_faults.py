"""Fault injection end to end: RACP resume, pairing and link policy, malformed device bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from device_agent.agent import Agent, AgentConfig
from device_agent.ble import SecurityPolicy
from device_agent.errors import BleFailure, PolicyError
from device_agent.virtual.phds import BloodPressureMonitor, Faults, GlucoseMeter
from tests.agent.conftest import World
from tests.agent.test_virtual_e2e import opened

FAST: dict[str, Any] = {"live_count": 3, "interval": 0.02}


async def test_racp_download_resumes_after_a_disconnect_mid_transfer(world: World) -> None:
    meter = await world.start(
        GlucoseMeter(world.radio, records=12, faults=Faults(disconnect_after=5), **FAST)
    )
    credential = await world.make_credential(meter.address)
    agent = Agent(AgentConfig(home=world.home.root, session_idle=0.3), world.backends)

    first = await agent.session(credential)
    assert first.error == BleFailure.DISCONNECTED  # the meter dropped the link mid-transfer
    assert first.stored_records == 5
    assert credential.racp_next == 6  # cursor moved only past what is spooled

    sessions = 1
    while (credential.racp_next or 0) <= 12 and sessions < 5:
        await agent.session(credential)
        sessions += 1
    assert sessions == 3  # 5 + 5 + 2 records: each later session asked for ">= cursor"

    payloads = await opened(world.hospital, agent, credential)
    sequences = [
        int.from_bytes(r.b[1:3], "little") for p in payloads for r in p.raw if r.uuid == "2A18"
    ]
    assert sorted(sequences) == list(range(1, 13))  # every record exactly once
    assert [p.seq for p in payloads] == sorted(p.seq for p in payloads)
    assert len({p.seq for p in payloads}) == len(payloads)

    # A later connection with nothing new gets "no records found" and spools nothing.
    before = len(payloads)
    report = await agent.session(credential)
    assert report.error is None
    assert report.stored_records == 0
    assert len(await opened(world.hospital, agent, credential)) == before


async def test_pairing_refused_by_the_phd_is_a_policy_error(world: World) -> None:
    phd = await world.start(
        BloodPressureMonitor(world.radio, faults=Faults(refuse_pairing=True), **FAST)
    )
    credential = await world.make_credential(phd.address)
    agent = Agent(AgentConfig(home=world.home.root, session_idle=0.3), world.backends)
    with pytest.raises(PolicyError) as caught:
        await agent.session(credential)
    assert caught.value.reason is BleFailure.PAIRING_FAILED
    assert await asyncio.to_thread(agent.spool.pending) == []
    assert phd.sent_total == 0  # not one reading left the device


async def test_unencrypted_link_is_refused_unless_policy_allows_it(world: World) -> None:
    insecure = Faults(refuse_pairing=True, require_encryption=False)
    phd = await world.start(BloodPressureMonitor(world.radio, faults=insecure, **FAST))
    credential = await world.make_credential(phd.address)

    strict = Agent(AgentConfig(home=world.home.root, session_idle=0.3), world.backends)
    with pytest.raises(PolicyError):
        await strict.session(credential)

    lax_policy = SecurityPolicy(require_encryption=False)
    lax = Agent(
        AgentConfig(home=world.home.root, session_idle=0.3, policy=lax_policy), world.backends
    )
    report = await lax.session(credential)
    assert report.error is None
    payloads = await opened(world.hospital, lax, credential)
    assert payloads
    # The hospital can see the reading crossed an unencrypted link.
    assert {p.phd["encrypted"] for p in payloads} == {"no"}


async def test_malformed_bytes_are_reported_and_do_not_stop_the_session(world: World) -> None:
    phd = await world.start(
        BloodPressureMonitor(world.radio, faults=Faults(malformed_first=1), **FAST)
    )
    credential = await world.make_credential(phd.address)
    agent = Agent(AgentConfig(home=world.home.root, session_idle=0.3), world.backends)
    report = await agent.session(credential)
    assert report.error is None
    assert report.undecodable == 1
    payloads = await opened(world.hospital, agent, credential)
    bpm_raw = [r.b for p in payloads for r in p.raw if r.uuid == "2A35"]
    assert len(bpm_raw) == 3
    assert len(bpm_raw[0]) == 2  # the malformed value still travels, as raw bytes
    bpm_obs = [o for p in payloads for o in p.observations if o.get("char") == "2A35"]
    assert bpm_obs  # the two good readings after it were decoded


async def test_a_broken_credential_does_not_stop_the_other_devices(world: World) -> None:
    good = await world.start(BloodPressureMonitor(world.radio, seed=5, **FAST))
    bad = await world.start(BloodPressureMonitor(world.radio, seed=6, **FAST))
    healthy = await world.make_credential(good.address)
    broken = await world.make_credential(bad.address)
    await asyncio.to_thread(broken.key_path.write_bytes, b"-----BEGIN PRIVATE KEY-----\ngarbage")
    agent = Agent(AgentConfig(home=world.home.root, session_idle=0.3), world.backends)
    await agent.run(asyncio.Event(), once=True)
    assert [r.device_id for r in agent.reports] == [healthy.device_id]
    assert await opened(world.hospital, agent, healthy)
    assert bad.sent_total == 0
