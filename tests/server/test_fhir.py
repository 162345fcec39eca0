"""hospital_server.fhir: FHIR R4 views of stored readings (PHD IG style).

Every resource a test builds goes through ``to_json`` and back (decimals kept) and is then
validated by an independent implementation, the pydantic models of ``fhir.resources`` (R4B,
the closest release it ships to R4: Observation, Bundle, Patient and OperationOutcome are the
same there); any validation error fails the test. On top of that the tests check the rules those
models do not (FHIR invariants obs-6/obs-7/vs-2/vs-3, PHD IG slices), that only documented
fields appear, exact decimals in the bytes, and hand-written expected resources
(tests/vectors/fhir_observations.json).

Inputs are real characteristic values: the GATT vectors of every device type, and Hypothesis
examples of every observation-producing characteristic encoded to bytes and decoded again.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation as FhirObservation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hospital_server import fhir
from hospital_server.fhir import codes
from hospital_server.ingest import plausibility
from phd_protocol import gatt, mdc
from phd_protocol.gatt import GlucoseMeasurement, GlucoseMeasurementContext
from phd_protocol.observation import (
    Component,
    Observation,
    TimeSource,
    apply_clock_correction,
)
from phd_protocol.sfloat import SpecialValue
from tests.protocol.gatt.strategies import BY_UUID, glucose, glucose_context

ROOT = Path(__file__).parents[2]
VECTORS = json.loads(
    (ROOT / "tests" / "vectors" / "fhir_observations.json").read_text(encoding="utf-8"),
    parse_float=Decimal,
)
GATT_VECTOR_DIR = ROOT / "tests" / "vectors" / "gatt"
AGENT_RECEIVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SERVER_RECEIVED = datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC)
DEVICE_UUID_LIKE = "0b6f3c1e-5d2a-4c8e-9f10-2a3b4c5d6e7f"
MODELS: dict[str, Any] = {
    "Observation": FhirObservation,
    "Bundle": Bundle,
    "Patient": Patient,
    "OperationOutcome": OperationOutcome,
}

# FHIR R4 (4.0.1) code systems the models do not check: ObservationStatus, data-absent-reason,
# and the PoCD measurement-status codes the PHD IG uses.
OBSERVATION_STATUS = frozenset(
    {"registered", "preliminary", "final", "amended", "corrected", "cancelled"}
    | {"entered-in-error", "unknown"}
)
DATA_ABSENT_REASONS = frozenset(
    {"unknown", "asked-unknown", "temp-unknown", "not-asked", "asked-declined", "masked"}
    | {"not-applicable", "unsupported", "as-text", "error", "not-a-number"}
    | {"negative-infinity", "positive-infinity", "not-performed", "not-permitted"}
)
MEASUREMENT_STATUSES = frozenset(
    {"questionable", "calibration-ongoing", "validated-data", "early-indication"}
    | {"msmt-ongoing", "in-alarm", "alarm-inhibited"}
)

MDC = codes.MDC_SYSTEM
LOINC = codes.LOINC_SYSTEM
UCUM = codes.UCUM_SYSTEM
DAR = codes.DATA_ABSENT_REASON_SYSTEM

# Every leaf path an Observation may have (list positions dropped): docs/fhir.md lists them.
OBSERVATION_PATHS = frozenset(
    {
        "resourceType",
        "id",
        "meta.profile",
        "meta.security.system",
        "meta.security.code",
        "extension.url",
        "extension.valueCode",
        "status",
        "category.coding.system",
        "category.coding.code",
        "code.coding.system",
        "code.coding.code",
        "code.coding.display",
        "subject.reference",
        "effectiveDateTime",
        "issued",
        "valueQuantity.value",
        "valueQuantity.unit",
        "valueQuantity.system",
        "valueQuantity.code",
        "dataAbsentReason.coding.system",
        "dataAbsentReason.coding.code",
        "interpretation.coding.system",
        "interpretation.coding.code",
        "device.reference",
        "component.code.coding.system",
        "component.code.coding.code",
        "component.code.coding.display",
        "component.valueQuantity.value",
        "component.valueQuantity.unit",
        "component.valueQuantity.system",
        "component.valueQuantity.code",
        "component.dataAbsentReason.coding.system",
        "component.dataAbsentReason.coding.code",
        "component.valueCodeableConcept.coding.system",
        "component.valueCodeableConcept.coding.code",
        "component.valueCodeableConcept.coding.display",
    }
)
PATIENT_PATHS = frozenset(
    {
        "resourceType",
        "id",
        "meta.profile",
        "identifier.type.coding.system",
        "identifier.type.coding.code",
        "identifier.system",
        "identifier.value",
        "name.text",
        "birthDate",
    }
)


# ------------------------------------------------------------------------------ helpers


def _validated(resource: dict[str, Any]) -> dict[str, Any]:
    """to_json, read back with exact decimals, validate with fhir.resources; the parsed dict."""
    data = fhir.to_json(resource)
    parsed = json.loads(data, parse_float=Decimal)
    assert isinstance(parsed, dict)
    MODELS[parsed["resourceType"]].model_validate(parsed)
    return parsed


def _paths(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for child in value:
            yield from _paths(child, prefix)
    else:
        yield prefix


def _find(value: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key``, at any depth."""
    if isinstance(value, dict):
        for k, child in value.items():
            if k == key:
                yield child
            yield from _find(child, key)
    elif isinstance(value, list):
        for child in value:
            yield from _find(child, key)


