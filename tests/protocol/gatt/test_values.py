"""Value classes cannot be built invalid: the encoders' inputs are checked at construction."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from phd_protocol.gatt import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    DateTime,
    GlucoseMeasurement,
    GlucoseSampleLocation,
    HeartRateMeasurement,
    ManufacturerName,
    PlxContinuousMeasurement,
    TemperatureMeasurement,
    WeightMeasurement,
    WeightUnit,
)
from phd_protocol.sfloat import SpecialValue

D = Decimal
NOON = DateTime(year=2026, month=1, day=1, hours=12)


def _bp(**overrides: object) -> BloodPressureMeasurement:
    fields: dict[str, object] = {
        "systolic": D(120),
        "diastolic": D(80),
        "mean_arterial_pressure": D(93),
    }
    fields.update(overrides)
    return BloodPressureMeasurement(**fields)  # type: ignore[arg-type]  # deliberately wrong


CASES: list[tuple[str, Callable[[], object], str]] = [
    ("float systolic", lambda: _bp(systolic=120.5), "'systolic' must be a Decimal"),
    ("sNaN systolic", lambda: _bp(systolic=D("sNaN")), "'systolic' must be finite"),
    ("too precise", lambda: _bp(systolic=D("120.55")), "'systolic': SFLOAT cannot represent"),
    ("user 256", lambda: _bp(user_id=256), "'user_id' must be an integer in 0..255"),
    (
        "pulse range high and low",
        lambda: _bp(status=BloodPressureStatus(0x18)),
        "both pulse rate high and low",
    ),
    ("naive stamp type", lambda: _bp(timestamp="2026-01-01"), "'timestamp' must be a DateTime"),
    ("31 April", lambda: DateTime(year=2026, month=4, day=31), "past the end of the month"),
    (
        "concentration without type",
        lambda: GlucoseMeasurement(sequence_number=1, base_time=NOON, concentration=D("0.001")),
        "come together or not at all",
    ),
    (
        "sequence number 65536",
        lambda: GlucoseMeasurement(sequence_number=65536, base_time=NOON),
        "'sequence_number' must be an integer in 0..65535",
    ),
    (
        "glucose type as int",
        lambda: GlucoseMeasurement(
            sequence_number=1,
            base_time=NOON,
            concentration=D("0.001"),
            type=1,  # type: ignore[arg-type]  # deliberately wrong
            sample_location=GlucoseSampleLocation.FINGER,
        ),
        "'type' must be a GlucoseType",
    ),
    (
        "weight off the 5 g grid",
        lambda: WeightMeasurement(weight=D("70.502")),
        "not a whole multiple of the resolution",
    ),
    (
        "negative weight",
        lambda: WeightMeasurement(weight=D("-1")),
        "not a whole multiple of the resolution",
    ),
    (
        "weight +INF",
        lambda: WeightMeasurement(weight=SpecialValue.POS_INF, unit=WeightUnit.SI),
        "can only be NaN",
    ),
    (
        "BMI without height",
        lambda: WeightMeasurement(weight=D(70), bmi=D("22.1")),
        "'bmi' and 'height' come together",
    ),
    (
        "uint8 heart rate 256",
        lambda: HeartRateMeasurement(heart_rate=256),
        "'heart_rate' must be an integer in 0..255",
    ),
    (
        "RR list",
        lambda: HeartRateMeasurement(heart_rate=60, rr_intervals=[1024]),  # type: ignore[arg-type]
        "'rr_intervals' must be a tuple",
    ),
    (
        "FLOAT too precise",
        lambda: TemperatureMeasurement(temperature=D("36.123456789")),
        "'temperature': FLOAT cannot represent",
    ),
    (
        "fast pair half given",
        lambda: PlxContinuousMeasurement(spo2=D(98), pulse_rate=D(70), spo2_fast=D(97)),
        "come together",
    ),
    ("control character", lambda: ManufacturerName(value="A\nB"), "control characters"),
    ("string too long", lambda: ManufacturerName(value="x" * 249), "at most 248 bytes"),
]


@pytest.mark.parametrize(("build", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_values_are_refused(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_refusals_name_the_field_not_the_value() -> None:
    with pytest.raises(ValueError, match="systolic") as info:
        _bp(systolic=D("123.456"))
    assert "123" not in str(info.value)
