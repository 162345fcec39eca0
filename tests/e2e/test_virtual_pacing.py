"""Virtual PHD pacing: two consecutive live readings never share a content id.

Bluetooth time stamps have one-second resolution and the content id hashes the device's own
stamp, so a device that sent two equal values within one device-clock second would have them
stored once. Real PHDs never do that; the virtual ones must not either at their default pacing
(what `phd agent run --virtual` and `phd demo` use). The devices here always measure the same
value, so only the time stamp can tell the readings apart. The accelerated test pacing (below
a second) is shown to collide, so the assertion is one that can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from device_agent.ble import BleBackends, PhdLink, Reading, SecurityPolicy
from device_agent.sealer import observations_for
from device_agent.virtual import firmware as fw
from device_agent.virtual.bleak_backend import bleak_backends
from device_agent.virtual.firmware import Sample
from device_agent.virtual.phds import LIVE_INTERVAL, Scale, Thermometer, VirtualPhd
from device_agent.virtual.radio import VirtualRadio
from phd_cli.cmd_agent import SESSION_IDLE
from phd_cli.main import build_parser

LIVE = 3


class SteadyThermometer(Thermometer):
    """Always 36.6 degC: equal values, so only the device's time stamp differs."""

    def measure(self) -> bytes:
        return fw.temperature(celsius=Sample(Decimal("36.6"), -1), when=self.now(), site=6)


class SteadyScale(Scale):
    def measure(self) -> bytes:
        return fw.weight(
            kilograms=Decimal("70.000"),
            when=self.now(),
            bmi=Decimal("23.7"),
            height_m=Decimal("1.72"),
        )


@pytest.fixture
async def radio() -> AsyncIterator[tuple[VirtualRadio, BleBackends]]:
    radio = VirtualRadio()
    client, scanner = bleak_backends(radio)
    try:
        yield radio, BleBackends(client=client, scanner=scanner)
    finally:
        await radio.close()


async def live_readings(phd: VirtualPhd, backends: BleBackends) -> list[Reading]:
    """Subscribe as the agent does and collect the session's live values."""
    await phd.start()
    readings: list[Reading] = []
    complete = asyncio.Event()

    def sink(reading: Reading) -> None:
        readings.append(reading)
        if len(readings) >= LIVE:
            complete.set()

    link = await PhdLink.open(phd.address, backends, SecurityPolicy())
    try:
        await link.subscribe(sink, lambda: datetime.now(UTC))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), LIVE * (phd.interval + 1.0) + 2.0)
    finally:
        await link.close()
        await phd.stop()
    return readings


def content_ids(readings: list[Reading]) -> list[str]:
    return [
        o.id
        for r in readings
        for o in observations_for(r, device_id="pacing-test", clock_offset=None)
    ]


@pytest.mark.parametrize("cls", [SteadyThermometer, SteadyScale])
async def test_default_pacing_gives_every_reading_its_own_content_id(
    cls: type[VirtualPhd], radio: tuple[VirtualRadio, BleBackends]
) -> None:
    air, backends = radio
    phd = cls(air, live_count=LIVE)  # default pacing, as `phd agent run --virtual`
    assert phd.interval >= 1.0
    readings = await live_readings(phd, backends)
    assert len(readings) == LIVE
    ids = content_ids(readings)
    assert len(ids) >= LIVE  # a scale's reading is weight, BMI and height
    assert len(set(ids)) == len(ids), "two readings would be stored as one"
    gaps = [
        (b.received_at - a.received_at).total_seconds() for a, b in itertools.pairwise(readings)
    ]
    # The agent's session idle timeout must never fall between two values of a session.
    assert all(gap < SESSION_IDLE for gap in gaps), gaps


async def test_accelerated_test_pacing_collides(
    radio: tuple[VirtualRadio, BleBackends],
) -> None:
    """The control: equal values 50 ms apart share device-clock seconds, hence content ids."""
    air, backends = radio
    readings = await live_readings(SteadyThermometer(air, live_count=LIVE, interval=0.05), backends)
    assert len(readings) == LIVE
    ids = content_ids(readings)
    assert len(set(ids)) < len(ids)


def test_agent_cli_waits_longer_than_the_devices_pace() -> None:
    args = build_parser().parse_args(["agent", "run", "--virtual", "--gateway", "/tmp/x.sock"])
    assert args.session_idle == SESSION_IDLE
    assert SESSION_IDLE >= 2 * LIVE_INTERVAL
    custom = build_parser().parse_args(
        ["agent", "run", "--gateway", "/tmp/x.sock", "--session-idle", "5"]
    )
    assert custom.session_idle == 5.0