def _exact(value: Any) -> Any:
    """Decimals compared by their digits (Decimal("16.0") == Decimal("16") otherwise)."""
    if isinstance(value, Decimal):
        return f"decimal:{value}"
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def _codes_of(concept: dict[str, Any], system: str) -> list[str]:
    return [c["code"] for c in concept.get("coding", []) if c["system"] == system]


def _resource(obs: Observation, quality: str | None = None, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "resource_id": "obs-1",
        "patient_id": "pat-1",
        "device_id": DEVICE_UUID_LIKE,
        "quality": plausibility.quality(obs) if quality is None else quality,
        "received_at": SERVER_RECEIVED,
    }
    args.update(kwargs)
    return fhir.observation_resource(obs, **args)


def _status_absent_reason(obs: Observation) -> str | None:
    for flag, reason in codes.DATA_ABSENT_REASON_BY_STATUS:
        if flag in obs.flags:
            return reason
    return None


def _check_value(element: dict[str, Any], value: Any, unit: str) -> None:
    if isinstance(value, SpecialValue):
        assert "valueQuantity" not in element
        assert _codes_of(element["dataAbsentReason"], DAR) == [
            codes.DATA_ABSENT_REASON_BY_SPECIAL[value]
        ]
        return
    assert "dataAbsentReason" not in element
    quantity = element["valueQuantity"]
    assert quantity["system"] == UCUM
    assert quantity["code"] == quantity["unit"] == unit
    written = quantity["value"]
    assert isinstance(written, int | Decimal)
    # Same number, same digits: the device's exponent survives (format "f" as FHIR writes it).
    assert Decimal(written) == value
    assert format(Decimal(written), "f") == format(value, "f")


