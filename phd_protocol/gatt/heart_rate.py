"""Heart Rate Measurement 0x2A37 (HRS 1.0 section 3.1 / GSS "Heart Rate Measurement").

Layout::

    flags               uint8    bit0 value format (0 uint8, 1 uint16), bits 1-2 sensor contact
                                 status (0/1 not supported, 2 supported but no contact, 3
                                 supported and in contact), bit3 energy expended present,
                                 bit4 RR-interval present, bits 5-7 RFU
    heart rate          uint8 or uint16 (beats per minute)
    energy expended     uint16   if bit3 (kilojoules; 0xFFFF means "at least 65535")
    RR-intervals        uint16 * n  if bit4 (1/1024 s, oldest first, n >= 1)

RR intervals are reported exactly in milliseconds (x 1000/1024 = x 125/128, a terminating
decimal) as one compound observation, so equal intervals in one notification stay distinct.
Heart-rate notifications carry no time stamp: observations are timed by the agent.

Also here: Body Sensor Location 0x2A38 (HRS 3.2): uint8, 0 other, 1 chest, 2 wrist, 3 finger,
4 hand, 5 ear lobe, 6 foot; 7-255 RFU.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from phd_protocol import mdc
from phd_protocol.gatt._codec import Characteristic, ObservationContext, Reader, check_int
from phd_protocol.observation import Component, Observation

__all__ = ["BodySensorLocation", "HeartRateMeasurement", "SensorLocation"]

_FLAG_U16 = 0x01
_CONTACT_MASK = 0x06
_CONTACT_SUPPORTED = 0x04
_CONTACT_DETECTED = 0x02
_FLAG_ENERGY = 0x08
_FLAG_RR = 0x10
_FLAGS_ALLOWED = 0x1F
_MAX_RR = (512 - 4) // 2  # what fits in one ATT value after flags, u16 HR and energy
_MS_PER_TICK = Decimal(1000) / Decimal(1024)  # exactly 0.9765625


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartRateMeasurement(Characteristic):
    """One heart-rate notification (0x2A37)."""

    uuid: ClassVar[int] = 0x2A37
    name: ClassVar[str] = "Heart Rate Measurement"

    heart_rate: int  # beats per minute
    uint16_format: bool = False  # the wire width of heart_rate
    sensor_contact: bool | None = None  # None: contact detection not supported
    energy_expended: int | None = None  # kJ
    rr_intervals: tuple[int, ...] = ()  # 1/1024 s each

    def __post_init__(self) -> None:
        if not isinstance(self.uint16_format, bool):
            raise ValueError("'uint16_format' must be a bool")
        check_int(self.heart_rate, 0, 0xFFFF if self.uint16_format else 0xFF, "heart_rate")
        if self.sensor_contact is not None and not isinstance(self.sensor_contact, bool):
            raise ValueError("'sensor_contact' must be a bool or None")
        if self.energy_expended is not None:
            check_int(self.energy_expended, 0, 0xFFFF, "energy_expended")
        intervals: object = self.rr_intervals
        if not isinstance(intervals, tuple) or len(intervals) > _MAX_RR:
            raise ValueError(f"'rr_intervals' must be a tuple of at most {_MAX_RR} values")
        for interval in self.rr_intervals:
            check_int(interval, 0, 0xFFFF, "rr_intervals")

    def encode(self) -> bytes:
        flags = _FLAG_U16 if self.uint16_format else 0
        if self.sensor_contact is not None:
            flags |= _CONTACT_SUPPORTED | (_CONTACT_DETECTED if self.sensor_contact else 0)
        out = bytearray(struct.pack("<H" if self.uint16_format else "<B", self.heart_rate))
        if self.energy_expended is not None:
            flags |= _FLAG_ENERGY
            out += struct.pack("<H", self.energy_expended)
        if self.rr_intervals:
            flags |= _FLAG_RR
            out += struct.pack(f"<{len(self.rr_intervals)}H", *self.rr_intervals)
        return bytes((flags,)) + bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> HeartRateMeasurement:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        flags = reader.u8("flags")
        reader.check_flags(flags, _FLAGS_ALLOWED)
        wide = bool(flags & _FLAG_U16)
        heart_rate = reader.u16("heart_rate") if wide else reader.u8("heart_rate")
        contact = flags & _CONTACT_MASK
        sensor_contact = None
        if contact & _CONTACT_SUPPORTED:
            sensor_contact = bool(contact & _CONTACT_DETECTED)
        energy = reader.u16("energy_expended") if flags & _FLAG_ENERGY else None
        intervals: tuple[int, ...] = ()
        if flags & _FLAG_RR:
            at = reader.offset
            left = reader.remaining()
            if left == 0 or left % 2:
                raise reader.fail(
                    f"field 'rr_intervals' at offset {at} must be a non-empty even number "
                    f"of bytes, got {left}"
                )
            intervals = struct.unpack_from(f"<{left // 2}H", reader.take(left, "rr_intervals"))
        reader.finish()
        return cls(
            heart_rate=heart_rate,
            uint16_format=wide,
            sensor_contact=sensor_contact,
            energy_expended=energy,
            rr_intervals=intervals,
        )

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        when = ctx.timing(None)
        flags: frozenset[str] = frozenset()
        if self.sensor_contact is not None:
            flags = frozenset(
                {"sensor_contact:detected" if self.sensor_contact else "sensor_contact:lost"}
            )
        out = [
            ctx.observation(
                char=self.uuid,
                mdc_code=mdc.ECG_HEART_RATE.code,
                value=Decimal(self.heart_rate),
                unit=mdc.DIM_BEAT_PER_MIN.ucum,
                unit_mdc=mdc.DIM_BEAT_PER_MIN.code,
                when=when,
                loinc=mdc.ECG_HEART_RATE.loinc,
                flags=flags,
            )
        ]
        if self.energy_expended is not None:
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.HF_ENERGY.code,
                    value=Decimal(self.energy_expended),
                    unit=mdc.DIM_KILO_JOULES.ucum,
                    unit_mdc=mdc.DIM_KILO_JOULES.code,
                    when=when,
                )
            )
        if self.rr_intervals:
            term = mdc.ECG_TIME_PD_RR_GL
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=term.code,
                    value=None,
                    unit=mdc.DIM_MILLI_SEC.ucum,
                    unit_mdc=mdc.DIM_MILLI_SEC.code,
                    when=when,
                    components=tuple(
                        Component(mdc_code=term.code, value=_ms(tick)) for tick in self.rr_intervals
                    ),
                    flags=flags,
                )
            )
        return tuple(out)


def _ms(ticks: int) -> Decimal:
    # 1000/1024 = 0.9765625 exactly; the product has at most 7 fractional digits, so the
    # default 28-digit context computes it exactly. normalize() drops trailing zeros.
    value = (Decimal(ticks) * _MS_PER_TICK).normalize()
    return Decimal(int(value)) if value == value.to_integral_value() else value


class SensorLocation(enum.IntEnum):
    OTHER = 0
    CHEST = 1
    WRIST = 2
    FINGER = 3
    HAND = 4
    EAR_LOBE = 5
    FOOT = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class BodySensorLocation(Characteristic):
    """Where a heart-rate sensor is worn (0x2A38)."""

    uuid: ClassVar[int] = 0x2A38
    name: ClassVar[str] = "Body Sensor Location"

    location: SensorLocation

    def __post_init__(self) -> None:
        if not isinstance(self.location, SensorLocation):
            raise ValueError("'location' must be a SensorLocation")

    def encode(self) -> bytes:
        return bytes((self.location,))

    @classmethod
    def decode(cls, data: bytes) -> BodySensorLocation:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        raw = reader.u8("location")
        reader.finish()
        try:
            return cls(location=SensorLocation(raw))
        except ValueError:
            raise reader.fail("reserved value in 'location' at offset 0") from None
