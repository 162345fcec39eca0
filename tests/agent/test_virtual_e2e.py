"""End-to-end: the agent's own code, through the real bleak facade, against virtual PHDs.

Every path here crosses a real host stack (bumble): advertising, LE connection, SMP pairing
with LE Secure Connections, ATT discovery, indications and notifications. Envelopes are opened
with the hospital's ingest key and the device signature is verified, so the assertions are
about what the hospital would receive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from device_agent.agent import Agent, AgentConfig
from device_agent.ble import scan
from device_agent.spool import Spool
from device_agent.store import AgentHome, Credential
from device_agent.virtual.phds import (
    BloodPressureMonitor,
    Faults,
    GlucoseMeter,
    HeartRateSensor,
    PulseOximeter,
    Scale,
    Thermometer,
    VirtualPhd,
)
from phd_protocol import cose
from phd_protocol.envelope import Payload, RawRecord, open_envelope
from phd_protocol.pki import certificate_public_key, load_certificate
from tests.agent.conftest import Hospital, World

FAST: dict[str, Any] = {"live_count": 3, "interval": 0.02}


@dataclass(frozen=True)
class Batch:
    """One opened, verified envelope as the hospital sees it."""

    seq: int
    phd: Mapping[str, Any]
    observations: tuple[dict[str, Any], ...]
    raw: tuple[RawRecord, ...]


def _open_all(hospital: Hospital, spool: Spool, credential: Credential) -> list[Batch]:
    cert = load_certificate(credential.cert_path.read_bytes())
    out = []
    for item in spool.pending():
        if item.device_id != credential.device_id:
            continue
        message = open_envelope(item.read(), hospital.ring).message
        cose.verify_sign1(message, certificate_public_key(cert))  # signed by this credential
        payload = Payload.decode(message.payload)
        out.append(Batch(payload.seq, payload.phd, payload.observations(), payload.raw_records()))
    return out


async def opened(hospital: Hospital, agent: Agent, credential: Credential) -> list[Batch]:
    """What the hospital would read from the agent's spool for this credential."""
    return await asyncio.to_thread(_open_all, hospital, agent.spool, credential)


def config(home: AgentHome, **kw: Any) -> AgentConfig:
    return AgentConfig(home=home.root, session_idle=0.3, **kw)


async def test_scan_finds_every_health_service(
    world: World,
) -> None:
    for cls in (
        BloodPressureMonitor,
        GlucoseMeter,
        Thermometer,
        Scale,
        PulseOximeter,
        HeartRateSensor,
    ):
        await world.start(cls(world.radio, **FAST))
    found = await scan(world.backends, duration=0.4)
    assert sorted(k for d in found for k in d.kinds) == sorted(
        ["blood_pressure", "glucose", "thermometer", "weight", "pulse_oximeter", "heart_rate"]
    )
    assert {d.address for d in found} == {p.address for p in world.phds}


@pytest.mark.parametrize(
    ("cls", "char", "unit"),
    [
        (BloodPressureMonitor, "2A35", "mm[Hg]"),
        (Thermometer, "2A1C", "Cel"),
        (Scale, "2A9D", "kg"),
        (PulseOximeter, "2A5E", "%"),
        (HeartRateSensor, "2A37", "/min"),
        (GlucoseMeter, "2A18", "mg/dL"),
    ],
)
async def test_every_device_type_reaches_a_sealed_envelope(
    cls: type[VirtualPhd], char: str, unit: str, world: World
) -> None:
    phd = await world.start(cls(world.radio, **FAST))
    credential = await world.make_credential(phd.address)
    agent = Agent(config(world.home), world.backends)
    report = await agent.session(credential)
    assert report.error is None
    assert report.pairing in {"numeric_comparison", "just_works"}
    payloads = await opened(world.hospital, agent, credential)
    assert payloads, "nothing was spooled"
    assert [p.seq for p in payloads] == sorted({p.seq for p in payloads})
    raw_chars = {r.uuid for p in payloads for r in p.raw}
    assert char in raw_chars
    decoded = [o for p in payloads for o in p.observations if o.get("char") == char]
    assert decoded, f"no observation decoded from {char}"
    assert unit in {o["unit"] for o in decoded}
    phd_info = payloads[0].phd
    assert phd_info["model"] == phd.model
    assert phd_info["serial"] == phd.serial
    assert phd_info["encrypted"] == "yes"
    assert len(phd_info["system_id"]) == 16


async def test_blood_pressure_observations_and_nan_cuff_error(world: World) -> None:
    good = await world.start(BloodPressureMonitor(world.radio, seed=3, **FAST))
    bad = await world.start(
        BloodPressureMonitor(world.radio, seed=4, faults=Faults(cuff_error=True), **FAST)
    )
    agent = Agent(config(world.home), world.backends)
    for phd in (good, bad):
        credential = await world.make_credential(phd.address)
        await agent.session(credential)
        payloads = await opened(world.hospital, agent, credential)
        observations = [o for p in payloads for o in p.observations]
        assert observations
        values: list[Any] = []
        for o in observations:
            values.append(o["value"])
            values.extend(c["value"] for c in o.get("components", []))
        if phd is good:
            assert all(isinstance(v, Decimal) for v in values if v is not None)
        else:
            # The failed measurement travels as the special value, never as a number.
            assert "NaN" in values


async def test_wrong_device_clock_is_corrected_flagged_and_set(world: World) -> None:
    years = timedelta(days=3 * 365)
    phd = await world.start(
        BloodPressureMonitor(world.radio, faults=Faults(clock_offset=-years), **FAST)
    )
    credential = await world.make_credential(phd.address)
    agent = Agent(config(world.home), world.backends)
    before = datetime.now(UTC)
    report = await agent.session(credential)
    assert report.clock_corrected
    assert report.clock_set
    assert report.clock_offset is not None
    assert abs(report.clock_offset - years) < timedelta(minutes=1)
    observations = [
        o for p in await opened(world.hospital, agent, credential) for o in p.observations
    ]
    timed = [o for o in observations if o["time_source"] == "device"]
    assert timed
    for o in timed:
        assert o.get("clock_corrected") is True or "clock_corrected" in o.get("flags", [])
        corrected = datetime.fromisoformat(o["time"])
        original = datetime.fromisoformat(o["device_time"])
        assert abs(corrected - before) < timedelta(minutes=1)
        assert abs((corrected - original) - years) < timedelta(minutes=1)
    # The PHD's clock was set through Current Time Service: the next session needs no fix.
    assert abs(phd.clock_offset) < timedelta(seconds=5)
    again = await agent.session(credential)
    assert not again.clock_corrected
    assert again.pairing == "bonded"  # the second link re-encrypted with the stored key