def check_observation(obs: Observation, parsed: dict[str, Any]) -> None:
    """The mapping rules of docs/fhir.md plus the FHIR/PHD rules the models do not check."""
    assert set(_paths(parsed)) <= OBSERVATION_PATHS
    assert parsed["status"] in OBSERVATION_STATUS
    for reason in _find(parsed, "dataAbsentReason"):
        assert _codes_of(reason, DAR)[0] in DATA_ABSENT_REASONS
        assert len(reason["coding"]) == 1
    compound = obs.value is None
    assert parsed["meta"]["profile"] == [
        codes.PHD_COMPOUND_NUMERIC_PROFILE if compound else codes.PHD_NUMERIC_PROFILE
    ]
    assert parsed["status"] == ("preliminary" if "intermediate" in obs.flags else "final")
    assert parsed["subject"]["reference"].endswith("Patient/pat-1")
    assert parsed["device"]["reference"].endswith(f"Device/{DEVICE_UUID_LIKE}")
    assert parsed["issued"] == "2026-01-02T03:04:09Z"
    if obs.time is None:
        assert "effectiveDateTime" not in parsed
    else:
        assert datetime.fromisoformat(parsed["effectiveDateTime"]) == obs.time

    # code: MDC first (PHD IG), then LOINC; vital-signs category exactly when there is LOINC.
    coding = parsed["code"]["coding"]
    assert coding[0]["system"] == MDC
    assert coding[0]["code"] == str(obs.mdc_code)
    assert coding[0].get("display") == mdc.TERMS[obs.mdc_code].ref_id
    loincs = _codes_of(parsed["code"], LOINC)
    if obs.loinc is None:
        assert loincs == []
    else:
        assert loincs[-1] == obs.loinc
        assert set(loincs) - {obs.loinc} <= {codes.VITAL_SIGNS_GENERIC_LOINC.get(obs.mdc_code)}
    categories = [(c["coding"][0]["system"], c["coding"][0]["code"]) for c in parsed["category"]]
    assert (codes.PHD_CATEGORY_SYSTEM, "phd") in categories
    vital = (codes.OBSERVATION_CATEGORY_SYSTEM, "vital-signs")
    assert (vital in categories) == (obs.loinc is not None)

    # extension: the plausibility verdict, a code, nothing else.
    assert parsed["extension"] == [
        {"url": codes.PLAUSIBILITY_EXTENSION_URL, "valueCode": plausibility.quality(obs)}
    ]

    # value / dataAbsentReason (obs-6: never both) with the status precedence.
    assert not ("valueQuantity" in parsed and "dataAbsentReason" in parsed)
    status_reason = _status_absent_reason(obs)
    components = parsed.get("component", [])
    supplemental = [c for c in components if "valueCodeableConcept" in c]
    parts = [c for c in components if "valueCodeableConcept" not in c]
    if status_reason is not None:
        assert "valueQuantity" not in parsed
        assert _codes_of(parsed["dataAbsentReason"], DAR) == [status_reason]
        assert parts == []
    elif compound:
        assert "valueQuantity" not in parsed
        assert "dataAbsentReason" not in parsed
        assert len(parts) == len(obs.components)
        for element, part in zip(parts, obs.components, strict=True):
            assert _codes_of(element["code"], MDC) == [str(part.mdc_code)]
            assert _codes_of(element["code"], LOINC) == ([] if part.loinc is None else [part.loinc])
            _check_value(element, part.value, obs.unit)  # vs-3: a value or an absent reason
    else:
        _check_value(parsed, obs.value, obs.unit)
    # obs-7: a component coded like the observation means the observation has no value.
    if any(_codes_of(c["code"], MDC) == [str(obs.mdc_code)] for c in components):
        assert "valueQuantity" not in parsed

    # Measurement status: one measurement-status coding per interpretation (PHD IG slice 1..1).
    expected_interpretations = [c for f, c in codes.INTERPRETATION_BY_STATUS if f in obs.flags]
    interpretations = parsed.get("interpretation", [])
    for concept in interpretations:
        assert len(_codes_of(concept, codes.MEASUREMENT_STATUS_SYSTEM)) == 1
        assert concept["coding"][0]["code"] in MEASUREMENT_STATUSES
    assert [c["coding"][0]["code"] for c in interpretations] == expected_interpretations
    htest = bool(obs.flags & codes.HTEST_FLAGS)
    assert ("security" in parsed["meta"]) == htest
    if htest:
        assert parsed["meta"]["security"] == [{"system": codes.ACT_REASON_SYSTEM, "code": "HTEST"}]
    modalities = sorted(f for f in obs.flags if f in codes.SUPPLEMENTAL_TYPE_BY_FLAG)
    assert [s["valueCodeableConcept"]["coding"][0]["code"] for s in supplemental] == [
        str(codes.SUPPLEMENTAL_TYPE_BY_FLAG[f][0]) for f in modalities
    ]
    for element in supplemental:
        assert _codes_of(element["code"], MDC) == ["68193"]


def _gatt_vector_cases() -> list[Any]:
    cases = []
    for path in sorted(GATT_VECTOR_DIR.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for case in doc["valid"]:
            char = case.get("characteristic", doc["characteristic"])
            value = gatt.decode(char, bytes.fromhex(case["hex"]))
            observations = gatt.to_observations(value, device="dev-1", received_at=AGENT_RECEIVED)
            if observations:
                cases.append(pytest.param(observations, id=f"{path.name}:{case['name']}"))
    return cases


GATT_CASES = _gatt_vector_cases()


# ------------------------------------------------------------------- conformance canary


def test_the_validator_is_strict_enough_to_mean_something() -> None:
    """The validation tests lean on fhir.resources refusing what FHIR refuses.

    It checks structure, cardinality, choice types and primitive formats, not code values
    against their bindings (it takes status "done"): check_observation checks our codes
    against the R4 code systems itself."""
    good = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": MDC, "code": "150020"}]},
        "valueQuantity": {"value": Decimal("1.50"), "system": UCUM, "code": "kg"},
    }
    FhirObservation.model_validate(good)
    bad_cases = [
        {**good, "bogus": 1},  # unknown element
        {**good, "valueString": "x"},  # two value[x]
        {**good, "effectiveDateTime": "2020-13-01"},  # not a dateTime
        {**good, "resourceType": "Patient"},
        {**good, "id": "has space"},
    ]
    for bad in bad_cases:
        with pytest.raises(ValidationError):
            FhirObservation.model_validate(bad)
    nested = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {**good, "bogus": 1}}],
    }
    with pytest.raises(ValidationError):
        Bundle.model_validate(nested)


