"""The observation model: validation, content id, clock correction, wire dict, time rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phd_protocol import gatt, mdc
from phd_protocol.errors import ParseError
from phd_protocol.gatt import (
    BloodPressureMeasurement,
    DateTime,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseSampleLocation,
    GlucoseType,
    HeartRateMeasurement,
    Meal,
)
from phd_protocol.observation import (
    Component,
    Observation,
    TimeSource,
    apply_clock_correction,
    wire_json,
)
from phd_protocol.sfloat import SpecialValue

NOW = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)
STAMP = DateTime(year=2026, month=11, day=23, hours=8, minutes=15, seconds=30)


def _bp(systolic: str = "120", stamp: DateTime | None = STAMP) -> BloodPressureMeasurement:
    return BloodPressureMeasurement(
        systolic=Decimal(systolic),
        diastolic=Decimal(80),
        mean_arterial_pressure=Decimal(93),
        timestamp=stamp,
    )


def _obs(**overrides: Any) -> Observation:
    fields: dict[str, Any] = {
        "device": "dev-1",
        "mdc_code": mdc.PULS_RATE_NON_INV.code,
        "value": Decimal(72),
        "unit": "/min",
        "unit_mdc": mdc.DIM_BEAT_PER_MIN.code,
        "time": NOW,
        "time_source": TimeSource.DEVICE,
        "device_time": NOW,
    }
    fields.update(overrides)
    return Observation.create(**fields)


# --- content id ---------------------------------------------------------------------------


def test_same_reading_fetched_twice_has_the_same_id() -> None:
    data = _bp().encode()
    first = gatt.to_observations(gatt.decode(0x2A35, data), device="dev-1", received_at=NOW)
    later = NOW + timedelta(days=3)  # downloaded again after a reinstall
    second = gatt.to_observations(gatt.decode(0x2A35, data), device="dev-1", received_at=later)
    assert [o.id for o in first] == [o.id for o in second]


def test_readings_differing_in_time_value_unit_device_differ_in_id() -> None:
    base = _obs()
    variants = [
        _obs(time=NOW + timedelta(seconds=1), device_time=NOW + timedelta(seconds=1)),
        _obs(value=Decimal(73)),
        _obs(value=SpecialValue.NAN),
        _obs(unit="{beats}/min"),
        _obs(device="dev-2"),
        _obs(mdc_code=mdc.PULS_OXIM_PULS_RATE.code),
        _obs(flags=frozenset({"modality:fast"})),
    ]
    ids = {base.id, *(v.id for v in variants)}
    assert len(ids) == len(variants) + 1


def test_id_ignores_the_spelling_of_equal_decimals_and_time_zones() -> None:
    assert _obs(value=Decimal("72")).id == _obs(value=Decimal("72.0")).id
    paris = NOW.astimezone(ZoneInfo("Europe/Paris"))
    assert _obs(time=paris, device_time=paris).id == _obs().id


def test_compound_components_are_part_of_the_id() -> None:
    one = gatt.to_observations(_bp("120"), device="d", received_at=NOW)[0]
    two = gatt.to_observations(_bp("121"), device="d", received_at=NOW)[0]
    assert one.id != two.id


# --- time rules ---------------------------------------------------------------------------


def test_device_time_stamp_is_used_and_read_in_the_device_zone() -> None:
    (utc_obs,) = gatt.to_observations(_bp(), device="d", received_at=NOW)
    assert utc_obs.time == datetime(2026, 11, 23, 8, 15, 30, tzinfo=UTC)
    assert utc_obs.time_source is TimeSource.DEVICE
    assert utc_obs.device_time == utc_obs.time
    (paris_obs,) = gatt.to_observations(
        _bp(), device="d", received_at=NOW, device_tz=ZoneInfo("Europe/Paris")
    )
    assert paris_obs.time == datetime(2026, 11, 23, 7, 15, 30, tzinfo=UTC)
    assert paris_obs.time.tzinfo is UTC


def test_no_time_stamp_means_agent_receive_time() -> None:
    (obs,) = gatt.to_observations(_bp(stamp=None), device="d", received_at=NOW)
    assert obs.time == NOW
    assert obs.time_source is TimeSource.AGENT
    assert obs.device_time is None
    hr = HeartRateMeasurement(heart_rate=60)
    (hr_obs,) = gatt.to_observations(hr, device="d", received_at=NOW)
    assert hr_obs.time_source is TimeSource.AGENT


def test_clock_correction_keeps_device_time_and_id() -> None:
    (obs,) = gatt.to_observations(_bp(), device="d", received_at=NOW)
    corrected = apply_clock_correction(obs, timedelta(minutes=-7))
    assert obs.time is not None
    assert corrected.time == obs.time - timedelta(minutes=7)
    assert corrected.device_time == obs.time
    assert corrected.clock_corrected is True
    assert corrected.id == obs.id
    # Correcting again starts from the original device time, not the corrected one.
    twice = corrected.with_clock_correction(timedelta(minutes=-5))
    assert twice.time == obs.time - timedelta(minutes=5)
    assert twice.device_time == obs.time


def test_clock_correction_leaves_agent_timed_observations_alone() -> None:
    (obs,) = gatt.to_observations(_bp(stamp=None), device="d", received_at=NOW)
    assert apply_clock_correction(obs, timedelta(hours=1)) is obs


def test_glucose_time_offset_and_context_pairing() -> None:
    measurement = GlucoseMeasurement(
        sequence_number=3,
        base_time=STAMP,
        time_offset=30,
        concentration=Decimal("0.00105"),
        type=GlucoseType.CAPILLARY_PLASMA,
        sample_location=GlucoseSampleLocation.FINGER,
        context_follows=True,
    )
    context = GlucoseMeasurementContext(sequence_number=3, meal=Meal.FASTING, hba1c=Decimal("6.1"))
    glucose, hba1c = gatt.to_observations(measurement, device="d", received_at=NOW, context=context)
    assert glucose.value == Decimal(105)
    assert glucose.unit == "mg/dL"
    assert glucose.time == datetime(2026, 11, 23, 8, 45, 30, tzinfo=UTC)
    assert "meal:fasting" in glucose.flags
    assert hba1c.mdc_code == mdc.CONC_HBA1C.code
    assert hba1c.time == glucose.time
    with pytest.raises(ValueError, match="different sequence numbers"):
        gatt.to_observations(
            measurement,
            device="d",
            received_at=NOW,
            context=GlucoseMeasurementContext(sequence_number=4),
        )


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"time": datetime(2026, 1, 1)}, "timezone-aware"),  # noqa: DTZ001 - the point
        ({"value": 72.0}, "finite Decimal or a SpecialValue"),
        ({"value": Decimal("NaN")}, "finite Decimal or a SpecialValue"),
        ({"value": None}, "needs a value"),
        ({"unit": ""}, "UCUM"),
        ({"unit_mdc": 2720}, "partition 4"),
        ({"mdc_code": 0}, "32-bit MDC code"),
        ({"mdc_code": True}, "32-bit MDC code"),
        ({"flags": frozenset({"Bad Flag"})}, "a flag must be"),
        ({"loinc": "8867"}, "LOINC"),
        ({"device": ""}, "device must be"),
        ({"char": 0x10000}, "16-bit characteristic UUID"),
    ],
)
def test_invalid_observations_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _obs(**overrides)


def test_error_messages_carry_no_values() -> None:
    with pytest.raises(ValueError, match="finite Decimal") as info:
        _obs(value=123.456)
    assert "123" not in str(info.value)


def test_clock_corrected_needs_device_time() -> None:
    obs = _obs(device_time=None)
    with pytest.raises(ValueError, match="keep its device_time"):
        Observation(**{**_fields(obs), "clock_corrected": True})


def _fields(obs: Observation) -> dict[str, Any]:
    return {name: getattr(obs, name) for name in Observation.__dataclass_fields__}


# --- wire dict ------------------------------------------------------------------------------


def test_wire_dict_shape_and_round_trip() -> None:
    bp, pulse = gatt.to_observations(
        BloodPressureMeasurement(
            systolic=Decimal("120.5"),
            diastolic=Decimal(80),
            mean_arterial_pressure=SpecialValue.NAN,
            timestamp=STAMP,
            pulse_rate=Decimal(72),
            user_id=1,
        ),
        device="dev-1",
        received_at=NOW,
    )
    wire = bp.to_wire()
    assert wire["mdc_code"] == 150020
    assert wire["value"] is None
    assert wire["unit"] == "mm[Hg]"
    assert wire["unit_mdc"] == 266016
    assert wire["time"] == "2026-11-23T08:15:30Z"
    assert wire["time_source"] == "device"
    assert wire["char"] == "2A35"
    assert wire["components"][0] == {
        "mdc_code": 150021,
        "value": Decimal("120.5"),
        "loinc": "8480-6",
    }
    assert wire["components"][2]["value"] == "NaN"
    assert wire["flags"] == ["user:1"]
    for obs in (bp, pulse, apply_clock_correction(pulse, timedelta(seconds=42))):
        assert Observation.from_wire(obs.to_wire()) == obs


def test_wire_dict_survives_json_with_exact_numbers() -> None:
    (obs,) = gatt.to_observations(_bp("120.5", None), device="d", received_at=NOW)
    text = wire_json(obs.to_wire(), indent=2)
    assert '"value": 120.5' in text
    back = Observation.from_wire(json.loads(text, parse_float=Decimal))
    assert back.components[0].value == Decimal("120.5")
    assert back == obs


def _good_wire() -> dict[str, Any]:
    return _obs(loinc="8867-4", flags=frozenset({"user:1"}), char=0x2A35).to_wire()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w: w.pop("id"), "missing key"),
        (lambda w: w.update(extra=1), "unknown key"),
        (lambda w: w.update(value=72.0), "not a float"),
        (lambda w: w.update(value="72"), "not a number or a known special value"),
        (lambda w: w.update(value=True), "not a boolean"),
        (lambda w: w.update(mdc_code="150020"), "mdc_code must be an integer"),
        (lambda w: w.update(time="yesterday"), "time is not ISO 8601"),
        (lambda w: w.update(time="2026-11-23T08:00:00"), "must carry a UTC offset"),
        (lambda w: w.update(time_source="gateway"), "time_source"),
        (lambda w: w.update(id="XYZ"), "id must be 32 lowercase hex digits"),
        (lambda w: w.update(flags="user:1"), "flags must be a list"),
        (lambda w: w.update(flags=["a", "a"]), "must not repeat"),
        (lambda w: w.update(char="2a35"), "char must be four uppercase hex digits"),
        (lambda w: w.update(components=[{"mdc_code": 1}]), "components[0]"),
        (lambda w: w.update(clock_corrected="yes"), "clock_corrected must be a boolean"),
        (lambda w: w.update(unit_mdc=True), "unit_mdc must be an integer"),
    ],
)
def test_from_wire_is_strict(mutate: Any, message: str) -> None:
    wire = _good_wire()
    mutate(wire)
    with pytest.raises(ParseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Observation.from_wire(wire)


_ODD_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [
        None,
        True,
        0,
        -1,
        1 << 40,
        "",
        "x",
        "NaN",
        "2A35",
        "2026-11-23T08:00:00Z",
        "2026-11-23T08:00:00",
        "8867-4",
        "Bad Flag",
        Decimal("1.5"),
        Decimal("NaN"),
        1.5,
        [],
        ["user:1"],
        ["a", "a"],
        ["A"],
        [{"mdc_code": 150021, "value": Decimal(1)}],
        [{"mdc_code": 0, "value": Decimal(1)}],
        [{"mdc_code": 150021, "value": 1.5}],
        [{"mdc_code": 150021, "value": Decimal(1), "loinc": "x"}],
        {},
        266016,
        2720,
        "0" * 32,
        "f" * 33,
    ]
)


@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "mdc_code",
                "value",
                "unit",
                "unit_mdc",
                "time",
                "time_source",
                "loinc",
                "device_time",
                "clock_corrected",
                "flags",
                "components",
                "char",
            ]
        ),
        _ODD_VALUES,
        max_size=3,
    )
)
def test_from_wire_accepts_nothing_the_constructor_refuses(changes: dict[str, Any]) -> None:
    # from_wire checks every constructor rule once and then skips the constructor (speed):
    # whatever it accepts must pass the constructor's own checks unchanged.
    wire = {**_good_wire(), **changes}
    try:
        obs = Observation.from_wire(wire)
    except ParseError:
        return
    assert Observation(**_fields(obs)) == obs


@pytest.mark.parametrize("junk", [None, [], "obs", 42, {1: 2}])
def test_from_wire_refuses_non_maps(junk: object) -> None:
    with pytest.raises(ParseError):
        Observation.from_wire(junk)


def test_from_wire_accepts_integer_values_and_offsets() -> None:
    wire = _good_wire()
    wire["value"] = 72
    wire["time"] = "2026-11-23T10:00:00+01:00"
    obs = Observation.from_wire(wire)
    assert obs.value == Decimal(72)
    assert obs.time == NOW
    assert obs.time.tzinfo is UTC


def test_components_validate() -> None:
    with pytest.raises(ValueError, match="component value"):
        Component(mdc_code=150021, value=1.5)  # type: ignore[arg-type]  # the point
    obs = Observation.create(
        device="d",
        mdc_code=150020,
        value=None,
        components=(Component(mdc_code=150021, value=Decimal(1)),),
        unit="mm[Hg]",
        unit_mdc=266016,
        time=None,
        time_source=TimeSource.AGENT,
    )
    assert obs.to_wire()["time"] is None
    assert Observation.from_wire(obs.to_wire()) == obs


def test_time_zone_offsets_normalise_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    obs = _obs(time=datetime(2026, 11, 23, 11, 0, tzinfo=plus_two), device_time=None)
    assert obs.time == NOW
    assert obs.to_wire()["time"] == "2026-11-23T09:00:00Z"


def test_wire_json_writes_exact_numbers() -> None:
    data = {"a": [Decimal("120.5"), Decimal("1E+2"), Decimal("0.1"), 3, None, True, "x\u00e9"]}
    text = wire_json(data)
    assert text == '{"a": [120.5, 100, 0.1, 3, null, true, "x\u00e9"]}'
    assert json.loads(text, parse_float=Decimal) == {
        "a": [Decimal("120.5"), 100, Decimal("0.1"), 3, None, True, "x\u00e9"]
    }
    assert json.loads(wire_json(data, indent=2)) == json.loads(text)
    with pytest.raises(TypeError):
        wire_json({"a": 1.5})
    with pytest.raises(TypeError):
        wire_json({1: 2})
