"""Weight Measurement 0x2A9D (WSS 1.0 section 3.1 / GSS "Weight Measurement").

Layout::

    flags        uint8    bit0 unit (0 SI, 1 imperial), bit1 time stamp present, bit2 user id
                          present, bit3 BMI and height present, bits 4-7 RFU
    weight       uint16   SI: 0.005 kg, imperial: 0.01 lb; 0xFFFF = measurement unsuccessful
    time stamp   Date Time (7)   if bit1
    user id      uint8           if bit2 (0xFF = unknown user)
    BMI          uint16          if bit3 (0.1 kg/m2)
    height       uint16          if bit3 (SI: 0.001 m, imperial: 0.1 in)

Values are exact decimals (raw x resolution); "measurement unsuccessful" decodes to
``SpecialValue.NAN`` and encodes back to 0xFFFF. Height is reported in cm / [in_i] as the
IEEE 11073-10415 and FHIR body-height profiles expect.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from phd_protocol import mdc
from phd_protocol.gatt._codec import Characteristic, ObservationContext, Reader, check_int, scale
from phd_protocol.gatt.date_time import DateTime
from phd_protocol.observation import Observation
from phd_protocol.sfloat import MedicalNumber, SpecialValue

__all__ = ["WeightMeasurement", "WeightUnit"]

_FLAG_IMPERIAL = 0x01
_FLAG_TIME = 0x02
_FLAG_USER = 0x04
_FLAG_BMI_HEIGHT = 0x08
_FLAGS_ALLOWED = 0x0F
_UNSUCCESSFUL = 0xFFFF
_UNKNOWN_USER = 0xFF
_U16 = struct.Struct("<H")

# Resolutions as (numerator, power of ten): value = raw * numerator * 10**power.
_WEIGHT_SI = (5, -3)  # 0.005 kg
_WEIGHT_IMPERIAL = (1, -2)  # 0.01 lb
_BMI = (1, -1)  # 0.1 kg/m2
_HEIGHT_SI = (1, -3)  # 0.001 m
_HEIGHT_IMPERIAL = (1, -1)  # 0.1 in


class WeightUnit(enum.IntEnum):
    SI = 0  # kg and m
    IMPERIAL = 1  # lb and in


def _from_raw(raw: int, resolution: tuple[int, int]) -> MedicalNumber:
    if raw == _UNSUCCESSFUL:
        return SpecialValue.NAN
    numerator, power = resolution
    return Decimal(raw * numerator).scaleb(power)


def _to_raw(value: object, resolution: tuple[int, int], field: str) -> int:
    if isinstance(value, SpecialValue):
        if value is SpecialValue.NAN:
            return _UNSUCCESSFUL
        raise ValueError(f"'{field}' can only be NaN (measurement unsuccessful) as a special")
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"'{field}' must be a Decimal or SpecialValue.NAN")
    numerator, power = resolution
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # pragma: no cover - finite, checked above
        raise ValueError(f"'{field}' must be finite")
    # value / 10**power as an exact integer, or refuse: no rounding, ever.
    shift = exponent - power
    coefficient = int("".join(map(str, digits)) or "0")
    factor = int(10 ** abs(shift))
    if shift >= 0:
        scaled = coefficient * factor
    elif coefficient % factor == 0:
        scaled = coefficient // factor
    else:
        scaled = -1
    if sign and scaled:
        scaled = -1
    if scaled < 0 or scaled % numerator or not 0 <= scaled // numerator < _UNSUCCESSFUL:
        raise ValueError(f"'{field}' is not a whole multiple of the resolution within range")
    return scaled // numerator


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightMeasurement(Characteristic):
    """One scale reading (0x2A9D). Weight in kg or lb, height in m or in, BMI in kg/m2."""

    uuid: ClassVar[int] = 0x2A9D
    name: ClassVar[str] = "Weight Measurement"

    weight: MedicalNumber
    unit: WeightUnit = WeightUnit.SI
    timestamp: DateTime | None = None
    user_id: int | None = None
    bmi: MedicalNumber | None = None
    height: MedicalNumber | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.unit, WeightUnit):
            raise ValueError("'unit' must be a WeightUnit")
        imperial = self.unit is WeightUnit.IMPERIAL
        _to_raw(self.weight, _WEIGHT_IMPERIAL if imperial else _WEIGHT_SI, "weight")
        if self.timestamp is not None and not isinstance(self.timestamp, DateTime):
            raise ValueError("'timestamp' must be a DateTime or None")
        if self.user_id is not None:
            check_int(self.user_id, 0, 255, "user_id")
        if (self.bmi is None) != (self.height is None):
            raise ValueError("'bmi' and 'height' come together or not at all")
        if self.bmi is not None and self.height is not None:
            _to_raw(self.bmi, _BMI, "bmi")
            _to_raw(self.height, _HEIGHT_IMPERIAL if imperial else _HEIGHT_SI, "height")

    def encode(self) -> bytes:
        imperial = self.unit is WeightUnit.IMPERIAL
        flags = int(self.unit)
        out = bytearray(_U16.pack(_to_raw(self.weight, _weight_res(imperial), "weight")))
        if self.timestamp is not None:
            flags |= _FLAG_TIME
            out += self.timestamp.pack()
        if self.user_id is not None:
            flags |= _FLAG_USER
            out.append(self.user_id)
        if self.bmi is not None and self.height is not None:
            flags |= _FLAG_BMI_HEIGHT
            out += _U16.pack(_to_raw(self.bmi, _BMI, "bmi"))
            out += _U16.pack(_to_raw(self.height, _height_res(imperial), "height"))
        return bytes((flags,)) + bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> WeightMeasurement:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        flags = reader.u8("flags")
        reader.check_flags(flags, _FLAGS_ALLOWED)
        imperial = bool(flags & _FLAG_IMPERIAL)
        weight = _from_raw(reader.u16("weight"), _weight_res(imperial))
        timestamp = reader.date_time("timestamp") if flags & _FLAG_TIME else None
        user_id = reader.u8("user_id") if flags & _FLAG_USER else None
        bmi = height = None
        if flags & _FLAG_BMI_HEIGHT:
            bmi = _from_raw(reader.u16("bmi"), _BMI)
            height = _from_raw(reader.u16("height"), _height_res(imperial))
        reader.finish()
        return cls(
            weight=weight,
            unit=WeightUnit(int(imperial)),
            timestamp=timestamp,
            user_id=user_id,
            bmi=bmi,
            height=height,
        )

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        when = ctx.timing(self.timestamp)
        flags: frozenset[str] = frozenset()
        if self.user_id is not None:
            flags = frozenset(
                {"user:unknown" if self.user_id == _UNKNOWN_USER else f"user:{self.user_id}"}
            )
        imperial = self.unit is WeightUnit.IMPERIAL
        weight_dim = mdc.DIM_LB if imperial else mdc.DIM_KILO_G
        out = [
            ctx.observation(
                char=self.uuid,
                mdc_code=mdc.MASS_BODY_ACTUAL.code,
                value=self.weight,
                unit=weight_dim.ucum,
                unit_mdc=weight_dim.code,
                when=when,
                loinc=mdc.MASS_BODY_ACTUAL.loinc,
                flags=flags,
            )
        ]
        if self.bmi is not None and self.height is not None:
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.RATIO_MASS_BODY_LEN_SQ.code,
                    value=self.bmi,
                    unit=mdc.DIM_KG_PER_M_SQ.ucum,
                    unit_mdc=mdc.DIM_KG_PER_M_SQ.code,
                    when=when,
                    loinc=mdc.RATIO_MASS_BODY_LEN_SQ.loinc,
                    flags=flags,
                )
            )
            height_dim = mdc.DIM_INCH if imperial else mdc.DIM_CENTI_M
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.LEN_BODY_ACTUAL.code,
                    value=self.height if imperial else scale(self.height, 2),  # m -> cm
                    unit=height_dim.ucum,
                    unit_mdc=height_dim.code,
                    when=when,
                    loinc=mdc.LEN_BODY_ACTUAL.loinc,
                    flags=flags,
                )
            )
        return tuple(out)


def _weight_res(imperial: bool) -> tuple[int, int]:
    return _WEIGHT_IMPERIAL if imperial else _WEIGHT_SI


def _height_res(imperial: bool) -> tuple[int, int]:
    return _HEIGHT_IMPERIAL if imperial else _HEIGHT_SI