def test_our_quality_codes_are_the_stored_ones() -> None:
    assert {plausibility.OK, plausibility.IMPLAUSIBLE, plausibility.SPECIAL} == codes.QUALITIES


# -------------------------------------------------------------- every device type, real bytes


def test_the_gatt_vectors_cover_the_six_device_types() -> None:
    chars = {obs.char for case in GATT_CASES for obs in case.values[0]}
    # blood pressure (+cuff), glucose (+context), thermometer, scale, heart rate, pulse oximeter
    assert set(OBSERVING) <= chars


@pytest.mark.parametrize("observations", GATT_CASES)
def test_every_gatt_vector_maps_to_a_valid_observation(
    observations: tuple[Observation, ...],
) -> None:
    for obs in observations:
        parsed = _validated(_resource(obs))
        check_observation(obs, parsed)


# Every characteristic that gives observations (the others are descriptive: DIS, clocks, RACP).
OBSERVING = (0x2A35, 0x2A36, 0x2A18, 0x2A34, 0x2A1C, 0x2A1E, 0x2A9D, 0x2A37, 0x2A5E, 0x2A5F)


@pytest.mark.parametrize("uuid", OBSERVING, ids=lambda u: f"{u:04X}")
def test_any_encoded_value_maps_to_a_valid_observation(uuid: int) -> None:
    @settings(max_examples=40, deadline=None)
    @given(value=BY_UUID[uuid], base=st.sampled_from(["", "https://hospital.example/fhir"]))
    def check(value: Any, base: str) -> None:
        decoded = gatt.decode(uuid, gatt.encode(value))
        for obs in gatt.to_observations(decoded, device="dev-1", received_at=AGENT_RECEIVED):
            parsed = _validated(_resource(obs, base_url=base))
            check_observation(obs, parsed)
            if base:
                assert parsed["subject"]["reference"] == f"{base}/Patient/pat-1"

    check()


@settings(max_examples=40, deadline=None)
@given(measurement=glucose(), context=glucose_context())
def test_glucose_with_its_context_maps_to_valid_observations(
    measurement: GlucoseMeasurement, context: GlucoseMeasurementContext
) -> None:
    context = dataclasses.replace(context, sequence_number=measurement.sequence_number)
    decoded = gatt.decode(0x2A18, gatt.encode(measurement))
    decoded_context = gatt.decode(0x2A34, gatt.encode(context))
    assert isinstance(decoded, GlucoseMeasurement)
    assert isinstance(decoded_context, GlucoseMeasurementContext)
    observations = gatt.to_observations(
        decoded, device="dev-1", received_at=AGENT_RECEIVED, context=decoded_context
    )
    for obs in observations:
        check_observation(obs, _validated(_resource(obs)))


# ------------------------------------------------------------ hand-written expected resources


def _vector_cases() -> list[Any]:
    return [pytest.param(case, id=case["name"][:60]) for case in VECTORS["cases"]]


@pytest.mark.parametrize("case", _vector_cases())
def test_expected_resources(case: dict[str, Any]) -> None:
    agent = datetime.fromisoformat(VECTORS["agent_received_at"])
    server = datetime.fromisoformat(VECTORS["server_received_at"])
    value = gatt.decode(case["characteristic"], bytes.fromhex(case["hex"]))
    observations = gatt.to_observations(value, device="dev-1", received_at=agent)
    assert len(observations) == len(case["resources"])
    for obs, want in zip(observations, case["resources"], strict=True):
        resource = fhir.observation_resource(
            obs,
            resource_id=want["resource_id"],
            patient_id=VECTORS["patient_id"],
            device_id=VECTORS["device_id"],
            quality=want["quality"],
            received_at=server,
            base_url=case["base_url"],
        )
        parsed = _validated(resource)
        assert _exact(parsed) == _exact(want["expected"])


def test_the_vectors_cover_what_they_claim() -> None:
    expected = [r["expected"] for c in VECTORS["cases"] for r in c["resources"]]
    text = json.dumps(_exact(expected))
    for needle in (
        "decimal:80.000",  # trailing zeros kept
        "decimal:16.0",
        "not-a-number",
        "positive-infinity",
        "negative-infinity",
        '"error"',
        "preliminary",
        "validated-data",
        "2708-6",
        "PhdCompoundNumericObservation",
        "https://hospital.example/fhir/Patient/pat-1",
    ):
        assert needle in text, needle


