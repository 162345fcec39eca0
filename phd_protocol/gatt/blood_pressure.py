"""Blood Pressure Measurement 0x2A35 and Intermediate Cuff Pressure 0x2A36 (BLS 1.1, GSS 3.31).

Layout (BLS section 3.1, GSS "Blood Pressure Measurement"; 0x2A36 has the same layout, BLS
section 3.2, with the diastolic and mean fields unused and sent as NaN)::

    flags                      uint8   bit0 unit (0 mmHg, 1 kPa), bit1 time stamp present,
                                       bit2 pulse rate present, bit3 user id present,
                                       bit4 measurement status present, bits 5-7 RFU
    systolic / cuff pressure   SFLOAT
    diastolic                  SFLOAT
    mean arterial pressure     SFLOAT
    time stamp                 Date Time (7)   if bit1
    pulse rate                 SFLOAT          if bit2 (beats per minute)
    user id                    uint8           if bit3 (0xFF = unknown user)
    measurement status         uint16          if bit4: bit0 body movement, bit1 cuff too
                                               loose, bit2 irregular pulse, bits 3-4 pulse
                                               rate range (0 in range, 1 above, 2 below,
                                               3 RFU), bit5 improper position, bits 6-15 RFU
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from phd_protocol import mdc
from phd_protocol.errors import ParseError
from phd_protocol.gatt._codec import (
    Characteristic,
    ObservationContext,
    Reader,
    Timing,
    check_int,
    check_number,
    pack_sfloat,
)
from phd_protocol.gatt.date_time import DateTime, fast_date_time
from phd_protocol.observation import (  # private fast path: values decoded, codes from mdc
    Observation,
    _trusted_component,
)
from phd_protocol.sfloat import MedicalNumber, SpecialValue, decode_sfloat, encode_sfloat

__all__ = [
    "BloodPressureMeasurement",
    "BloodPressureStatus",
    "IntermediateCuffPressure",
    "PressureUnit",
]

_FLAG_KPA = 0x01
_FLAG_TIME = 0x02
_FLAG_PULSE = 0x04
_FLAG_USER = 0x08
_FLAG_STATUS = 0x10
_FLAGS_ALLOWED = 0x1F
_STATUS_ALLOWED = 0x003F
_PULSE_RANGE_RESERVED = 0x18  # both range bits set = range value 3, RFU
_HEAD = struct.Struct("<BHHH")
_UNKNOWN_USER = 0xFF


class PressureUnit(enum.IntEnum):
    MMHG = 0
    KPA = 1


class BloodPressureStatus(enum.IntFlag):
    """Measurement Status bits (BLS 3.1.1.5). PULSE_RATE_HIGH/LOW are the 2-bit range field."""

    BODY_MOVEMENT = 0x01
    CUFF_LOOSE = 0x02
    IRREGULAR_PULSE = 0x04
    PULSE_RATE_HIGH = 0x08  # range value 1: exceeds upper limit
    PULSE_RATE_LOW = 0x10  # range value 2: less than lower limit
    IMPROPER_POSITION = 0x20


_STATUS_FLAG_NAMES = {
    BloodPressureStatus.BODY_MOVEMENT: "body_movement",
    BloodPressureStatus.CUFF_LOOSE: "cuff_loose",
    BloodPressureStatus.IRREGULAR_PULSE: "irregular_pulse",
    BloodPressureStatus.PULSE_RATE_HIGH: "pulse_rate_high",
    BloodPressureStatus.PULSE_RATE_LOW: "pulse_rate_low",
    BloodPressureStatus.IMPROPER_POSITION: "improper_position",
}
_set = object.__setattr__
_UNIT_BY_BIT = (PressureUnit.MMHG, PressureUnit.KPA)
_STATUS_BY_RAW = {
    raw: BloodPressureStatus(raw)
    for raw in range(_STATUS_ALLOWED + 1)
    if raw & _PULSE_RANGE_RESERVED != _PULSE_RANGE_RESERVED
}
_UNITS = {PressureUnit.MMHG: mdc.DIM_MMHG, PressureUnit.KPA: mdc.DIM_KILO_PASCAL}


def _check_common(
    unit: object,
    timestamp: object,
    pulse_rate: object,
    user_id: object,
    status: object,
) -> None:
    if not isinstance(unit, PressureUnit):
        raise ValueError("'unit' must be a PressureUnit")
    if timestamp is not None and not isinstance(timestamp, DateTime):
        raise ValueError("'timestamp' must be a DateTime or None")
    if pulse_rate is not None:
        check_number(pulse_rate, "pulse_rate")
    if user_id is not None:
        check_int(user_id, 0, 255, "user_id")
    if status is not None:
        if not isinstance(status, BloodPressureStatus):
            raise ValueError("'status' must be a BloodPressureStatus or None")
        if status & _PULSE_RANGE_RESERVED == _PULSE_RANGE_RESERVED:
            raise ValueError("'status' cannot be both pulse rate high and low")


def _flags(status: BloodPressureStatus | None, user_id: int | None) -> frozenset[str]:
    return _flag_names(0 if status is None else int(status), user_id)


@lru_cache(maxsize=4096)
def _flag_names(status: int, user_id: int | None) -> frozenset[str]:
    names = {name for bit, name in _STATUS_FLAG_NAMES.items() if status & bit}
    if user_id is not None:
        names.add("user:unknown" if user_id == _UNKNOWN_USER else f"user:{user_id}")
    return frozenset(names)


def _encode(
    *,
    unit: PressureUnit,
    first: MedicalNumber,
    second: MedicalNumber,
    third: MedicalNumber,
    timestamp: DateTime | None,
    pulse_rate: MedicalNumber | None,
    user_id: int | None,
    status: BloodPressureStatus | None,
) -> bytes:
    flags = int(unit)
    tail = bytearray()
    if timestamp is not None:
        flags |= _FLAG_TIME
        tail += timestamp.pack()
    if pulse_rate is not None:
        flags |= _FLAG_PULSE
        tail += pack_sfloat(pulse_rate)
    if user_id is not None:
        flags |= _FLAG_USER
        tail.append(user_id)
    if status is not None:
        flags |= _FLAG_STATUS
        tail += struct.pack("<H", int(status))
    head = _HEAD.pack(flags, encode_sfloat(first), encode_sfloat(second), encode_sfloat(third))
    return head + bytes(tail)


def _layout(flags: int) -> struct.Struct:
    fmt = "<BHHH"
    fmt += "HBBBBB" if flags & _FLAG_TIME else ""
    fmt += "H" if flags & _FLAG_PULSE else ""
    fmt += "B" if flags & _FLAG_USER else ""
    fmt += "H" if flags & _FLAG_STATUS else ""
    return struct.Struct(fmt)


# One precompiled layout per legal flags value: a valid value decodes in one unpack.
_LAYOUTS = {flags: _layout(flags) for flags in range(_FLAGS_ALLOWED + 1)}

_Fields = tuple[
    PressureUnit,
    MedicalNumber,
    MedicalNumber,
    MedicalNumber,
    DateTime | None,
    MedicalNumber | None,
    int | None,
    BloodPressureStatus | None,
]


def _decode(label: str, data: bytes) -> _Fields:
    # Fast path for well-formed values; anything odd falls through to the checked reader,
    # which produces the precise error message.
    if data:
        flags = data[0]
        layout = _LAYOUTS.get(flags)
        if layout is not None and len(data) == layout.size:
            fields = layout.unpack(data)
            index = 4
            timestamp = None
            if flags & _FLAG_TIME:
                timestamp = fast_date_time(fields[4:10])
                index = 10
                if timestamp is None:
                    return _decode_checked(label, data)
            pulse_rate = None
            if flags & _FLAG_PULSE:
                pulse_rate = decode_sfloat(fields[index])
                index += 1
            user_id = None
            if flags & _FLAG_USER:
                user_id = fields[index]
                index += 1
            status = None
            if flags & _FLAG_STATUS:
                status = _STATUS_BY_RAW.get(fields[index])
                if status is None:
                    return _decode_checked(label, data)
            return (
                _UNIT_BY_BIT[flags & _FLAG_KPA],
                decode_sfloat(fields[1]),
                decode_sfloat(fields[2]),
                decode_sfloat(fields[3]),
                timestamp,
                pulse_rate,
                user_id,
                status,
            )
    return _decode_checked(label, data)


def _decode_checked(
    label: str, data: bytes
) -> tuple[
    PressureUnit,
    MedicalNumber,
    MedicalNumber,
    MedicalNumber,
    DateTime | None,
    MedicalNumber | None,
    int | None,
    BloodPressureStatus | None,
]:
    reader = Reader(label, data)
    if len(data) >= _HEAD.size:
        # Hot path: the fixed head in one struct call; the reader resumes after it.
        flags, raw_first, raw_second, raw_third = _HEAD.unpack_from(data, 0)
        reader.offset = _HEAD.size
        reader.check_flags(flags, _FLAGS_ALLOWED)
        first = decode_sfloat(raw_first)
        second = decode_sfloat(raw_second)
        third = decode_sfloat(raw_third)
    else:
        flags = reader.u8("flags")
        reader.check_flags(flags, _FLAGS_ALLOWED)
        first = reader.sfloat("systolic")
        second = reader.sfloat("diastolic")
        third = reader.sfloat("mean_arterial_pressure")
    timestamp = reader.date_time("timestamp") if flags & _FLAG_TIME else None
    pulse_rate = reader.sfloat("pulse_rate") if flags & _FLAG_PULSE else None
    user_id = reader.u8("user_id") if flags & _FLAG_USER else None
    status: BloodPressureStatus | None = None
    if flags & _FLAG_STATUS:
        offset = reader.offset
        raw = reader.u16("measurement_status")
        reader.check_flags(raw, _STATUS_ALLOWED, "measurement_status", offset)
        if raw & _PULSE_RANGE_RESERVED == _PULSE_RANGE_RESERVED:
            raise ParseError(
                f"{label}: reserved pulse rate range value in 'measurement_status' "
                f"at offset {offset}"
            )
        status = BloodPressureStatus(raw)
    reader.finish()
    return (
        _UNIT_BY_BIT[flags & _FLAG_KPA],
        first,
        second,
        third,
        timestamp,
        pulse_rate,
        user_id,
        status,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BloodPressureMeasurement(Characteristic):
    """One blood pressure reading (0x2A35)."""

    uuid: ClassVar[int] = 0x2A35
    name: ClassVar[str] = "Blood Pressure Measurement"

    systolic: MedicalNumber
    diastolic: MedicalNumber
    mean_arterial_pressure: MedicalNumber
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: MedicalNumber | None = None
    user_id: int | None = None
    status: BloodPressureStatus | None = None

    def __post_init__(self) -> None:
        check_number(self.systolic, "systolic")
        check_number(self.diastolic, "diastolic")
        check_number(self.mean_arterial_pressure, "mean_arterial_pressure")
        _check_common(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.status)

    def encode(self) -> bytes:
        return _encode(
            unit=self.unit,
            first=self.systolic,
            second=self.diastolic,
            third=self.mean_arterial_pressure,
            timestamp=self.timestamp,
            pulse_rate=self.pulse_rate,
            user_id=self.user_id,
            status=self.status,
        )

    @classmethod
    def decode(cls, data: bytes) -> BloodPressureMeasurement:
        unit, sys_, dia, mean, stamp, pulse, user, status = _decode(_LABEL_BPM, data)
        # The decoder only produces valid fields, so skip the constructor's re-validation on
        # this hot path (the round-trip property tests hold decode and the checks together).
        value = object.__new__(cls)
        _set(value, "systolic", sys_)
        _set(value, "diastolic", dia)
        _set(value, "mean_arterial_pressure", mean)
        _set(value, "unit", unit)
        _set(value, "timestamp", stamp)
        _set(value, "pulse_rate", pulse)
        _set(value, "user_id", user)
        _set(value, "status", status)
        return value

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        when = ctx.timing(self.timestamp)
        flags = _flags(self.status, self.user_id)
        dim = _UNITS[self.unit]
        sys_term, dia_term, mean_term = mdc.BLOOD_PRESSURE_COMPONENTS
        bp = ctx.observation(
            char=self.uuid,
            mdc_code=mdc.PRESS_BLD_NONINV.code,
            value=None,
            unit=dim.ucum,
            unit_mdc=dim.code,
            when=when,
            loinc=mdc.PRESS_BLD_NONINV.loinc,
            components=(
                _trusted_component(sys_term.code, self.systolic, sys_term.loinc),
                _trusted_component(dia_term.code, self.diastolic, dia_term.loinc),
                _trusted_component(mean_term.code, self.mean_arterial_pressure, mean_term.loinc),
            ),
            flags=flags,
        )
        if self.pulse_rate is None:
            return (bp,)
        return (bp, _pulse_observation(ctx, self.uuid, self.pulse_rate, when, flags))


def _pulse_observation(
    ctx: ObservationContext,
    char: int,
    pulse_rate: MedicalNumber,
    when: Timing,
    flags: frozenset[str],
) -> Observation:
    return ctx.observation(
        char=char,
        mdc_code=mdc.PULS_RATE_NON_INV.code,
        value=pulse_rate,
        unit=mdc.DIM_BEAT_PER_MIN.ucum,
        unit_mdc=mdc.DIM_BEAT_PER_MIN.code,
        when=when,
        loinc=mdc.PULS_RATE_NON_INV.loinc,
        flags=flags,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IntermediateCuffPressure(Characteristic):
    """Cuff pressure during a measurement (0x2A36); diastolic/mean go out as NaN, read ignored."""

    uuid: ClassVar[int] = 0x2A36
    name: ClassVar[str] = "Intermediate Cuff Pressure"

    cuff_pressure: MedicalNumber
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: MedicalNumber | None = None
    user_id: int | None = None
    status: BloodPressureStatus | None = None

    def __post_init__(self) -> None:
        check_number(self.cuff_pressure, "cuff_pressure")
        _check_common(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.status)

    def encode(self) -> bytes:
        return _encode(
            unit=self.unit,
            first=self.cuff_pressure,
            second=SpecialValue.NAN,
            third=SpecialValue.NAN,
            timestamp=self.timestamp,
            pulse_rate=self.pulse_rate,
            user_id=self.user_id,
            status=self.status,
        )

    @classmethod
    def decode(cls, data: bytes) -> IntermediateCuffPressure:
        unit, cuff, _dia, _mean, stamp, pulse, user, status = _decode(_LABEL_ICP, data)
        return cls(
            cuff_pressure=cuff,
            unit=unit,
            timestamp=stamp,
            pulse_rate=pulse,
            user_id=user,
            status=status,
        )

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        when = ctx.timing(self.timestamp)
        flags = _flags(self.status, self.user_id)
        dim = _UNITS[self.unit]
        cuff = ctx.observation(
            char=self.uuid,
            mdc_code=mdc.PRESS_CUFF.code,
            value=self.cuff_pressure,
            unit=dim.ucum,
            unit_mdc=dim.code,
            when=when,
            flags=flags,
        )
        if self.pulse_rate is None:
            return (cuff,)
        return (cuff, _pulse_observation(ctx, self.uuid, self.pulse_rate, when, flags))


_LABEL_BPM = f"{BloodPressureMeasurement.name} ({BloodPressureMeasurement.uuid:04X})"
_LABEL_ICP = f"{IntermediateCuffPressure.name} ({IntermediateCuffPressure.uuid:04X})"
