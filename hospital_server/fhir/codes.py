"""Code systems, profile URLs and the fixed mapping tables of the FHIR R4 views.

Sources (docs/fhir.md explains each choice):

- HL7 FHIR Personal Health Device IG (PHD IG), STU 2 (2.0.0, FHIR R4): profile canonicals,
  the PHD category code system, "MDER FLOATs and SFLOATs" (special values ->
  ``dataAbsentReason``), "PHD Base Observation Profile" (measurement status -> dataAbsentReason,
  ``interpretation`` with the PoCD measurement-status code system, or ``meta.security`` HTEST;
  Supplemental-Types -> component 68193).
- FHIR R4 (4.0.1): data-absent-reason, observation-category, v2-0203, v3-ActReason code
  systems; the vital-signs profiles' LOINC codes (oxygen saturation needs the generic 2708-6
  next to the more specific pulse-oximetry code).
- IEEE 11073-10101: MDC_ATTR_SUPPLEMENTAL_TYPES (68193) and MDC_MODALITY_FAST/SLOW
  (partition 2, terms 19508/19512).

Data only: no parsing, no I/O.
"""

from __future__ import annotations

from types import MappingProxyType

from phd_protocol import mdc
from phd_protocol.sfloat import SpecialValue

__all__ = [
    "ACT_REASON_SYSTEM",
    "DATA_ABSENT_REASON_BY_SPECIAL",
    "DATA_ABSENT_REASON_BY_STATUS",
    "DATA_ABSENT_REASON_SYSTEM",
    "HTEST_FLAGS",
    "INTERPRETATION_BY_STATUS",
    "ISSUE_TYPES",
    "LOINC_SYSTEM",
    "MDC_ATTR_SUPPLEMENTAL_TYPES",
    "MDC_SYSTEM",
    "MEASUREMENT_STATUS_SYSTEM",
    "OBSERVATION_CATEGORY_SYSTEM",
    "PHD_CATEGORY_CODE",
    "PHD_CATEGORY_SYSTEM",
    "PHD_COMPOUND_NUMERIC_PROFILE",
    "PHD_NUMERIC_PROFILE",
    "PHD_PATIENT_PROFILE",
    "PLAUSIBILITY_EXTENSION_URL",
    "PRELIMINARY_FLAGS",
    "QUALITIES",
    "SUPPLEMENTAL_TYPE_BY_FLAG",
    "UCUM_SYSTEM",
    "V2_0203_SYSTEM",
    "VITAL_SIGNS_GENERIC_LOINC",
]

# --- code systems -----------------------------------------------------------------------------
MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
DATA_ABSENT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
# PHD IG STU 2 PhdBaseObservation: category slice "PHD-Observation" (1..1), code "phd".
PHD_CATEGORY_SYSTEM = "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories"
PHD_CATEGORY_CODE = "phd"
# PHD IG PhdBaseObservation interpretation slice "MsmtStatusInterpretation" (PoCD IG codes).
MEASUREMENT_STATUS_SYSTEM = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"

# --- profiles ---------------------------------------------------------------------------------
PHD_NUMERIC_PROFILE = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation"
PHD_COMPOUND_NUMERIC_PROFILE = (
    "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdCompoundNumericObservation"
)
PHD_PATIENT_PROFILE = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdPatient"

# --- this project's own extension ---------------------------------------------------------------
# The server's plausibility verdict (hospital_server.ingest.plausibility). The project owns no
# web domain, so the extension is named by a URN made from a UUID generated for it (RFC 4122;
# FHIR allows urn:uuid for canonical names). Its value is a code, never free text.
PLAUSIBILITY_EXTENSION_URL = "urn:uuid:bc2da92f-21a4-4840-8522-f3a00ed60931"
QUALITIES = frozenset({"ok", "implausible", "special"})

# --- values -------------------------------------------------------------------------------------
# PHD IG "MDER FLOATs and SFLOATs", table "Special FLOAT and SFLOAT Values": NRes and the
# reserved value have no data-absent-reason code of their own and use the generic "error".
DATA_ABSENT_REASON_BY_SPECIAL: MappingProxyType[SpecialValue, str] = MappingProxyType(
    {
        SpecialValue.NAN: "not-a-number",
        SpecialValue.NRES: "error",
        SpecialValue.POS_INF: "positive-infinity",
        SpecialValue.NEG_INF: "negative-infinity",
        SpecialValue.RESERVED: "error",
    }
)

# --- measurement status (the PLXS Measurement Status bits, as phd_protocol.gatt.plx names them)
# PHD IG "PHD Base Observation Profile", section Measurement Status. Order matters for the
# data-absent reasons: the first match wins (invalid beats not-available beats ongoing), and a
# status reason beats a special value (PhdNumericObservation.dataAbsentReason comment).
DATA_ABSENT_REASON_BY_STATUS: tuple[tuple[str, str], ...] = (
    ("status:invalid", "error"),
    ("status:unavailable", "not-performed"),
    ("status:measurement_ongoing", "temp-unknown"),
)
INTERPRETATION_BY_STATUS: tuple[tuple[str, str], ...] = (
    ("status:questionable", "questionable"),
    ("status:calibration_ongoing", "calibration-ongoing"),
    ("status:validated", "validated-data"),
    ("status:early_estimate", "early-indication"),
)
# Test or demonstration data: meta.security HTEST (v3-ActReason).
HTEST_FLAGS = frozenset({"status:testing", "status:demonstration"})
# PHD IG PhdBaseObservation.status: "final" unless the measurement is reported as preliminary.
# An HTS Intermediate Temperature is by definition not the final reading.
PRELIMINARY_FLAGS = frozenset({"intermediate"})

# --- supplemental types -------------------------------------------------------------------------
MDC_ATTR_SUPPLEMENTAL_TYPES = (1 << 16) | 2657  # 68193: partition 1 (object), term 2657
# PLX continuous fast/slow readings (flags from phd_protocol.gatt.plx) -> MDC modality code.
SUPPLEMENTAL_TYPE_BY_FLAG: MappingProxyType[str, tuple[int, str]] = MappingProxyType(
    {
        "modality:fast": ((2 << 16) | 19508, "MDC_MODALITY_FAST"),  # 150580
        "modality:slow": ((2 << 16) | 19512, "MDC_MODALITY_SLOW"),  # 150584
    }
)

# --- vital signs ---------------------------------------------------------------------------------
# FHIR R4 vital signs: "If a more specific code is recorded, the generic code and the
# translated coded SHALL be sent". The oxygen saturation profile fixes LOINC 2708-6; the PHD
# pulse oximeter's own LOINC (59408-5, by pulse oximetry) is the more specific one. Keyed by
# MDC code; the generic code is placed before the observation's own LOINC.
VITAL_SIGNS_GENERIC_LOINC: MappingProxyType[int, str] = MappingProxyType(
    {mdc.PULS_OXIM_SAT_O2.code: "2708-6"}
)

# --- OperationOutcome -----------------------------------------------------------------------------
# FHIR R4 value set issue-type (http://hl7.org/fhir/issue-type), every code.
ISSUE_TYPES = frozenset(
    {
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "unknown",
        "expired",
        "forbidden",
        "suppressed",
        "processing",
        "not-supported",
        "duplicate",
        "multiple-matches",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "no-store",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    }
)