# ------------------------------------------------------------------------ decimals, exactly


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (Decimal("1.50"), b'"value": 1.50,'),
        (Decimal("120.5"), b'"value": 120.5,'),
        (Decimal("0.000001"), b'"value": 0.000001,'),
        (Decimal("2E+1"), b'"value": 20,'),  # SFLOAT 0x1002: PHD IG writes 20
        (Decimal("-1234"), b'"value": -1234,'),
        (Decimal("98.60"), b'"value": 98.60,'),
    ],
)
def test_decimal_precision_is_kept_in_the_bytes(value: Decimal, written: bytes) -> None:
    obs = _simple(value=value)
    data = fhir.to_json(_resource(obs))
    assert written in data
    parsed = json.loads(data, parse_float=Decimal)
    FhirObservation.model_validate(parsed)
    assert str(parsed["valueQuantity"]["value"]) == format(value, "f")


def test_to_json_refuses_floats_and_other_non_json_values() -> None:
    resource = _resource(_simple())
    resource["valueQuantity"]["value"] = 1.5
    with pytest.raises(TypeError):
        fhir.to_json(resource)
    with pytest.raises(TypeError):
        fhir.to_json({"resourceType": "Patient", "birthDate": date(2000, 1, 1)})


def test_to_json_is_utf8_and_keeps_non_ascii_text() -> None:
    patient = _patient(name="Zoë Ñúñez")
    data = fhir.to_json(patient)
    assert "Zoë Ñúñez".encode() in data
    assert json.loads(data.decode("utf-8"))["name"] == [{"text": "Zoë Ñúñez"}]
    assert fhir.MEDIA_TYPE == "application/fhir+json"


# -------------------------------------------------------------------- special values, status


def _simple(
    *,
    value: Any = Decimal("72"),
    mdc_code: int = mdc.PULS_OXIM_PULS_RATE.code,
    flags: frozenset[str] = frozenset(),
    time: datetime | None = AGENT_RECEIVED,
    source: TimeSource = TimeSource.AGENT,
    components: tuple[Component, ...] = (),
) -> Observation:
    return Observation.create(
        device="dev-1",
        mdc_code=mdc_code,
        value=value,
        unit="/min",
        unit_mdc=mdc.DIM_BEAT_PER_MIN.code,
        time=time,
        time_source=source,
        loinc=mdc.TERMS[mdc_code].loinc,
        components=components,
        flags=flags,
    )


@pytest.mark.parametrize(
    ("special", "reason"),
    [
        (SpecialValue.NAN, "not-a-number"),
        (SpecialValue.NRES, "error"),
        (SpecialValue.POS_INF, "positive-infinity"),
        (SpecialValue.NEG_INF, "negative-infinity"),
        (SpecialValue.RESERVED, "error"),
    ],
)
def test_special_values_become_data_absent_reasons(special: SpecialValue, reason: str) -> None:
    obs = _simple(value=special)
    parsed = _validated(_resource(obs))
    assert "valueQuantity" not in parsed
    assert parsed["dataAbsentReason"] == {"coding": [{"system": DAR, "code": reason}]}
    assert parsed["extension"][0]["valueCode"] == "special"
    check_observation(obs, parsed)


def _bp(parts: tuple[Any, Any, Any], flags: frozenset[str] = frozenset()) -> Observation:
    return Observation.create(
        device="dev-1",
        mdc_code=mdc.PRESS_BLD_NONINV.code,
        value=None,
        unit="mm[Hg]",
        unit_mdc=mdc.DIM_MMHG.code,
        time=AGENT_RECEIVED,
        time_source=TimeSource.AGENT,
        loinc=mdc.PRESS_BLD_NONINV.loinc,
        components=tuple(
            Component(mdc_code=t.code, value=v, loinc=t.loinc)
            for t, v in zip(mdc.BLOOD_PRESSURE_COMPONENTS, parts, strict=True)
        ),
        flags=flags,
    )


