"""Glucose Measurement Context 0x2A34 (GLS 1.0 section 3.105 / GSS "Glucose Measurement Context").

Sent after a Glucose Measurement whose "context information follows" flag is set, with the same
sequence number. Layout::

    flags               uint8   bit0 carbohydrate id + carbohydrate present, bit1 meal present,
                                bit2 tester-health present, bit3 exercise duration + intensity
                                present, bit4 medication id + medication present, bit5
                                medication unit (0 kg, 1 litre), bit6 HbA1c present, bit7
                                extended flags present
    sequence number     uint16
    extended flags      uint8   if bit7 (all bits RFU in GLS 1.0: must be 0)
    carbohydrate id     uint8   if bit0 (1 breakfast .. 7 brunch)
    carbohydrate        SFLOAT  if bit0 (kilograms)
    meal                uint8   if bit1 (1 preprandial .. 5 bedtime)
    tester (low nibble)
    health (high)       uint8   if bit2 (least significant nibble first, as for the Type-Sample
                                Location of 0x2A18; some older collectors read it swapped)
    exercise duration   uint16  if bit3 (seconds; 65535 = overrun)
    exercise intensity  uint8   if bit3 (percent)
    medication id       uint8   if bit4 (1 rapid acting insulin .. 5 pre-mixed insulin)
    medication          SFLOAT  if bit4 (kilograms or litres per bit5)
    HbA1c               SFLOAT  if bit6 (percent)

Meal, tester and health become flags on the glucose observation; carbohydrate (g), exercise
(intensity %, duration s), medication (mg or mL) and HbA1c (%) become observations of their own.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from phd_protocol import mdc
from phd_protocol.gatt._codec import (
    Characteristic,
    ObservationContext,
    Reader,
    Timing,
    check_int,
    check_number,
    pack_sfloat,
    scale,
)
from phd_protocol.observation import Observation
from phd_protocol.sfloat import MedicalNumber, SpecialValue

__all__ = [
    "CarbohydrateId",
    "GlucoseMeasurementContext",
    "Health",
    "Meal",
    "MedicationId",
    "MedicationUnit",
    "Tester",
]

_FLAG_CARB = 0x01
_FLAG_MEAL = 0x02
_FLAG_TESTER = 0x04
_FLAG_EXERCISE = 0x08
_FLAG_MEDICATION = 0x10
_FLAG_MED_LITRES = 0x20
_FLAG_HBA1C = 0x40
_FLAG_EXTENDED = 0x80
_EXERCISE_OVERRUN = 0xFFFF


class CarbohydrateId(enum.IntEnum):
    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(enum.IntEnum):
    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class Tester(enum.IntEnum):
    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(enum.IntEnum):
    MINOR_ISSUES = 1
    MAJOR_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(enum.IntEnum):
    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


class MedicationUnit(enum.IntEnum):
    KILOGRAMS = 0
    LITRES = 1


def _enum_or_fail(reader: Reader, kind: type[enum.IntEnum], raw: int, field: str, at: int) -> int:
    try:
        return kind(raw)
    except ValueError:
        raise reader.fail(f"reserved value in '{field}' at offset {at}") from None


def _pair(first: object, second: object, names: str) -> None:
    if (first is None) != (second is None):
        raise ValueError(f"{names} come together or not at all")


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseMeasurementContext(Characteristic):
    """Context of the glucose record with the same sequence number (0x2A34)."""

    uuid: ClassVar[int] = 0x2A34
    name: ClassVar[str] = "Glucose Measurement Context"

    sequence_number: int
    extended_flags: int | None = None
    carbohydrate_id: CarbohydrateId | None = None
    carbohydrate: MedicalNumber | None = None  # kilograms
    meal: Meal | None = None
    tester: Tester | None = None
    health: Health | None = None
    exercise_duration: int | None = None  # seconds, 65535 = overrun
    exercise_intensity: int | None = None  # percent
    medication_id: MedicationId | None = None
    medication: MedicalNumber | None = None
    medication_unit: MedicationUnit = MedicationUnit.KILOGRAMS
    hba1c: MedicalNumber | None = None  # percent

    def __post_init__(self) -> None:
        check_int(self.sequence_number, 0, 0xFFFF, "sequence_number")
        if self.extended_flags is not None:
            # GLS 1.0 defines no extended flag: every bit is RFU.
            check_int(self.extended_flags, 0, 0, "extended_flags")
        _pair(self.carbohydrate_id, self.carbohydrate, "'carbohydrate_id' and 'carbohydrate'")
        _pair(self.tester, self.health, "'tester' and 'health'")
        _pair(
            self.exercise_duration,
            self.exercise_intensity,
            "'exercise_duration' and 'exercise_intensity'",
        )
        _pair(self.medication_id, self.medication, "'medication_id' and 'medication'")
        for value, kind, field in (
            (self.carbohydrate_id, CarbohydrateId, "carbohydrate_id"),
            (self.meal, Meal, "meal"),
            (self.tester, Tester, "tester"),
            (self.health, Health, "health"),
            (self.medication_id, MedicationId, "medication_id"),
        ):
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"'{field}' must be a {kind.__name__}")
        if not isinstance(self.medication_unit, MedicationUnit):
            raise ValueError("'medication_unit' must be a MedicationUnit")
        for number, field in (
            (self.carbohydrate, "carbohydrate"),
            (self.medication, "medication"),
            (self.hba1c, "hba1c"),
        ):
            if number is not None:
                check_number(number, field)
        if self.exercise_duration is not None:
            check_int(self.exercise_duration, 0, 0xFFFF, "exercise_duration")
        if self.exercise_intensity is not None:
            check_int(self.exercise_intensity, 0, 255, "exercise_intensity")

    def encode(self) -> bytes:
        flags = 0
        out = bytearray()
        if self.extended_flags is not None:
            flags |= _FLAG_EXTENDED
            out.append(self.extended_flags)
        if self.carbohydrate_id is not None and self.carbohydrate is not None:
            flags |= _FLAG_CARB
            out.append(self.carbohydrate_id)
            out += pack_sfloat(self.carbohydrate)
        if self.meal is not None:
            flags |= _FLAG_MEAL
            out.append(self.meal)
        if self.tester is not None and self.health is not None:
            flags |= _FLAG_TESTER
            out.append(int(self.tester) | (int(self.health) << 4))
        if self.exercise_duration is not None and self.exercise_intensity is not None:
            flags |= _FLAG_EXERCISE
            out += struct.pack("<HB", self.exercise_duration, self.exercise_intensity)
        if self.medication_id is not None and self.medication is not None:
            flags |= _FLAG_MEDICATION
            out.append(self.medication_id)
            out += pack_sfloat(self.medication)
        if self.medication_unit is MedicationUnit.LITRES:
            flags |= _FLAG_MED_LITRES
        if self.hba1c is not None:
            flags |= _FLAG_HBA1C
            out += pack_sfloat(self.hba1c)
        return struct.pack("<BH", flags, self.sequence_number) + bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> GlucoseMeasurementContext:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        flags = reader.u8("flags")
        sequence = reader.u16("sequence_number")
        fields: dict[str, object] = {"sequence_number": sequence}
        if flags & _FLAG_EXTENDED:
            at = reader.offset
            extended = reader.u8("extended_flags")
            reader.check_flags(extended, 0, "extended_flags", at)
            fields["extended_flags"] = extended
        if flags & _FLAG_CARB:
            at = reader.offset
            raw = reader.u8("carbohydrate_id")
            fields["carbohydrate_id"] = _enum_or_fail(
                reader, CarbohydrateId, raw, "carbohydrate_id", at
            )
            fields["carbohydrate"] = reader.sfloat("carbohydrate")
        if flags & _FLAG_MEAL:
            at = reader.offset
            fields["meal"] = _enum_or_fail(reader, Meal, reader.u8("meal"), "meal", at)
        if flags & _FLAG_TESTER:
            at = reader.offset
            packed = reader.u8("tester_health")
            fields["tester"] = _enum_or_fail(reader, Tester, packed & 0x0F, "tester", at)
            fields["health"] = _enum_or_fail(reader, Health, packed >> 4, "health", at)
        if flags & _FLAG_EXERCISE:
            fields["exercise_duration"] = reader.u16("exercise_duration")
            fields["exercise_intensity"] = reader.u8("exercise_intensity")
        if flags & _FLAG_MEDICATION:
            at = reader.offset
            raw = reader.u8("medication_id")
            fields["medication_id"] = _enum_or_fail(reader, MedicationId, raw, "medication_id", at)
            fields["medication"] = reader.sfloat("medication")
        if flags & _FLAG_HBA1C:
            fields["hba1c"] = reader.sfloat("hba1c")
        reader.finish()
        fields["medication_unit"] = MedicationUnit(1 if flags & _FLAG_MED_LITRES else 0)
        return cls(**fields)  # type: ignore[arg-type]  # keys and types set just above

    def measurement_flags(self) -> frozenset[str]:
        """Flags this context adds to the glucose observation it belongs to."""
        names: set[str] = set()
        if self.meal is not None:
            names.add(f"meal:{self.meal.name.lower()}")
        if self.tester is not None:
            names.add(f"tester:{self.tester.name.lower()}")
        if self.health is not None:
            names.add(f"health:{self.health.name.lower()}")
        return frozenset(names)

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        """Stand-alone, timed by the agent; for the paired form see gatt.to_observations."""
        return self.observations_at(ctx, ctx.timing(None))

    def observations_at(self, ctx: ObservationContext, when: Timing) -> tuple[Observation, ...]:
        out: list[Observation] = []
        if self.carbohydrate_id is not None and self.carbohydrate is not None:
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.CTXT_GLU_CARB.code,
                    value=scale(self.carbohydrate, 3),  # kg -> g
                    unit=mdc.DIM_X_G.ucum,
                    unit_mdc=mdc.DIM_X_G.code,
                    when=when,
                    flags=frozenset({f"carbohydrate:{self.carbohydrate_id.name.lower()}"}),
                )
            )
        if self.exercise_duration is not None and self.exercise_intensity is not None:
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.CTXT_GLU_EXERCISE.code,
                    value=_int(self.exercise_intensity),
                    unit=mdc.DIM_PERCENT.ucum,
                    unit_mdc=mdc.DIM_PERCENT.code,
                    when=when,
                )
            )
            duration: MedicalNumber = (
                SpecialValue.POS_INF
                if self.exercise_duration == _EXERCISE_OVERRUN
                else _int(self.exercise_duration)
            )
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.HF_ACTIVITY_TIME.code,
                    value=duration,
                    unit=mdc.DIM_SEC.ucum,
                    unit_mdc=mdc.DIM_SEC.code,
                    when=when,
                )
            )
        if self.medication_id is not None and self.medication is not None:
            if self.medication_unit is MedicationUnit.KILOGRAMS:
                dim, power = mdc.DIM_MILLI_G, 6
            else:
                dim, power = mdc.DIM_MILLI_L, 3
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.CTXT_MEDICATION.code,
                    value=scale(self.medication, power),
                    unit=dim.ucum,
                    unit_mdc=dim.code,
                    when=when,
                    flags=frozenset({f"medication:{self.medication_id.name.lower()}"}),
                )
            )
        if self.hba1c is not None:
            out.append(
                ctx.observation(
                    char=self.uuid,
                    mdc_code=mdc.CONC_HBA1C.code,
                    value=self.hba1c,
                    unit=mdc.DIM_PERCENT.ucum,
                    unit_mdc=mdc.DIM_PERCENT.code,
                    when=when,
                )
            )
        return tuple(out)


def _int(value: int) -> MedicalNumber:
    return Decimal(value)
