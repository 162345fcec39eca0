"""Glucose Measurement 0x2A18 (GLS 1.0 section 3.106 / GSS "Glucose Measurement").

Layout::

    flags                        uint8   bit0 time offset present, bit1 concentration and
                                         type-sample location present, bit2 concentration unit
                                         (0 kg/L, 1 mol/L), bit3 sensor status annunciation
                                         present, bit4 context information follows, bits 5-7 RFU
    sequence number              uint16
    base time                    Date Time (7)
    time offset                  sint16  if bit0 (minutes, added to base time)
    glucose concentration        SFLOAT  if bit1 (kg/L or mol/L per bit2)
    type (low nibble) and
    sample location (high)       uint8   if bit1
    sensor status annunciation   uint16  if bit3 (bits 12-15 RFU)

Observations use the units of IEEE 11073-10417 and the PHD IG: kg/L is reported exactly as
mg/dL (x 100 000) and mol/L as mmol/L (x 1000); Decimal arithmetic keeps it exact.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from phd_protocol import mdc
from phd_protocol.gatt._codec import (
    Characteristic,
    ObservationContext,
    Reader,
    check_int,
    check_number,
    pack_sfloat,
    scale,
)
from phd_protocol.gatt.date_time import DateTime
from phd_protocol.observation import Observation
from phd_protocol.sfloat import MedicalNumber

__all__ = [
    "GlucoseConcentrationUnit",
    "GlucoseMeasurement",
    "GlucoseSampleLocation",
    "GlucoseSensorStatus",
    "GlucoseType",
]

_FLAG_OFFSET = 0x01
_FLAG_CONCENTRATION = 0x02
_FLAG_MOL_PER_L = 0x04
_FLAG_STATUS = 0x08
_FLAG_CONTEXT = 0x10
_FLAGS_ALLOWED = 0x1F
_STATUS_ALLOWED = 0x0FFF
_MG_PER_DL_PER_KG_PER_L = 5  # 1 kg/L = 10**5 mg/dL
_MMOL_PER_MOL = 3  # 1 mol/L = 10**3 mmol/L


class GlucoseConcentrationUnit(enum.IntEnum):
    KG_PER_L = 0
    MOL_PER_L = 1


class GlucoseType(enum.IntEnum):
    """GLS 3.106.2.6 Type (low nibble); 0 and 11-15 are RFU."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class GlucoseSampleLocation(enum.IntEnum):
    """GLS 3.106.2.7 Sample Location (high nibble); 0 and 5-14 are RFU."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class GlucoseSensorStatus(enum.IntFlag):
    """GLS 3.106.2.8 Sensor Status Annunciation (bits 12-15 RFU)."""

    BATTERY_LOW = 0x0001
    SENSOR_MALFUNCTION = 0x0002
    SAMPLE_SIZE_INSUFFICIENT = 0x0004
    STRIP_INSERTION_ERROR = 0x0008
    STRIP_TYPE_INCORRECT = 0x0010
    RESULT_TOO_HIGH = 0x0020
    RESULT_TOO_LOW = 0x0040
    TEMPERATURE_TOO_HIGH = 0x0080
    TEMPERATURE_TOO_LOW = 0x0100
    READ_INTERRUPTED = 0x0200
    GENERAL_DEVICE_FAULT = 0x0400
    TIME_FAULT = 0x0800


_STATUS_NAMES = {bit: f"sensor:{bit.name.lower()}" for bit in GlucoseSensorStatus if bit.name}
_TYPE_BY_RAW = {t.value: t for t in GlucoseType}
_LOCATION_BY_RAW = {loc.value: loc for loc in GlucoseSampleLocation}
_S16 = struct.Struct("<h")


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseMeasurement(Characteristic):
    """One stored or live glucose record (0x2A18); pair with its context by sequence number."""

    uuid: ClassVar[int] = 0x2A18
    name: ClassVar[str] = "Glucose Measurement"

    sequence_number: int
    base_time: DateTime
    time_offset: int | None = None  # minutes
    concentration: MedicalNumber | None = None
    unit: GlucoseConcentrationUnit = GlucoseConcentrationUnit.KG_PER_L
    type: GlucoseType | None = None
    sample_location: GlucoseSampleLocation | None = None
    sensor_status: GlucoseSensorStatus | None = None
    context_follows: bool = False

    def __post_init__(self) -> None:
        check_int(self.sequence_number, 0, 0xFFFF, "sequence_number")
        if not isinstance(self.base_time, DateTime):
            raise ValueError("'base_time' must be a DateTime")
        if self.time_offset is not None:
            check_int(self.time_offset, -32768, 32767, "time_offset")
        if not isinstance(self.unit, GlucoseConcentrationUnit):
            raise ValueError("'unit' must be a GlucoseConcentrationUnit")
        present = (self.concentration, self.type, self.sample_location)
        if any(v is None for v in present) and any(v is not None for v in present):
            raise ValueError(
                "'concentration', 'type' and 'sample_location' come together or not at all"
            )
        if self.concentration is not None:
            check_number(self.concentration, "concentration")
        if self.type is not None and not isinstance(self.type, GlucoseType):
            raise ValueError("'type' must be a GlucoseType")
        if self.sample_location is not None and not isinstance(
            self.sample_location, GlucoseSampleLocation
        ):
            raise ValueError("'sample_location' must be a GlucoseSampleLocation")
        if self.sensor_status is not None and not isinstance(
            self.sensor_status, GlucoseSensorStatus
        ):
            raise ValueError("'sensor_status' must be a GlucoseSensorStatus")
        if not isinstance(self.context_follows, bool):
            raise ValueError("'context_follows' must be a bool")

    def encode(self) -> bytes:
        flags = 0
        out = bytearray()
        out += struct.pack("<H", self.sequence_number)
        out += self.base_time.pack()
        if self.time_offset is not None:
            flags |= _FLAG_OFFSET
            out += _S16.pack(self.time_offset)
        if (
            self.concentration is not None
            and self.type is not None
            and self.sample_location is not None
        ):
            flags |= _FLAG_CONCENTRATION
            out += pack_sfloat(self.concentration)
            out.append(int(self.type) | (int(self.sample_location) << 4))
        if self.unit is GlucoseConcentrationUnit.MOL_PER_L:
            flags |= _FLAG_MOL_PER_L
        if self.sensor_status is not None:
            flags |= _FLAG_STATUS
            out += struct.pack("<H", int(self.sensor_status))
        if self.context_follows:
            flags |= _FLAG_CONTEXT
        return bytes((flags,)) + bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> GlucoseMeasurement:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        flags = reader.u8("flags")
        reader.check_flags(flags, _FLAGS_ALLOWED)
        sequence = reader.u16("sequence_number")
        base_time = reader.date_time("base_time")
        offset = reader.s16("time_offset") if flags & _FLAG_OFFSET else None
        concentration: MedicalNumber | None = None
        kind: GlucoseType | None = None
        location: GlucoseSampleLocation | None = None
        if flags & _FLAG_CONCENTRATION:
            concentration = reader.sfloat("concentration")
            at = reader.offset
            packed = reader.u8("type_sample_location")
            kind = _TYPE_BY_RAW.get(packed & 0x0F)
            location = _LOCATION_BY_RAW.get(packed >> 4)
            if kind is None:
                raise reader.fail(f"reserved value in 'type' at offset {at}")
            if location is None:
                raise reader.fail(f"reserved value in 'sample_location' at offset {at}")
        status = None
        if flags & _FLAG_STATUS:
            at = reader.offset
            raw = reader.u16("sensor_status")
            reader.check_flags(raw, _STATUS_ALLOWED, "sensor_status", at)
            status = GlucoseSensorStatus(raw)
        reader.finish()
        return cls(
            sequence_number=sequence,
            base_time=base_time,
            time_offset=offset,
            concentration=concentration,
            unit=GlucoseConcentrationUnit(1 if flags & _FLAG_MOL_PER_L else 0),
            type=kind,
            sample_location=location,
            sensor_status=status,
            context_follows=bool(flags & _FLAG_CONTEXT),
        )

    @property
    def user_facing_time(self) -> datetime | None:
        """Base time plus time offset (GLS 3.106.2.3), as RACP time filters compare it."""
        base = self.base_time.to_datetime()
        if base is None:
            return None
        return base + timedelta(minutes=self.time_offset or 0)

    @property
    def time_offset_delta(self) -> timedelta | None:
        return None if self.time_offset is None else timedelta(minutes=self.time_offset)

    def flags(self) -> frozenset[str]:
        names: set[str] = set()
        if self.sensor_status:
            names.update(n for bit, n in _STATUS_NAMES.items() if self.sensor_status & bit)
        if self.sample_location is not None:
            names.add(f"location:{self.sample_location.name.lower()}")
        return frozenset(names)

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        return self.observations_with(ctx, extra_flags=frozenset())

    def observations_with(
        self, ctx: ObservationContext, *, extra_flags: frozenset[str]
    ) -> tuple[Observation, ...]:
        """Observations with flags added from the matching context record (meal, tester...)."""
        if self.concentration is None or self.type is None:
            return ()
        term = mdc.GLUCOSE_BY_TYPE_SAMPLE[int(self.type)]
        if self.unit is GlucoseConcentrationUnit.KG_PER_L:
            dim, factor = mdc.DIM_MILLI_G_PER_DL, _MG_PER_DL_PER_KG_PER_L
        else:
            dim, factor = mdc.DIM_MILLI_MOLE_PER_L, _MMOL_PER_MOL
        value = scale(self.concentration, factor)
        return (
            ctx.observation(
                char=self.uuid,
                mdc_code=term.code,
                value=value,
                unit=dim.ucum,
                unit_mdc=dim.code,
                when=ctx.timing(self.base_time, self.time_offset_delta),
                loinc=term.loinc,
                flags=self.flags() | extra_flags,
            ),
        )