def test_blood_pressure_components_carry_their_own_codes_and_absent_reasons() -> None:
    obs = _bp((Decimal("120.5"), SpecialValue.NAN, Decimal("93")))
    parsed = _validated(_resource(obs))
    check_observation(obs, parsed)
    systolic, diastolic, mean = parsed["component"]
    assert _codes_of(systolic["code"], LOINC) == ["8480-6"]
    assert systolic["valueQuantity"]["value"] == Decimal("120.5")
    assert _codes_of(diastolic["code"], LOINC) == ["8462-4"]
    assert diastolic["dataAbsentReason"]["coding"][0]["code"] == "not-a-number"
    assert _codes_of(mean["code"], MDC) == ["150023"]
    assert "valueQuantity" not in parsed  # a compound has its values in the components only


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({"status:invalid"}, "error"),
        ({"status:unavailable"}, "not-performed"),
        ({"status:measurement_ongoing"}, "temp-unknown"),
        ({"status:invalid", "status:unavailable", "status:measurement_ongoing"}, "error"),
        ({"status:unavailable", "status:measurement_ongoing"}, "not-performed"),
    ],
)
def test_measurement_status_without_a_valid_value_wins_over_the_value(
    flags: set[str], reason: str
) -> None:
    for value in (Decimal("97"), SpecialValue.NAN):
        obs = _simple(value=value, flags=frozenset(flags))
        parsed = _validated(_resource(obs))
        assert "valueQuantity" not in parsed
        assert _codes_of(parsed["dataAbsentReason"], DAR) == [reason]
        check_observation(obs, parsed)
    compound = _bp((Decimal(120), Decimal(80), Decimal(93)), frozenset(flags))
    parsed = _validated(_resource(compound))
    assert "component" not in parsed  # PhdCompoundNumeric: no parts when the status is an error
    assert _codes_of(parsed["dataAbsentReason"], DAR) == [reason]


def test_measurement_status_interpretations_security_and_supplemental_types() -> None:
    flags = frozenset(
        {
            "status:questionable",
            "status:calibration_ongoing",
            "status:validated",
            "status:early_estimate",
            "status:testing",
            "status:low_perfusion",  # device/sensor status: no place in the PHD IG
            "status:fully_qualified",  # no 11073 measurement-status counterpart
            "modality:fast",
        }
    )
    obs = _simple(flags=flags)
    parsed = _validated(_resource(obs))
    check_observation(obs, parsed)
    assert parsed["interpretation"] == [
        {"coding": [{"system": codes.MEASUREMENT_STATUS_SYSTEM, "code": code}]}
        for code in ("questionable", "calibration-ongoing", "validated-data", "early-indication")
    ]
    assert parsed["meta"]["security"] == [{"system": codes.ACT_REASON_SYSTEM, "code": "HTEST"}]
    assert parsed["valueQuantity"]["value"] == 72
    assert parsed["component"] == [
        {
            "code": {
                "coding": [
                    {"system": MDC, "code": "68193", "display": "MDC_ATTR_SUPPLEMENTAL_TYPES"}
                ]
            },
            "valueCodeableConcept": {
                "coding": [{"system": MDC, "code": "150580", "display": "MDC_MODALITY_FAST"}]
            },
        }
    ]
    demo = _validated(_resource(_simple(flags=frozenset({"status:demonstration"}))))
    assert demo["meta"]["security"][0]["code"] == "HTEST"


def test_unmapped_flags_leave_no_trace() -> None:
    flags = frozenset({"user:2", "irregular_pulse", "meal:fasting", "sensor:battery_low"})
    plain = _validated(_resource(_simple()))
    flagged = _validated(_resource(_simple(flags=flags)))
    assert flagged == plain


@pytest.mark.parametrize("quality", ["ok", "implausible", "special"])
def test_quality_is_a_coded_extension(quality: str) -> None:
    parsed = _validated(_resource(_simple(), quality=quality))
    assert parsed["extension"] == [
        {"url": "urn:uuid:bc2da92f-21a4-4840-8522-f3a00ed60931", "valueCode": quality}
    ]
    assert fhir.PLAUSIBILITY_EXTENSION_URL == codes.PLAUSIBILITY_EXTENSION_URL


# ------------------------------------------------------------------------------------- time


def test_time_from_the_device_the_corrected_clock_the_agent_or_nowhere() -> None:
    device_time = datetime(2026, 1, 1, 22, 0, 0, tzinfo=UTC)
    device = _simple(time=device_time, source=TimeSource.DEVICE)
    assert _validated(_resource(device))["effectiveDateTime"] == "2026-01-01T22:00:00Z"

    # PHD IG coincident time stamp: the gateway puts readings on its (better) timeline.
    corrected = apply_clock_correction(device, timedelta(minutes=6, microseconds=250))
    parsed = _validated(_resource(corrected))
    assert parsed["effectiveDateTime"] == "2026-01-01T22:06:00.000250Z"
    assert corrected.device_time is not None
    assert corrected.device_time.isoformat() not in json.dumps(parsed)

    # No time stamp from the device: the receive time, as the PHD IG says.
    agent = _simple(time=AGENT_RECEIVED, source=TimeSource.AGENT)
    assert _validated(_resource(agent))["effectiveDateTime"] == "2026-01-02T03:04:05Z"

    untimed = _simple(time=None)
    parsed = _validated(_resource(untimed))
    assert "effectiveDateTime" not in parsed
    check_observation(untimed, parsed)


