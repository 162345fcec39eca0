"""PLX Spot-check Measurement 0x2A5E and PLX Continuous Measurement 0x2A5F (PLXS 1.0.1
sections 3.1-3.2 / GSS "PLX Spot-check Measurement", "PLX Continuous Measurement").

Spot-check layout::

    flags                      uint8   bit0 time stamp present, bit1 measurement status
                                       present, bit2 device and sensor status present, bit3
                                       pulse amplitude index present, bit4 device clock is not
                                       set, bits 5-7 RFU
    SpO2, PR                   SFLOAT, SFLOAT (percent, beats per minute)
    time stamp                 Date Time (7)   if bit0
    measurement status         uint16          if bit1 (bits 0-4 RFU)
    device and sensor status   uint24          if bit2 (bits 16-23 RFU)
    pulse amplitude index      SFLOAT          if bit3 (percent)

Continuous layout::

    flags                      uint8   bit0 SpO2PR-Fast present, bit1 SpO2PR-Slow present,
                                       bit2 measurement status present, bit3 device and sensor
                                       status present, bit4 pulse amplitude index present,
                                       bits 5-7 RFU
    SpO2PR-Normal              SFLOAT, SFLOAT
    SpO2PR-Fast                SFLOAT, SFLOAT  if bit0
    SpO2PR-Slow                SFLOAT, SFLOAT  if bit1
    measurement status         uint16          if bit2
    device and sensor status   uint24          if bit3
    pulse amplitude index      SFLOAT          if bit4

A spot-check whose "device clock is not set" flag is set is timed by the agent (its time stamp
is kept in the decoded value but not trusted). Fast and slow averages carry the flags
``modality:fast`` / ``modality:slow`` (IEEE 11073-10404 modality), which also keeps their
content ids apart from the normal reading.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from phd_protocol import mdc
from phd_protocol.gatt._codec import (
    Characteristic,
    ObservationContext,
    Reader,
    Timing,
    check_number,
    pack_sfloat,
    u24,
)
from phd_protocol.gatt.date_time import DateTime
from phd_protocol.observation import Observation
from phd_protocol.sfloat import MedicalNumber

__all__ = [
    "PlxContinuousMeasurement",
    "PlxDeviceSensorStatus",
    "PlxMeasurementStatus",
    "PlxSpotCheckMeasurement",
]

_MEASUREMENT_STATUS_ALLOWED = 0xFFE0
_DEVICE_STATUS_ALLOWED = 0x00FFFF


class PlxMeasurementStatus(enum.IntFlag):
    """PLXS 3.1.1.3 Measurement Status (bits 0-4 RFU)."""

    MEASUREMENT_ONGOING = 0x0020
    EARLY_ESTIMATE = 0x0040
    VALIDATED = 0x0080
    FULLY_QUALIFIED = 0x0100
    FROM_STORAGE = 0x0200
    DEMONSTRATION = 0x0400
    TESTING = 0x0800
    CALIBRATION_ONGOING = 0x1000
    UNAVAILABLE = 0x2000
    QUESTIONABLE = 0x4000
    INVALID = 0x8000


class PlxDeviceSensorStatus(enum.IntFlag):
    """PLXS 3.1.1.4 Device and Sensor Status (bits 16-23 RFU)."""

    EXTENDED_DISPLAY_UPDATE = 0x0001
    EQUIPMENT_MALFUNCTION = 0x0002
    SIGNAL_PROCESSING_IRREGULAR = 0x0004
    INADEQUATE_SIGNAL = 0x0008
    POOR_SIGNAL = 0x0010
    LOW_PERFUSION = 0x0020
    ERRATIC_SIGNAL = 0x0040
    NONPULSATILE_SIGNAL = 0x0080
    QUESTIONABLE_PULSE = 0x0100
    SIGNAL_ANALYSIS_ONGOING = 0x0200
    SENSOR_INTERFERENCE = 0x0400
    SENSOR_UNCONNECTED = 0x0800
    UNKNOWN_SENSOR = 0x1000
    SENSOR_DISPLACED = 0x2000
    SENSOR_MALFUNCTION = 0x4000
    SENSOR_DISCONNECTED = 0x8000


def _status_flags(
    measurement: PlxMeasurementStatus | None, device: PlxDeviceSensorStatus | None
) -> frozenset[str]:
    names: set[str] = set()
    for flags in (measurement, device):
        if flags:
            names.update(f"status:{(bit.name or '').lower()}" for bit in type(flags) if bit & flags)
    return frozenset(names)


def _check_status(measurement: object, device: object) -> None:
    if measurement is not None and not isinstance(measurement, PlxMeasurementStatus):
        raise ValueError("'measurement_status' must be a PlxMeasurementStatus or None")
    if device is not None and not isinstance(device, PlxDeviceSensorStatus):
        raise ValueError("'device_status' must be a PlxDeviceSensorStatus or None")


def _read_statuses(
    reader: Reader, has_measurement: int, has_device: int
) -> tuple[PlxMeasurementStatus | None, PlxDeviceSensorStatus | None]:
    measurement = device = None
    if has_measurement:
        at = reader.offset
        raw = reader.u16("measurement_status")
        reader.check_flags(raw, _MEASUREMENT_STATUS_ALLOWED, "measurement_status", at)
        measurement = PlxMeasurementStatus(raw)
    if has_device:
        at = reader.offset
        raw = reader.u24("device_status")
        reader.check_flags(raw, _DEVICE_STATUS_ALLOWED, "device_status", at)
        device = PlxDeviceSensorStatus(raw)
    return measurement, device


def _pair_observations(
    ctx: ObservationContext,
    char: int,
    *,
    spo2: MedicalNumber,
    pulse_rate: MedicalNumber,
    when: Timing,
    flags: frozenset[str],
) -> list[Observation]:
    return [
        ctx.observation(
            char=char,
            mdc_code=mdc.PULS_OXIM_SAT_O2.code,
            value=spo2,
            unit=mdc.DIM_PERCENT.ucum,
            unit_mdc=mdc.DIM_PERCENT.code,
            when=when,
            loinc=mdc.PULS_OXIM_SAT_O2.loinc,
            flags=flags,
        ),
        ctx.observation(
            char=char,
            mdc_code=mdc.PULS_OXIM_PULS_RATE.code,
            value=pulse_rate,
            unit=mdc.DIM_BEAT_PER_MIN.ucum,
            unit_mdc=mdc.DIM_BEAT_PER_MIN.code,
            when=when,
            loinc=mdc.PULS_OXIM_PULS_RATE.loinc,
            flags=flags,
        ),
    ]


def _pai_observation(
    ctx: ObservationContext, char: int, pai: MedicalNumber, when: Timing, flags: frozenset[str]
) -> Observation:
    return ctx.observation(
        char=char,
        mdc_code=mdc.PULS_OXIM_PERF_REL.code,
        value=pai,
        unit=mdc.DIM_PERCENT.ucum,
        unit_mdc=mdc.DIM_PERCENT.code,
        when=when,
        flags=flags,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlxSpotCheckMeasurement(Characteristic):
    """One pulse-oximeter spot check (0x2A5E)."""

    uuid: ClassVar[int] = 0x2A5E
    name: ClassVar[str] = "PLX Spot-check Measurement"

    spo2: MedicalNumber
    pulse_rate: MedicalNumber
    timestamp: DateTime | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: MedicalNumber | None = None
    device_clock_not_set: bool = False

    def __post_init__(self) -> None:
        check_number(self.spo2, "spo2")
        check_number(self.pulse_rate, "pulse_rate")
        if self.timestamp is not None and not isinstance(self.timestamp, DateTime):
            raise ValueError("'timestamp' must be a DateTime or None")
        _check_status(self.measurement_status, self.device_status)
        if self.pulse_amplitude_index is not None:
            check_number(self.pulse_amplitude_index, "pulse_amplitude_index")
        if not isinstance(self.device_clock_not_set, bool):
            raise ValueError("'device_clock_not_set' must be a bool")

    def encode(self) -> bytes:
        flags = 0x10 if self.device_clock_not_set else 0
        out = bytearray(pack_sfloat(self.spo2) + pack_sfloat(self.pulse_rate))
        if self.timestamp is not None:
            flags |= 0x01
            out += self.timestamp.pack()
        if self.measurement_status is not None:
            flags |= 0x02
            out += struct.pack("<H", int(self.measurement_status))
        if self.device_status is not None:
            flags |= 0x04
            out += u24(int(self.device_status))
        if self.pulse_amplitude_index is not None:
            flags |= 0x08
            out += pack_sfloat(self.pulse_amplitude_index)
        return bytes((flags,)) + bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> PlxSpotCheckMeasurement:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        flags = reader.u8("flags")
        reader.check_flags(flags, 0x1F)
        spo2 = reader.sfloat("spo2")
        pulse_rate = reader.sfloat("pulse_rate")
        timestamp = reader.date_time("timestamp") if flags & 0x01 else None
        measurement, device = _read_statuses(reader, flags & 0x02, flags & 0x04)
        pai = reader.sfloat("pulse_amplitude_index") if flags & 0x08 else None
        reader.finish()
        return cls(
            spo2=spo2,
            pulse_rate=pulse_rate,
            timestamp=timestamp,
            measurement_status=measurement,
            device_status=device,
            pulse_amplitude_index=pai,
            device_clock_not_set=bool(flags & 0x10),
        )

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        flags = _status_flags(self.measurement_status, self.device_status)
        if self.device_clock_not_set:
            flags |= {"device_clock_not_set"}
        when = ctx.timing(None if self.device_clock_not_set else self.timestamp)
        out = _pair_observations(
            ctx, self.uuid, spo2=self.spo2, pulse_rate=self.pulse_rate, when=when, flags=flags
        )
        if self.pulse_amplitude_index is not None:
            out.append(_pai_observation(ctx, self.uuid, self.pulse_amplitude_index, when, flags))
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlxContinuousMeasurement(Characteristic):
    """One pulse-oximeter continuous notification (0x2A5F); timed by the agent."""

    uuid: ClassVar[int] = 0x2A5F
    name: ClassVar[str] = "PLX Continuous Measurement"

    spo2: MedicalNumber
    pulse_rate: MedicalNumber
    spo2_fast: MedicalNumber | None = None
    pulse_rate_fast: MedicalNumber | None = None
    spo2_slow: MedicalNumber | None = None
    pulse_rate_slow: MedicalNumber | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: MedicalNumber | None = None

    def __post_init__(self) -> None:
        check_number(self.spo2, "spo2")
        check_number(self.pulse_rate, "pulse_rate")
        for first, second, label in (
            (self.spo2_fast, self.pulse_rate_fast, "fast"),
            (self.spo2_slow, self.pulse_rate_slow, "slow"),
        ):
            if (first is None) != (second is None):
                raise ValueError(f"'spo2_{label}' and 'pulse_rate_{label}' come together")
            if first is not None and second is not None:
                check_number(first, f"spo2_{label}")
                check_number(second, f"pulse_rate_{label}")
        _check_status(self.measurement_status, self.device_status)
        if self.pulse_amplitude_index is not None:
            check_number(self.pulse_amplitude_index, "pulse_amplitude_index")

    def encode(self) -> bytes:
        flags = 0
        out = bytearray(pack_sfloat(self.spo2) + pack_sfloat(self.pulse_rate))
        if self.spo2_fast is not None and self.pulse_rate_fast is not None:
            flags |= 0x01
            out += pack_sfloat(self.spo2_fast) + pack_sfloat(self.pulse_rate_fast)
        if self.spo2_slow is not None and self.pulse_rate_slow is not None:
            flags |= 0x02
            out += pack_sfloat(self.spo2_slow) + pack_sfloat(self.pulse_rate_slow)
        if self.measurement_status is not None:
            flags |= 0x04
            out += struct.pack("<H", int(self.measurement_status))
        if self.device_status is not None:
            flags |= 0x08
            out += u24(int(self.device_status))
        if self.pulse_amplitude_index is not None:
            flags |= 0x10
            out += pack_sfloat(self.pulse_amplitude_index)
        return bytes((flags,)) + bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> PlxContinuousMeasurement:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        flags = reader.u8("flags")
        reader.check_flags(flags, 0x1F)
        spo2 = reader.sfloat("spo2")
        pulse_rate = reader.sfloat("pulse_rate")
        no_pair: tuple[MedicalNumber | None, MedicalNumber | None] = (None, None)
        fast = slow = no_pair
        if flags & 0x01:
            fast = (reader.sfloat("spo2_fast"), reader.sfloat("pulse_rate_fast"))
        if flags & 0x02:
            slow = (reader.sfloat("spo2_slow"), reader.sfloat("pulse_rate_slow"))
        measurement, device = _read_statuses(reader, flags & 0x04, flags & 0x08)
        pai = reader.sfloat("pulse_amplitude_index") if flags & 0x10 else None
        reader.finish()
        return cls(
            spo2=spo2,
            pulse_rate=pulse_rate,
            spo2_fast=fast[0],
            pulse_rate_fast=fast[1],
            spo2_slow=slow[0],
            pulse_rate_slow=slow[1],
            measurement_status=measurement,
            device_status=device,
            pulse_amplitude_index=pai,
        )

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        flags = _status_flags(self.measurement_status, self.device_status)
        when = ctx.timing(None)
        out = _pair_observations(
            ctx, self.uuid, spo2=self.spo2, pulse_rate=self.pulse_rate, when=when, flags=flags
        )
        if self.spo2_fast is not None and self.pulse_rate_fast is not None:
            out += _pair_observations(
                ctx,
                self.uuid,
                spo2=self.spo2_fast,
                pulse_rate=self.pulse_rate_fast,
                when=when,
                flags=flags | {"modality:fast"},
            )
        if self.spo2_slow is not None and self.pulse_rate_slow is not None:
            out += _pair_observations(
                ctx,
                self.uuid,
                spo2=self.spo2_slow,
                pulse_rate=self.pulse_rate_slow,
                when=when,
                flags=flags | {"modality:slow"},
            )
        if self.pulse_amplitude_index is not None:
            out.append(_pai_observation(ctx, self.uuid, self.pulse_amplitude_index, when, flags))
        return tuple(out)
