"""Hypothesis strategies that build every GATT value class, valid by construction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from phd_protocol import gatt
from phd_protocol.gatt import (
    AdjustReason,
    BloodPressureMeasurement,
    BloodPressureStatus,
    BodySensorLocation,
    CarbohydrateId,
    CurrentTime,
    DateTime,
    FirmwareRevision,
    GlucoseConcentrationUnit,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseSampleLocation,
    GlucoseSensorStatus,
    GlucoseType,
    HardwareRevision,
    Health,
    HeartRateMeasurement,
    IntermediateCuffPressure,
    IntermediateTemperature,
    ManufacturerName,
    Meal,
    MedicationId,
    MedicationUnit,
    ModelNumber,
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
    PnpId,
    PressureUnit,
    RacpFilterType,
    RacpNumberOfRecords,
    RacpOpCode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    SensorLocation,
    SerialNumber,
    SoftwareRevision,
    SystemId,
    TemperatureMeasurement,
    TemperatureSite,
    TemperatureType,
    TemperatureUnit,
    Tester,
    VendorIdSource,
    WeightMeasurement,
    WeightUnit,
)
from phd_protocol.sfloat import FLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX, SpecialValue

# GATT Date Time is a zone-less wall clock, so these bounds are naive on purpose.
_EARLIEST = datetime(1582, 1, 1)  # noqa: DTZ001
_LATEST = datetime(9999, 12, 31)  # noqa: DTZ001
_RECENT = datetime(2000, 1, 1)  # noqa: DTZ001


def _number(mantissa: int, exponent: int) -> Decimal:
    return Decimal((1 if mantissa < 0 else 0, tuple(int(c) for c in str(abs(mantissa))), exponent))


specials = st.sampled_from(list(SpecialValue))
sfloats = st.one_of(
    specials,
    st.builds(
        _number,
        st.integers(-SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX),
        st.integers(-8, 7),
    ),
)
floats32 = st.one_of(
    specials,
    st.builds(
        _number,
        st.integers(-FLOAT_MANTISSA_MAX, FLOAT_MANTISSA_MAX),
        st.integers(-128, 127),
    ),
)
u8s = st.integers(0, 0xFF)
u16s = st.integers(0, 0xFFFF)

date_times = st.one_of(
    st.just(DateTime()),
    st.datetimes(min_value=_EARLIEST, max_value=_LATEST).map(DateTime.from_datetime),
    st.builds(
        DateTime,
        year=st.just(0),
        month=st.integers(0, 12),
        day=st.integers(0, 31),
        hours=st.integers(0, 23),
        minutes=st.integers(0, 59),
        seconds=st.integers(0, 59),
    ),
)


def _flag(kind: Any, mask: int) -> st.SearchStrategy[Any]:
    return st.integers(0, mask).map(lambda raw: kind(raw & mask))


bp_status = st.integers(0, 0x3F).filter(lambda r: r & 0x18 != 0x18).map(BloodPressureStatus)

blood_pressure = st.builds(
    BloodPressureMeasurement,
    systolic=sfloats,
    diastolic=sfloats,
    mean_arterial_pressure=sfloats,
    unit=st.sampled_from(PressureUnit),
    timestamp=st.none() | date_times,
    pulse_rate=st.none() | sfloats,
    user_id=st.none() | u8s,
    status=st.none() | bp_status,
)
cuff_pressure = st.builds(
    IntermediateCuffPressure,
    cuff_pressure=sfloats,
    unit=st.sampled_from(PressureUnit),
    timestamp=st.none() | date_times,
    pulse_rate=st.none() | sfloats,
    user_id=st.none() | u8s,
    status=st.none() | bp_status,
)


@st.composite
def glucose(draw: st.DrawFn) -> GlucoseMeasurement:
    has_value = draw(st.booleans())
    return GlucoseMeasurement(
        sequence_number=draw(u16s),
        base_time=draw(date_times),
        time_offset=draw(st.none() | st.integers(-32768, 32767)),
        concentration=draw(sfloats) if has_value else None,
        unit=draw(st.sampled_from(GlucoseConcentrationUnit)),
        type=draw(st.sampled_from(GlucoseType)) if has_value else None,
        sample_location=draw(st.sampled_from(GlucoseSampleLocation)) if has_value else None,
        sensor_status=draw(st.none() | _flag(GlucoseSensorStatus, 0x0FFF)),
        context_follows=draw(st.booleans()),
    )


@st.composite
def glucose_context(draw: st.DrawFn) -> GlucoseMeasurementContext:
    carb, tester, exercise, medication = (draw(st.booleans()) for _ in range(4))
    return GlucoseMeasurementContext(
        sequence_number=draw(u16s),
        extended_flags=draw(st.none() | st.just(0)),
        carbohydrate_id=draw(st.sampled_from(CarbohydrateId)) if carb else None,
        carbohydrate=draw(sfloats) if carb else None,
        meal=draw(st.none() | st.sampled_from(Meal)),
        tester=draw(st.sampled_from(Tester)) if tester else None,
        health=draw(st.sampled_from(Health)) if tester else None,
        exercise_duration=draw(u16s) if exercise else None,
        exercise_intensity=draw(u8s) if exercise else None,
        medication_id=draw(st.sampled_from(MedicationId)) if medication else None,
        medication=draw(sfloats) if medication else None,
        medication_unit=draw(st.sampled_from(MedicationUnit)),
        hba1c=draw(st.none() | sfloats),
    )


@st.composite
def racp_request(draw: st.DrawFn) -> RacpRequest:
    op = draw(st.sampled_from(list(RacpOpCode)[:4]))
    if op is RacpOpCode.ABORT_OPERATION:
        return RacpRequest(op_code=op)
    operator = draw(st.sampled_from(list(RacpOperator)[1:]))
    if operator not in (
        RacpOperator.LESS_THAN_OR_EQUAL,
        RacpOperator.GREATER_THAN_OR_EQUAL,
        RacpOperator.WITHIN_RANGE,
    ):
        return RacpRequest(op_code=op, operator=operator)
    filter_type = draw(st.sampled_from(RacpFilterType))
    if filter_type is RacpFilterType.SEQUENCE_NUMBER:
        low, high = sorted((draw(u16s), draw(u16s)))
        first: Any = low
        second: Any = high
    else:
        moments = sorted(draw(st.lists(st.datetimes(min_value=_RECENT), min_size=2, max_size=2)))
        first, second = (DateTime.from_datetime(m) for m in moments)
    if operator is RacpOperator.LESS_THAN_OR_EQUAL:
        return RacpRequest(op_code=op, operator=operator, filter_type=filter_type, maximum=second)
    if operator is RacpOperator.GREATER_THAN_OR_EQUAL:
        return RacpRequest(op_code=op, operator=operator, filter_type=filter_type, minimum=first)
    return RacpRequest(
        op_code=op, operator=operator, filter_type=filter_type, minimum=first, maximum=second
    )


racp = st.one_of(
    racp_request(),
    st.builds(RacpNumberOfRecords, count=u16s),
    st.builds(RacpResponse, request_op_code=u8s, response_code=st.sampled_from(RacpResponseCode)),
)

temperature = st.builds(
    TemperatureMeasurement,
    temperature=floats32,
    unit=st.sampled_from(TemperatureUnit),
    timestamp=st.none() | date_times,
    temperature_type=st.none() | st.sampled_from(TemperatureType),
)


def _steps(raw: int, numerator: int, power: int) -> Any:
    return SpecialValue.NAN if raw == 0xFFFF else Decimal(raw * numerator).scaleb(power)


@st.composite
def weight(draw: st.DrawFn) -> WeightMeasurement:
    unit = draw(st.sampled_from(WeightUnit))
    imperial = unit is WeightUnit.IMPERIAL
    has_bmi = draw(st.booleans())
    return WeightMeasurement(
        weight=_steps(draw(u16s), *((1, -2) if imperial else (5, -3))),
        unit=unit,
        timestamp=draw(st.none() | date_times),
        user_id=draw(st.none() | u8s),
        bmi=_steps(draw(u16s), 1, -1) if has_bmi else None,
        height=_steps(draw(u16s), *((1, -1) if imperial else (1, -3))) if has_bmi else None,
    )


@st.composite
def heart_rate(draw: st.DrawFn) -> HeartRateMeasurement:
    wide = draw(st.booleans())
    return HeartRateMeasurement(
        heart_rate=draw(u16s if wide else u8s),
        uint16_format=wide,
        sensor_contact=draw(st.none() | st.booleans()),
        energy_expended=draw(st.none() | u16s),
        rr_intervals=tuple(draw(st.lists(u16s, max_size=9))),
    )


plx_spot = st.builds(
    PlxSpotCheckMeasurement,
    spo2=sfloats,
    pulse_rate=sfloats,
    timestamp=st.none() | date_times,
    measurement_status=st.none() | _flag(PlxMeasurementStatus, 0xFFE0),
    device_status=st.none() | _flag(PlxDeviceSensorStatus, 0xFFFF),
    pulse_amplitude_index=st.none() | sfloats,
    device_clock_not_set=st.booleans(),
)


@st.composite
def plx_continuous(draw: st.DrawFn) -> PlxContinuousMeasurement:
    fast, slow = draw(st.booleans()), draw(st.booleans())
    return PlxContinuousMeasurement(
        spo2=draw(sfloats),
        pulse_rate=draw(sfloats),
        spo2_fast=draw(sfloats) if fast else None,
        pulse_rate_fast=draw(sfloats) if fast else None,
        spo2_slow=draw(sfloats) if slow else None,
        pulse_rate_slow=draw(sfloats) if slow else None,
        measurement_status=draw(st.none() | _flag(PlxMeasurementStatus, 0xFFE0)),
        device_status=draw(st.none() | _flag(PlxDeviceSensorStatus, 0xFFFF)),
        pulse_amplitude_index=draw(st.none() | sfloats),
    )


texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40).filter(
    lambda s: len(s.encode("utf-8")) <= 248
)

device_strings = st.one_of(
    *(
        st.builds(cls, value=texts)
        for cls in (
            ManufacturerName,
            ModelNumber,
            SerialNumber,
            HardwareRevision,
            FirmwareRevision,
            SoftwareRevision,
        )
    )
)

system_id = st.builds(
    SystemId,
    manufacturer_identifier=st.integers(0, (1 << 40) - 1),
    organizationally_unique_identifier=st.integers(0, (1 << 24) - 1),
)
pnp_id = st.builds(
    PnpId,
    vendor_id_source=st.sampled_from(VendorIdSource),
    vendor_id=u16s,
    product_id=u16s,
    product_version=u16s,
)
current_time = st.builds(
    CurrentTime,
    date_time=date_times,
    day_of_week=st.integers(0, 7),
    fractions256=u8s,
    adjust_reason=_flag(AdjustReason, 0x0F),
)

BY_UUID: dict[int, st.SearchStrategy[Any]] = {
    0x2A35: blood_pressure,
    0x2A36: cuff_pressure,
    0x2A18: glucose(),
    0x2A34: glucose_context(),
    0x2A52: racp,
    0x2A1C: temperature,
    0x2A1E: st.builds(
        IntermediateTemperature,
        temperature=floats32,
        unit=st.sampled_from(TemperatureUnit),
        timestamp=st.none() | date_times,
        temperature_type=st.none() | st.sampled_from(TemperatureType),
    ),
    0x2A1D: st.builds(TemperatureSite, temperature_type=st.sampled_from(TemperatureType)),
    0x2A38: st.builds(BodySensorLocation, location=st.sampled_from(SensorLocation)),
    0x2A9D: weight(),
    0x2A37: heart_rate(),
    0x2A5E: plx_spot,
    0x2A5F: plx_continuous(),
    0x2A29: st.builds(ManufacturerName, value=texts),
    0x2A24: st.builds(ModelNumber, value=texts),
    0x2A25: st.builds(SerialNumber, value=texts),
    0x2A27: st.builds(HardwareRevision, value=texts),
    0x2A26: st.builds(FirmwareRevision, value=texts),
    0x2A28: st.builds(SoftwareRevision, value=texts),
    0x2A23: system_id,
    0x2A50: pnp_id,
    0x2A08: date_times,
    0x2A2B: current_time,
}
assert set(BY_UUID) == set(gatt.CODECS), "every codec needs a strategy"