def test_issued_is_the_server_receive_time_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    received = datetime(2026, 1, 2, 5, 4, 9, 500000, tzinfo=plus_two)
    parsed = _validated(_resource(_simple(), received_at=received))
    assert parsed["issued"] == "2026-01-02T03:04:09.500000Z"


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"resource_id": "has space"}, "resource_id"),
        ({"resource_id": "x" * 65}, "resource_id"),
        ({"resource_id": ""}, "resource_id"),
        ({"patient_id": "pat/1"}, "patient_id"),
        ({"device_id": "dév"}, "device_id"),
        ({"quality": "good"}, "quality"),
        ({"received_at": datetime(2026, 1, 2)}, "received_at"),  # noqa: DTZ001 - naive on purpose
        ({"base_url": "/fhir"}, "base_url"),
        ({"base_url": "https://x.example/a b"}, "base_url"),
    ],
)
def test_bad_arguments_are_refused_without_echoing_them(
    override: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        _resource(_simple(), **override)
    value = next(iter(override.values()))
    if isinstance(value, str) and value:
        assert value not in str(caught.value)


def test_only_observations_are_mapped() -> None:
    with pytest.raises(TypeError):
        fhir.observation_resource(
            _simple().to_wire(),  # type: ignore[arg-type]
            resource_id="a",
            patient_id="b",
            device_id="c",
            quality="ok",
            received_at=SERVER_RECEIVED,
        )


# ------------------------------------------------------------------------------------- bundle


def test_searchset_bundle_validates_with_its_entries_and_links() -> None:
    resources = [
        _resource(_simple(), resource_id="obs-1"),
        _resource(_bp((Decimal(120), Decimal(80), Decimal(93))), resource_id="obs-2"),
    ]
    self_url = "https://hospital.example/fhir/Observation?patient=pat-1&_count=2"
    next_url = "https://hospital.example/fhir/Observation?patient=pat-1&_count=2&_offset=2"
    parsed = _validated(fhir.bundle(resources, total=7, self_url=self_url, next_url=next_url))
    assert set(parsed) == {"resourceType", "type", "total", "link", "entry"}
    assert parsed["type"] == "searchset"
    assert parsed["total"] == 7
    assert parsed["link"] == [
        {"relation": "self", "url": self_url},
        {"relation": "next", "url": next_url},
    ]
    assert [e["fullUrl"] for e in parsed["entry"]] == [
        "https://hospital.example/fhir/Observation/obs-1",
        "https://hospital.example/fhir/Observation/obs-2",
    ]
    assert [e["search"] for e in parsed["entry"]] == [{"mode": "match"}] * 2
    assert [e["resource"]["id"] for e in parsed["entry"]] == ["obs-1", "obs-2"]
    for entry in parsed["entry"]:
        assert set(entry) == {"fullUrl", "resource", "search"}


def test_bundle_without_total_next_or_entries() -> None:
    self_url = "https://hospital.example/fhir/Observation?patient=pat-1"
    parsed = _validated(fhir.bundle([], total=None, self_url=self_url, next_url=None))
    assert "total" not in parsed
    assert parsed["link"] == [{"relation": "self", "url": self_url}]
    assert parsed["entry"] == []
    assert _validated(fhir.bundle([], total=0, self_url=self_url, next_url=None))["total"] == 0


def test_bundle_base_url_and_outcome_entries() -> None:
    outcome = fhir.operation_outcome("too-costly", "result truncated")
    patient = _patient()
    parsed = _validated(
        fhir.bundle(
            [patient, outcome],
            total=1,
            self_url="https://proxy.example/api/search?x=1",
            next_url=None,
            base_url="https://hospital.example/fhir/",
        )
    )
    first, second = parsed["entry"]
    assert first["fullUrl"] == "https://hospital.example/fhir/Patient/pat-1"
    assert first["search"] == {"mode": "match"}
    assert "fullUrl" not in second  # an OperationOutcome has no id to point at
    assert second["search"] == {"mode": "outcome"}


def test_decimals_inside_a_bundle_stay_exact() -> None:
    resources = [_resource(_simple(value=Decimal("1.50")))]
    data = fhir.to_json(
        fhir.bundle(
            resources,
            total=1,
            self_url="https://hospital.example/fhir/Observation?patient=pat-1",
            next_url=None,
        )
    )
    assert b'"value": 1.50,' in data
    Bundle.model_validate(json.loads(data, parse_float=Decimal))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total": -1},
        {"total": True},
        {"self_url": "/fhir/Observation?patient=1"},
        {"self_url": "https://hospital.example"},
        {"next_url": "next page"},
        {"base_url": "fhir"},
    ],
)
def test_bundle_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "total": None,
        "self_url": "https://hospital.example/fhir/Observation?patient=1",
        "next_url": None,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=r"total|self_url|next_url|base_url"):
        fhir.bundle([], **args)


