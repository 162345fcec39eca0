"""Temperature Measurement 0x2A1C (HTS 1.0 section 3.1 / GSS "Temperature Measurement").

Layout::

    flags              uint8   bit0 unit (0 Celsius, 1 Fahrenheit), bit1 time stamp present,
                               bit2 temperature type present, bits 3-7 RFU
    temperature        FLOAT (32-bit, IEEE 11073-20601)
    time stamp         Date Time (7)   if bit1
    temperature type   uint8           if bit2 (HTS 3.2: 1 armpit, 2 body, 3 ear, 4 finger,
                                       5 gastro-intestinal tract, 6 mouth, 7 rectum, 8 toe,
                                       9 tympanum; 0 and 10-255 RFU)

The site picks the MDC code (IEEE 11073-10408); all sites carry the vital-signs LOINC 8310-5.

Also here: Intermediate Temperature 0x2A1E (HTS 3.3, same layout, readings while measuring;
its observations carry the flag ``intermediate``) and Temperature Type 0x2A1D (HTS 3.2, the
static site of a thermometer whose measurements carry none; a uint8 with the values above).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from phd_protocol import mdc
from phd_protocol.gatt._codec import (
    Characteristic,
    ObservationContext,
    Reader,
    check_number,
    pack_float,
)
from phd_protocol.gatt.date_time import DateTime
from phd_protocol.observation import Observation
from phd_protocol.sfloat import MedicalNumber

__all__ = [
    "IntermediateTemperature",
    "TemperatureMeasurement",
    "TemperatureSite",
    "TemperatureType",
    "TemperatureUnit",
]

_FLAG_FAHRENHEIT = 0x01
_FLAG_TIME = 0x02
_FLAG_TYPE = 0x04
_FLAGS_ALLOWED = 0x07


class TemperatureUnit(enum.IntEnum):
    CELSIUS = 0
    FAHRENHEIT = 1


class TemperatureType(enum.IntEnum):
    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


@dataclass(frozen=True, slots=True, kw_only=True)
class TemperatureMeasurement(Characteristic):
    """One thermometer reading (0x2A1C)."""

    uuid: ClassVar[int] = 0x2A1C
    name: ClassVar[str] = "Temperature Measurement"

    temperature: MedicalNumber
    unit: TemperatureUnit = TemperatureUnit.CELSIUS
    timestamp: DateTime | None = None
    temperature_type: TemperatureType | None = None

    def __post_init__(self) -> None:
        check_number(self.temperature, "temperature", sfloat=False)
        if not isinstance(self.unit, TemperatureUnit):
            raise ValueError("'unit' must be a TemperatureUnit")
        if self.timestamp is not None and not isinstance(self.timestamp, DateTime):
            raise ValueError("'timestamp' must be a DateTime or None")
        if self.temperature_type is not None and not isinstance(
            self.temperature_type, TemperatureType
        ):
            raise ValueError("'temperature_type' must be a TemperatureType or None")

    def encode(self) -> bytes:
        flags = int(self.unit)
        tail = bytearray()
        if self.timestamp is not None:
            flags |= _FLAG_TIME
            tail += self.timestamp.pack()
        if self.temperature_type is not None:
            flags |= _FLAG_TYPE
            tail.append(self.temperature_type)
        return bytes((flags,)) + pack_float(self.temperature) + bytes(tail)

    @classmethod
    def decode(cls, data: bytes) -> TemperatureMeasurement:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        flags = reader.u8("flags")
        reader.check_flags(flags, _FLAGS_ALLOWED)
        temperature = reader.float32("temperature")
        timestamp = reader.date_time("timestamp") if flags & _FLAG_TIME else None
        kind = None
        if flags & _FLAG_TYPE:
            at = reader.offset
            raw = reader.u8("temperature_type")
            try:
                kind = TemperatureType(raw)
            except ValueError:
                raise reader.fail(f"reserved value in 'temperature_type' at offset {at}") from None
        reader.finish()
        return cls(
            temperature=temperature,
            unit=TemperatureUnit(flags & _FLAG_FAHRENHEIT),
            timestamp=timestamp,
            temperature_type=kind,
        )

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        return self._observations(ctx, frozenset())

    def _observations(
        self, ctx: ObservationContext, flags: frozenset[str]
    ) -> tuple[Observation, ...]:
        term = mdc.TEMPERATURE_BY_SITE[
            None if self.temperature_type is None else int(self.temperature_type)
        ]
        dim = mdc.DIM_DEGC if self.unit is TemperatureUnit.CELSIUS else mdc.DIM_FAHR
        return (
            ctx.observation(
                char=self.uuid,
                mdc_code=term.code,
                value=self.temperature,
                unit=dim.ucum,
                unit_mdc=dim.code,
                when=ctx.timing(self.timestamp),
                loinc=term.loinc,
                flags=flags,
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IntermediateTemperature(TemperatureMeasurement):
    """A reading while the measurement is still in progress (0x2A1E)."""

    uuid: ClassVar[int] = 0x2A1E
    name: ClassVar[str] = "Intermediate Temperature"

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        # The flag keeps an intermediate reading's content id apart from the final one.
        return self._observations(ctx, frozenset({"intermediate"}))


@dataclass(frozen=True, slots=True, kw_only=True)
class TemperatureSite(Characteristic):
    """The Temperature Type characteristic (0x2A1D): where a thermometer measures."""

    uuid: ClassVar[int] = 0x2A1D
    name: ClassVar[str] = "Temperature Type"

    temperature_type: TemperatureType

    def __post_init__(self) -> None:
        if not isinstance(self.temperature_type, TemperatureType):
            raise ValueError("'temperature_type' must be a TemperatureType")

    def encode(self) -> bytes:
        return bytes((self.temperature_type,))

    @classmethod
    def decode(cls, data: bytes) -> TemperatureSite:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        raw = reader.u8("temperature_type")
        reader.finish()
        try:
            return cls(temperature_type=TemperatureType(raw))
        except ValueError:
            raise reader.fail("reserved value in 'temperature_type' at offset 0") from None
