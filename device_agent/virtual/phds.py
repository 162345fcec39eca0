"""Virtual personal health devices on bumble: real GATT databases, real pairing, injectable faults.

Each device is a bumble peripheral on a :class:`~device_agent.virtual.radio.VirtualRadio` with
its health service, Device Information (0x180A) and Current Time (0x1805). Security follows the
service specifications: the measurement CCCDs, the RACP and the Current Time write require an
encrypted link (``WRITE_REQUIRES_ENCRYPTION``), so the agent must pair (LE Secure Connections)
before it can subscribe. Values come from a seeded RNG so runs are reproducible, and stored
glucose records are a pure function of the seed so a restarted process offers the same records.

Faults (:class:`Faults`): a cuff error sent as SFLOAT NaN, a device clock that is years off,
a link dropped mid-transfer, malformed (truncated) measurement bytes, refused pairing, and a
device that requires no security at all. This module must never be imported by the agent's
own code (only by the CLI wiring, the demo and tests).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ClassVar

from bumble import att
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import (
    GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
    Characteristic,
    Descriptor,
    Service,
)
from bumble.gatt_server import Server as GattServer
from bumble.pairing import PairingConfig, PairingDelegate

from device_agent.virtual import firmware as fw
from device_agent.virtual.firmware import Sample
from device_agent.virtual.radio import VirtualRadio, alive

__all__ = [
    "LIVE_INTERVAL",
    "BloodPressureMonitor",
    "Faults",
    "GlucoseMeter",
    "HeartRateSensor",
    "PulseOximeter",
    "Scale",
    "Thermometer",
    "VirtualPhd",
    "start_fleet",
]

logger = logging.getLogger(__name__)

P = Characteristic.Properties
A = att.Attribute.Permissions

# Live measurements are at least this far apart by default, and (at any interval of one second
# or more) never two stamped within the same device-clock second: Bluetooth time stamps have
# one-second resolution (GSS "Date Time"), a real PHD never takes two measurements in one
# second, and two equal values with the same stamp are, by content id, the same reading (the
# hospital would store them once). Intervals below a second are a test-only acceleration. An
# agent reading these devices needs a session idle timeout well above this (phd_cli.cmd_agent
# SESSION_IDLE), or its sessions end between two values.
LIVE_INTERVAL = 1.0
_CLOCK_SET_BACK = 3.0  # seconds: a device clock moved back further than this was set

# Records stored on a virtual glucose meter are timestamped from this device-clock epoch, so
# that the same seed yields byte-identical records in every process.
_RECORD_EPOCH = datetime(2025, 1, 6, 7, 30)  # noqa: DTZ001 - device clocks carry no zone (GSS 3.70)


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    cuff_error: bool = False  # BPM: systolic/diastolic/MAP sent as SFLOAT NaN
    clock_offset: timedelta = timedelta(0)  # the device clock runs this far from true time
    disconnect_after: int | None = None  # drop the link after this many records in a transfer
    malformed_first: int = 0  # the first N measurements are truncated to 2 bytes
    refuse_pairing: bool = False
    require_encryption: bool = True


@dataclass(slots=True)
class _Link:
    """Per-connection state kept by a virtual device."""

    connection: Connection
    sent: int = 0
    procedure: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class _PhdDelegate(PairingDelegate):
    def __init__(self, *, refuse: bool, io: PairingDelegate.IoCapability) -> None:
        super().__init__(io_capability=io)
        self._refuse = refuse

    async def accept(self) -> bool:
        return not self._refuse

    async def confirm(self, auto: bool = False) -> bool:
        return not self._refuse

    async def compare_numbers(self, number: int, digits: int) -> bool:
        return not self._refuse


class VirtualPhd(abc.ABC):
    """Base of the six virtual devices: advertising, DIS, CTS, pairing, faults, streaming."""

    kind: ClassVar[str]
    service_uuid: ClassVar[int]
    model: ClassVar[str]
    has_display: ClassVar[bool] = False
    cts_writable: ClassVar[bool] = True
    # Observations one value of each characteristic (16-bit UUID) becomes once the agent
    # decodes it (phd_protocol.gatt ``to_observations``): what the hospital stores for it.
    # Characteristics not listed (glucose context, RACP, clocks) carry none of their own.
    observations_per_value: ClassVar[Mapping[int, int]] = MappingProxyType({})

    def __init__(
        self,
        radio: VirtualRadio,
        *,
        address: str | None = None,
        serial: str | None = None,
        seed: int = 1,
        faults: Faults | None = None,
        live_count: int = 3,
        interval: float = LIVE_INTERVAL,
    ) -> None:
        self.radio = radio
        self.address = address or radio.next_address()
        self.seed = seed
        self.rng = random.Random(seed)  # noqa: S311 - simulated physiology, not cryptography
        self.serial = serial or f"{self.kind[:3].upper()}-{seed:06d}"
        self.faults = faults or Faults()
        self.live_count = live_count
        self.interval = interval
        self.clock_offset = self.faults.clock_offset
        self.device: Device | None = None
        self.links: dict[Connection, _Link] = {}
        self.sent_total = 0
        self.observations_sent = 0  # observations the values sent so far carry (see count())
        self.links_dropped = 0  # links this device dropped mid-transfer (Faults.disconnect_after)
        self._measurements_made = 0
        self._live: Characteristic[bytes] | None = None
        self._last_stamp: datetime | None = None  # device-clock second of the last live value

    # ------------------------------------------------------------------ clock
    def now(self) -> datetime:
        """The device's wall clock: naive local time, possibly wrong (Faults.clock_offset)."""
        return datetime.now(UTC).replace(tzinfo=None) + self.clock_offset

    # ------------------------------------------------------------------ GATT building
    def secured_char(
        self, uuid16: int, properties: Characteristic.Properties, value: bytes = b""
    ) -> Characteristic[bytes]:
        """A characteristic whose CCCD write needs encryption (BLS 3.1.1.1, GLS 3.1 etc.)."""
        characteristic: Characteristic[bytes] = Characteristic(
            UUID.from_16_bits(uuid16), properties, A.READABLE, value
        )
        if properties & (P.NOTIFY | P.INDICATE):
            write_perm = A.WRITEABLE | (
                A.WRITE_REQUIRES_ENCRYPTION if self.faults.require_encryption else A(0)
            )
            characteristic.descriptors = [
                Descriptor(
                    GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                    A.READABLE | write_perm,
                    att.AttributeValueV2(
                        read=lambda bearer, c=characteristic: self._server().read_cccd(bearer, c),
                        write=lambda bearer, v, c=characteristic: self._server().write_cccd(
                            bearer, c, v
                        ),
                    ),
                )
            ]
        return characteristic

    def _server(self) -> GattServer:
        assert self.device is not None  # only called by bumble after start()
        return self.device.gatt_server

    def device_information(self) -> Service:
        def text(uuid16: int, value: str) -> Characteristic[bytes]:
            return Characteristic(UUID.from_16_bits(uuid16), P.READ, A.READABLE, value.encode())

        manufacturer_id = int.from_bytes(self.serial.encode()[-5:].rjust(5, b"\0"), "big")
        return Service(
            UUID.from_16_bits(0x180A),
            [
                text(0x2A29, "Virtual Medical Devices"),
                text(0x2A24, self.model),
                text(0x2A25, self.serial),
                text(0x2A26, "1.4.2"),
                Characteristic(
                    UUID.from_16_bits(0x2A23),
                    P.READ,
                    A.READABLE,
                    fw.system_id(manufacturer_id, 0x00A0B1),
                ),
            ],
        )

    def current_time_service(self) -> Service:
        def read(_connection: Connection | None) -> bytes:
            return fw.current_time(self.now())

        def write(_connection: Connection | None, value: bytes) -> None:
            if len(value) != 10:
                raise att.ATT_Error(att.ATT_INVALID_ATTRIBUTE_LENGTH_ERROR)
            year, month, day, hour, minute, second = struct.unpack_from("<HBBBBB", value)
            try:
                written = datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 - device local time
            except ValueError as exc:  # CTS 3.1.2.1: out-of-range fields are rejected
                raise att.ATT_Error(0x80) from exc  # Data field ignored (CTS 3.1.3)
            self.clock_offset = written - datetime.now(UTC).replace(tzinfo=None)

        properties = P.READ | P.NOTIFY | (P.WRITE if self.cts_writable else P(0))
        permissions = A.READABLE | (
            A.WRITEABLE | A.WRITE_REQUIRES_ENCRYPTION if self.cts_writable else A(0)
        )
        characteristic: Characteristic[bytes] = Characteristic(
            UUID.from_16_bits(0x2A2B),
            properties,
            permissions,
            att.AttributeValue(read=read, write=write if self.cts_writable else None),
        )
        return Service(UUID.from_16_bits(0x1805), [characteristic])

    @abc.abstractmethod
    def services(self) -> Sequence[Service]:
        """The device's GATT services besides Device Information and Current Time."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        device = await self.radio.new_device(f"{self.model}", self.address)
        self.device = device
        io = (
            PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_YES_NO_INPUT
            if self.has_display
            else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
        )
        device.pairing_config_factory = lambda _c: PairingConfig(
            sc=True,
            mitm=self.has_display,
            bonding=True,
            delegate=_PhdDelegate(refuse=self.faults.refuse_pairing, io=io),
        )
        for service in (*self.services(), self.device_information(), self.current_time_service()):
            device.add_service(service)
        device.on(device.EVENT_CONNECTION, self._on_connection)
        device.advertising_data = bytes(
            AdvertisingData(
                [
                    (AdvertisingData.FLAGS, bytes([0x06])),  # LE General Discoverable, no BR/EDR
                    (
                        AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                        struct.pack("<H", self.service_uuid),
                    ),
                    (AdvertisingData.COMPLETE_LOCAL_NAME, self.model.encode()),
                ]
            )
        )
        # 100 ms advertising keeps connection set-up quick without flooding the loop.
        await device.start_advertising(
            auto_restart=True, advertising_interval_min=100, advertising_interval_max=100
        )

    async def stop(self) -> None:
        device = self.device
        if device is None:
            return
        for link in list(self.links.values()):
            self._cancel(link)
        # Teardown is best effort: the central may already be gone or the link half-closed,
        # and a virtual device must never fail the test or demo that is shutting it down.
        with contextlib.suppress(Exception):
            await device.stop_advertising()
        for connection in list(device.connections.values()):
            with contextlib.suppress(Exception):
                await connection.disconnect()
        with contextlib.suppress(Exception):
            await device.power_off()

    def _cancel(self, link: _Link) -> None:
        for task in [*link.tasks, link.procedure]:
            if task is not None:
                task.cancel()

    def _on_connection(self, connection: Connection) -> None:
        link = _Link(connection)
        self.links[connection] = link

        def gone(_reason: int) -> None:
            self._cancel(link)
            self.links.pop(connection, None)

        connection.on(connection.EVENT_DISCONNECTION, gone)

    def spawn(self, connection: Connection, work: Callable[[_Link], object]) -> None:
        link = self.links.get(connection)
        if link is None:
            return
        coroutine = work(link)
        assert asyncio.iscoroutine(coroutine)
        link.tasks.append(asyncio.get_running_loop().create_task(coroutine))

    def subscribed(self, connection: Connection, characteristic: Characteristic[bytes]) -> bool:
        assert self.device is not None
        cccd = self.device.gatt_server.subscribers.get(connection, {}).get(characteristic.handle)
        return bool(cccd) and cccd != b"\x00\x00"

    async def send(
        self,
        link: _Link,
        characteristic: Characteristic[bytes],
        value: bytes,
        *,
        repeat: bool = False,
    ) -> bool:
        """Notify or indicate one value on one link; False once the link is gone.

        Applies the link-drop fault: after ``disconnect_after`` values the device drops the
        link, as a PHD walking out of range mid-transfer does. ``repeat``: the value is a
        reading this device sent before (a stored record downloaded again), so its
        observations are not counted a second time.
        """
        assert self.device is not None
        limit = self.faults.disconnect_after
        if not alive(link.connection):
            return False
        if limit is not None and link.sent >= limit:
            self.links_dropped += 1
            await link.connection.disconnect()
            return False
        if characteristic.properties & P.INDICATE:
            await self.device.indicate_subscriber(link.connection, characteristic, value)
        else:
            await self.device.notify_subscriber(link.connection, characteristic, value)
        link.sent += 1
        self.sent_total += 1
        if not repeat:
            self.count(characteristic)
        return True

    def count(self, characteristic: Characteristic[bytes]) -> None:
        """Count the observations of one value sent on ``characteristic``.

        A value the ``malformed_first`` fault truncated still counts: a measurement left the
        device, and the agent's failure to decode it is a loss the demo's verdict must see.
        """
        uuid16 = int.from_bytes(characteristic.uuid.to_bytes(), "little")
        self.observations_sent += self.observations_per_value.get(uuid16, 0)

    def maybe_malformed(self, value: bytes) -> bytes:
        self._measurements_made += 1
        if self._measurements_made <= self.faults.malformed_first:
            return value[:2]
        return value

    # ------------------------------------------------------------------ live streams
    def live_characteristic(self, characteristic: Characteristic[bytes]) -> Characteristic[bytes]:
        """Stream ``live_count`` measurements once the agent subscribes to this characteristic."""

        def on_subscription(bearer: object, notify: bool, indicate: bool) -> None:
            if (notify or indicate) and isinstance(bearer, Connection):
                self.spawn(bearer, self._stream)

        characteristic.on(characteristic.EVENT_SUBSCRIPTION, on_subscription)
        self._live = characteristic
        return characteristic

    async def _stream(self, link: _Link) -> None:
        assert self._live is not None
        for _ in range(self.live_count):
            await asyncio.sleep(self.interval)
            await self._next_device_second()
            value = self.maybe_malformed(self.measure())
            # Taken after measuring: if the second turned meanwhile, the next value waits one
            # second more than needed, never less.
            self._last_stamp = self.now().replace(microsecond=0)
            if not await self.send(link, self._live, value):
                return

    async def _next_device_second(self) -> None:
        """Wait until the device clock shows a later whole second than the last live value.

        Only at realistic pacing (``interval`` of a second or more). A clock the agent set
        backwards (Current Time Service) by more than a few seconds starts afresh: its new
        stamps cannot meet the old ones.
        """
        if self.interval < LIVE_INTERVAL or self._last_stamp is None:
            return
        next_second = self._last_stamp + timedelta(seconds=1)
        while (now := self.now()) < next_second:
            if now < self._last_stamp - timedelta(seconds=_CLOCK_SET_BACK):
                return
            await asyncio.sleep((next_second - now).total_seconds() + 0.001)

    @abc.abstractmethod
    def measure(self) -> bytes:
        """One live measurement, encoded as the device sends it."""


def _gauss(rng: random.Random, mean: float, sd: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, rng.gauss(mean, sd)))


class BloodPressureMonitor(VirtualPhd):
    kind = "blood_pressure"
    service_uuid = 0x1810
    model = "VBP-200"
    has_display = True
    # A measurement: blood pressure (systolic, diastolic, mean as components) and pulse rate;
    # an intermediate cuff pressure: the cuff pressure.
    observations_per_value = MappingProxyType({0x2A35: 2, 0x2A36: 1})

    def services(self) -> Sequence[Service]:
        self.bpm = self.live_characteristic(self.secured_char(0x2A35, P.INDICATE))
        self.icp = self.secured_char(0x2A36, P.NOTIFY)
        # BP Feature: body movement, cuff fit, irregular pulse detection (BLS 3.3).
        feature = Characteristic(
            UUID.from_16_bits(0x2A49), P.READ, A.READABLE, struct.pack("<H", 0x0007)
        )
        return [Service(UUID.from_16_bits(0x1810), [self.bpm, self.icp, feature])]

    async def _stream(self, link: _Link) -> None:
        # A cuff inflates (intermediate cuff pressure), then reports the result. Give the
        # agent one interval to finish subscribing to every characteristic first.
        await asyncio.sleep(self.interval)
        if self.subscribed(link.connection, self.icp):
            for pressure in (40, 90, 140):
                await asyncio.sleep(self.interval / 4)
                nan = Sample(None, 0)
                await self.device_send_icp(link, Sample(Decimal(pressure), 0), nan)
        await super()._stream(link)

    async def device_send_icp(self, link: _Link, cuff: Sample, nan: Sample) -> None:
        value = fw.bp_measurement(systolic=cuff, diastolic=nan, mean=nan, when=None, pulse=None)
        assert self.device is not None
        if not alive(link.connection):
            return  # the link is gone: nothing leaves the device
        await self.device.notify_subscriber(link.connection, self.icp, value)
        self.count(self.icp)

    def measure(self) -> bytes:
        rng = self.rng
        systolic = round(_gauss(rng, 124, 12, 85, 200))
        diastolic = round(_gauss(rng, 79, 8, 45, systolic - 20))
        mean = round(diastolic + (systolic - diastolic) / 3)
        pulse = round(_gauss(rng, 72, 9, 40, 160))
        if self.faults.cuff_error:
            nan = Sample(None, 0)
            # BLS 3.1.1.5: measurement status bit 1 (cuff fit) flags the failed reading.
            return fw.bp_measurement(
                systolic=nan, diastolic=nan, mean=nan, when=self.now(), pulse=nan, status=0x0002
            )
        return fw.bp_measurement(
            systolic=Sample(Decimal(systolic), 0),
            diastolic=Sample(Decimal(diastolic), 0),
            mean=Sample(Decimal(mean), 0),
            when=self.now(),
            pulse=Sample(Decimal(pulse), 0),
            status=0,
        )


class Thermometer(VirtualPhd):
    kind = "thermometer"
    service_uuid = 0x1809
    model = "VTH-10"
    observations_per_value = MappingProxyType({0x2A1C: 1})

    def services(self) -> Sequence[Service]:
        measurement = self.live_characteristic(self.secured_char(0x2A1C, P.INDICATE))
        site = Characteristic(UUID.from_16_bits(0x2A1D), P.READ, A.READABLE, bytes([6]))  # mouth
        return [Service(UUID.from_16_bits(0x1809), [measurement, site])]

    def measure(self) -> bytes:
        celsius = Decimal(round(_gauss(self.rng, 36.8, 0.35, 35.0, 41.5), 1))
        return fw.temperature(celsius=Sample(celsius, -1), when=self.now(), site=6)


class Scale(VirtualPhd):
    kind = "weight"
    service_uuid = 0x181D
    model = "VWS-5"
    has_display = True
    observations_per_value = MappingProxyType({0x2A9D: 3})  # weight, BMI, height

    def services(self) -> Sequence[Service]:
        measurement = self.live_characteristic(self.secured_char(0x2A9D, P.INDICATE))
        # Weight Scale Feature (WSS 3.2): timestamp, BMI, 0.005 kg and 0.001 m resolutions.
        feature = Characteristic(
            UUID.from_16_bits(0x2A9E), P.READ, A.READABLE, struct.pack("<I", 0x0000_00B2 | 0x1)
        )
        return [Service(UUID.from_16_bits(0x181D), [measurement, feature])]

    def measure(self) -> bytes:
        height = Decimal("1.720")
        kilograms = Decimal(round(_gauss(self.rng, 78.0, 0.6, 40, 200) / 0.005)) * Decimal("0.005")
        bmi = (kilograms / (height * height)).quantize(Decimal("0.1"))
        return fw.weight(kilograms=kilograms, when=self.now(), bmi=bmi, height_m=height)


class HeartRateSensor(VirtualPhd):
    kind = "heart_rate"
    service_uuid = 0x180D
    model = "VHR-1"
    cts_writable = False  # a chest strap has no clock worth setting (HRS has no time fields)
    # Heart rate, and the RR intervals (one observation with a component per interval).
    observations_per_value = MappingProxyType({0x2A37: 2})

    def services(self) -> Sequence[Service]:
        measurement = self.live_characteristic(self.secured_char(0x2A37, P.NOTIFY))
        location = Characteristic(UUID.from_16_bits(0x2A38), P.READ, A.READABLE, bytes([1]))
        return [Service(UUID.from_16_bits(0x180D), [measurement, location])]

    def measure(self) -> bytes:
        bpm = round(_gauss(self.rng, 68, 6, 35, 200))
        rr = round(60 / bpm * 1024)
        return fw.heart_rate(bpm=bpm, rr_1024=[rr], contact=True)


class PulseOximeter(VirtualPhd):
    kind = "pulse_oximeter"
    service_uuid = 0x1822
    model = "VOX-3"
    has_display = True
    observations_per_value = MappingProxyType({0x2A5E: 2, 0x2A5F: 2})  # SpO2 and pulse rate, each

    def services(self) -> Sequence[Service]:
        self.spot = self.live_characteristic(self.secured_char(0x2A5E, P.INDICATE))
        self.continuous = self.secured_char(0x2A5F, P.NOTIFY)
        features = Characteristic(
            UUID.from_16_bits(0x2A60), P.READ, A.READABLE, struct.pack("<H", 0x0000)
        )
        return [Service(UUID.from_16_bits(0x1822), [self.spot, self.continuous, features])]

    def _pair(self) -> tuple[Sample, Sample]:
        spo2 = round(_gauss(self.rng, 97, 1.2, 80, 100))
        pulse = round(_gauss(self.rng, 70, 7, 40, 180))
        return Sample(Decimal(spo2), 0), Sample(Decimal(pulse), 0)

    async def _stream(self, link: _Link) -> None:
        await asyncio.sleep(self.interval)
        if self.subscribed(link.connection, self.continuous):
            for _ in range(self.live_count):
                await asyncio.sleep(self.interval / 2)
                spo2, pulse = self._pair()
                value = fw.plx_continuous(spo2=spo2, pulse=pulse)
                if not await self.send(link, self.continuous, value):
                    return
        await super()._stream(link)

    def measure(self) -> bytes:
        spo2, pulse = self._pair()
        return fw.plx_spot_check(spo2=spo2, pulse=pulse, when=self.now())


@dataclass(frozen=True, slots=True)
class StoredRecord:
    sequence: int
    base_time: datetime
    mg_dl: int
    meal: int


# RACP op codes, operators and response codes (GLS 3.108, Tables 3.x).
_REPORT, _DELETE, _ABORT, _COUNT = 0x01, 0x02, 0x03, 0x04
_OP_NULL, _OP_ALL, _OP_GE = 0x00, 0x01, 0x03
_SUCCESS, _NOT_SUPPORTED, _INVALID_OPERATOR, _OPERATOR_NOT_SUPPORTED = 1, 2, 3, 4
_INVALID_OPERAND, _NO_RECORDS = 5, 6
_FILTER_SEQUENCE = 0x01
_CCCD_IMPROPER = 0xFD  # ATT error (CSS Part B 1.2)
_IN_PROGRESS = 0xFE


class GlucoseMeter(VirtualPhd):
    """Glucose meter with stored records downloaded through the Record Access Control Point."""

    kind = "glucose"
    service_uuid = 0x1808
    model = "VGM-7"
    has_display = True
    # The concentration; the context's meal becomes a flag of it (no observation of its own).
    observations_per_value = MappingProxyType({0x2A18: 1})

    def __init__(
        self,
        radio: VirtualRadio,
        *,
        address: str | None = None,
        serial: str | None = None,
        seed: int = 1,
        faults: Faults | None = None,
        live_count: int = 3,
        interval: float = LIVE_INTERVAL,
        records: int = 20,
        record_interval: float = 0.0,
    ) -> None:
        super().__init__(
            radio,
            address=address,
            serial=serial,
            seed=seed,
            faults=faults,
            live_count=live_count,
            interval=interval,
        )
        rng = random.Random(self.seed * 7919)  # noqa: S311 - simulated physiology
        self.records: list[StoredRecord] = [
            StoredRecord(
                sequence=i,
                base_time=_RECORD_EPOCH + self.faults.clock_offset + timedelta(hours=8 * i),
                mg_dl=round(_gauss(rng, 118, 25, 40, 400)),
                meal=rng.choice((1, 2, 3)),
            )
            for i in range(1, records + 1)
        ]
        self.record_interval = record_interval
        self._sequences_sent: set[int] = set()  # records that left the device at least once

    def services(self) -> Sequence[Service]:
        self.measurement = self.secured_char(0x2A18, P.NOTIFY)
        self.context = self.secured_char(0x2A34, P.NOTIFY)
        feature = Characteristic(
            UUID.from_16_bits(0x2A51), P.READ, A.READABLE, struct.pack("<H", 0x0400)
        )

        def write_racp(connection: Connection | None, value: bytes) -> None:
            if connection is None:
                return
            self._racp_write(connection, value)

        racp_permissions = A.WRITEABLE | (
            A.WRITE_REQUIRES_ENCRYPTION if self.faults.require_encryption else A(0)
        )
        self.racp = self.secured_char(0x2A52, P.WRITE | P.INDICATE)
        self.racp.permissions = racp_permissions
        self.racp.value = att.AttributeValue(write=write_racp)
        return [
            Service(UUID.from_16_bits(0x1808), [self.measurement, self.context, feature, self.racp])
        ]

    def _racp_write(self, connection: Connection, value: bytes) -> None:
        link = self.links.get(connection)
        if link is None:
            return
        if not self.subscribed(connection, self.racp):
            raise att.ATT_Error(_CCCD_IMPROPER)
        if len(value) < 2:
            self.spawn(
                connection, lambda lk: self._respond(lk, value[:1] or b"\0", _INVALID_OPERAND)
            )
            return
        opcode = value[0]
        if opcode == _ABORT:
            # GLS 3.108.4.4: abort stops any running procedure and answers Success.
            if link.procedure is not None:
                link.procedure.cancel()
            self.spawn(connection, lambda lk: self._respond(lk, value, _SUCCESS))
            return
        if link.procedure is not None and not link.procedure.done():
            raise att.ATT_Error(_IN_PROGRESS)
        link.procedure = asyncio.get_running_loop().create_task(self._procedure(link, value))

    async def _respond(self, link: _Link, request: bytes, code: int) -> None:
        assert self.device is not None
        await self.device.indicate_subscriber(
            link.connection, self.racp, fw.racp_response(request[0], code)
        )

    def _select(self, operator: int, operand: bytes) -> list[StoredRecord] | int:
        """Records selected by an RACP operator, or the response code refusing it."""
        if operator == _OP_ALL:
            return list(self.records) if not operand else _INVALID_OPERAND
        if operator == _OP_GE:
            if len(operand) != 3 or operand[0] != _FILTER_SEQUENCE:
                return _INVALID_OPERAND
            (first,) = struct.unpack_from("<H", operand, 1)
            return [r for r in self.records if r.sequence >= first]
        if operator == _OP_NULL:
            return _INVALID_OPERATOR
        return _OPERATOR_NOT_SUPPORTED

    async def _procedure(self, link: _Link, request: bytes) -> None:
        assert self.device is not None
        opcode, operator, operand = request[0], request[1], request[2:]
        if opcode not in (_REPORT, _DELETE, _COUNT):
            await self._respond(link, request, _NOT_SUPPORTED)
            return
        selected = self._select(operator, operand)
        if isinstance(selected, int):
            await self._respond(link, request, selected)
            return
        if opcode == _COUNT:
            await self.device.indicate_subscriber(
                link.connection, self.racp, fw.racp_number_of_records(len(selected))
            )
            return
        if not selected:
            await self._respond(link, request, _NO_RECORDS)
            return
        if opcode == _DELETE:
            gone = {r.sequence for r in selected}
            self.records = [r for r in self.records if r.sequence not in gone]
            await self._respond(link, request, _SUCCESS)
            return
        for record in selected:
            if self.record_interval:
                await asyncio.sleep(self.record_interval)
            # GLS 3.106: concentration in kg/L; 1 mg/dL = 1e-5 kg/L.
            measurement = fw.glucose_measurement(
                sequence=record.sequence,
                base_time=record.base_time,
                concentration=Sample(Decimal(record.mg_dl) * Decimal("1e-5"), -5),
            )
            again = record.sequence in self._sequences_sent
            value = self.maybe_malformed(measurement)
            if not await self.send(link, self.measurement, value, repeat=again):
                return
            self._sequences_sent.add(record.sequence)
            await self.device.notify_subscriber(
                link.connection,
                self.context,
                fw.glucose_context(sequence=record.sequence, meal=record.meal),
            )
        await self._respond(link, request, _SUCCESS)

    def measure(self) -> bytes:  # pragma: no cover - never called: no live characteristic
        raise TypeError("the glucose meter reports stored records through RACP only")


DEVICE_CLASSES: tuple[type[VirtualPhd], ...] = (
    BloodPressureMonitor,
    GlucoseMeter,
    Thermometer,
    Scale,
    PulseOximeter,
    HeartRateSensor,
)


async def start_fleet(
    radio: VirtualRadio,
    *,
    seed: int = 1,
    faults: dict[str, Faults] | None = None,
    live_count: int = 3,
    interval: float = LIVE_INTERVAL,
    glucose_records: int = 20,
    record_interval: float = 0.0,
) -> list[VirtualPhd]:
    """Start one device of each of the six kinds on ``radio``; ``faults`` is keyed by kind.

    Started in :data:`DEVICE_CLASSES` order, so on a fresh radio the addresses are
    D0:00:00:00:00:10 (blood pressure) to :15 (heart rate).
    """
    fleet: list[VirtualPhd] = []
    for index, cls in enumerate(DEVICE_CLASSES):
        options: dict[str, Any] = {
            "seed": seed * 100 + index,
            "faults": (faults or {}).get(cls.kind),
            "live_count": live_count,
            "interval": interval,
        }
        if cls is GlucoseMeter:
            options |= {"records": glucose_records, "record_interval": record_interval}
        device = cls(radio, **options)
        await device.start()
        fleet.append(device)
    return fleet