def test_bundle_refuses_things_that_are_not_resources() -> None:
    url = "https://hospital.example/fhir/Observation?patient=1"
    for bad in ({"id": "x"}, {"resourceType": "Obs ervation"}, "Observation"):
        with pytest.raises(ValueError, match=r"resources\[0\]"):
            fhir.bundle([bad], total=None, self_url=url, next_url=None)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"resources\[0\]\.id"):
        fhir.bundle(
            [{"resourceType": "Patient", "id": "bad id"}], total=None, self_url=url, next_url=None
        )


# ------------------------------------------------------------------------------------ patient


def _patient(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "patient_id": "pat-1",
        "name": "Ada Lovelace",
        "mrn": "MRN-000123",
        "mrn_system": "urn:oid:2.16.840.1.113883.19.5",
        "birth_date": date(1990, 12, 10),
    }
    args.update(kwargs)
    return fhir.patient_resource(**args)


def test_patient_is_a_minimal_phd_patient() -> None:
    parsed = _validated(_patient())
    assert set(_paths(parsed)) <= PATIENT_PATHS
    assert parsed == {
        "resourceType": "Patient",
        "id": "pat-1",
        "meta": {"profile": ["http://hl7.org/fhir/uv/phd/StructureDefinition/PhdPatient"]},
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": "urn:oid:2.16.840.1.113883.19.5",
                "value": "MRN-000123",
            }
        ],
        "name": [{"text": "Ada Lovelace"}],
        "birthDate": "1990-12-10",
    }
    assert "birthDate" not in _validated(_patient(birth_date=None))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"patient_id": "p 1"}, "patient_id"),
        ({"name": "   "}, "name"),
        ({"name": "Ada\nLovelace"}, "name"),
        ({"mrn": ""}, "mrn"),
        ({"mrn": "MRN\x00123"}, "mrn"),
        ({"mrn_system": "local mrns"}, "mrn_system"),
        ({"birth_date": datetime(1990, 12, 10, tzinfo=UTC)}, "birth_date"),
        ({"birth_date": "1990-12-10"}, "birth_date"),
    ],
)
def test_patient_refuses_bad_arguments_without_echoing_them(
    override: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        _patient(**override)
    value = next(iter(override.values()))
    if isinstance(value, str) and value.strip():
        assert value not in str(caught.value)


# --------------------------------------------------------------------------- operation outcome


@pytest.mark.parametrize("code", sorted(codes.ISSUE_TYPES))
def test_operation_outcome_for_every_issue_type(code: str) -> None:
    parsed = _validated(fhir.operation_outcome(code, "no such Observation"))
    assert parsed == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": "no such Observation"}],
    }


def test_operation_outcome_refuses_unknown_codes_and_unfit_diagnostics() -> None:
    with pytest.raises(ValueError, match="issue-type"):
        fhir.operation_outcome("denied", "nope")
    for diagnostics in ("", "line\nbreak", "x" * 257):
        with pytest.raises(ValueError, match="diagnostics"):
            fhir.operation_outcome("invalid", diagnostics)


# --------------------------------------------------------------------------------------- purity


def test_the_package_does_no_io_and_imports_no_framework() -> None:
    package = ROOT / "hospital_server" / "fhir"
    allowed_roots = {
        "__future__",
        "collections",
        "datetime",
        "decimal",
        "re",
        "types",
        "typing",
        "phd_protocol",
        "hospital_server",
    }
    paths = sorted(package.glob("*.py"))
    assert len(paths) >= 5
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"open", "print", "eval", "exec", "input"}, path.name
            for name in names:
                assert name.split(".")[0] in allowed_roots, (path.name, name)
                if name.startswith("hospital_server"):
                    assert name.startswith("hospital_server.fhir"), (path.name, name)
    code = (
        "import sys, json, hospital_server.fhir\n"
        "print(json.dumps(sorted(m for m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(result.stdout))
    for framework in ("fastapi", "starlette", "sqlmodel", "sqlalchemy", "httpx", "asyncio"):
        assert framework not in loaded, framework
