"""One stored reading as a FHIR R4 Observation in the style of the HL7 PHD IG.

The mapping (docs/fhir.md has the full table and the reasons):

- ``meta.profile``: PhdNumericObservation, or PhdCompoundNumericObservation for a compound
  (blood pressure, RR intervals). ``meta.security`` HTEST for test/demonstration data.
- ``extension``: the server's plausibility verdict as a code (``ok``, ``implausible``,
  ``special``) under this project's extension URL.
- ``status``: ``final``; ``preliminary`` for intermediate readings.
- ``category``: the PHD category always; ``vital-signs`` when the reading has a LOINC code.
- ``code``: the MDC coding (display = reference id when known), then LOINC codings.
- ``subject``/``device``: ``Patient/{id}`` and ``Device/{id}``.
- ``effectiveDateTime``: the observation's time (the device's clock, corrected when the agent
  measured its offset, or the agent's receive time when the device sent none); absent when the
  reading has no time. ``issued``: when the server received it.
- ``valueQuantity`` (exact Decimal, UCUM) or ``dataAbsentReason`` (special value, or a
  measurement status saying there is no valid value); compounds carry one ``component`` per
  part, each with its own codes and value or absent reason.
- ``interpretation``: measurement-status codes; ``component`` 68193 for supplemental types.

Nothing else appears: in particular no content id (it is as confidential as the value, see
docs/codecs.md), no free text, no flags the PHD IG gives no place to.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from hospital_server.fhir import codes
from hospital_server.fhir._check import check_aware, check_id, check_url, reference
from phd_protocol import mdc
from phd_protocol.observation import Component, Observation, format_time
from phd_protocol.sfloat import MedicalNumber, SpecialValue

__all__ = ["observation_resource"]


def observation_resource(
    obs: Observation,
    *,
    resource_id: str,
    patient_id: str,
    device_id: str,
    quality: str,
    received_at: datetime,
    base_url: str = "",
) -> dict[str, Any]:
    """The FHIR R4 Observation for one stored reading.

    ``resource_id`` is the stored row id, ``patient_id``/``device_id`` the ids of the Patient
    and Device it refers to, ``quality`` the plausibility verdict stored with the row,
    ``received_at`` the server's receive time (``issued``). With ``base_url`` (the FHIR base,
    e.g. ``https://hospital.example/fhir``) the references are absolute, else relative.

    Decimal values stay ``Decimal`` in the result: serialise with
    :func:`hospital_server.fhir.to_json`, which writes them with their exact precision.
    Raises ValueError (naming the argument, never its value) for an invalid argument.
    """
    if not isinstance(obs, Observation):
        raise TypeError("obs must be a phd_protocol.observation.Observation")
    check_id(resource_id, "resource_id")
    check_id(patient_id, "patient_id")
    check_id(device_id, "device_id")
    if quality not in codes.QUALITIES:
        raise ValueError("quality must be one of ok, implausible, special")
    check_aware(received_at, "received_at")
    if base_url:
        check_url(base_url, "base_url")

    compound = obs.value is None
    meta: dict[str, Any] = {
        "profile": [codes.PHD_COMPOUND_NUMERIC_PROFILE if compound else codes.PHD_NUMERIC_PROFILE]
    }
    if obs.flags & codes.HTEST_FLAGS:
        meta["security"] = [{"system": codes.ACT_REASON_SYSTEM, "code": "HTEST"}]

    category = [_concept(codes.PHD_CATEGORY_SYSTEM, codes.PHD_CATEGORY_CODE)]
    if obs.loinc is not None:
        category.append(_concept(codes.OBSERVATION_CATEGORY_SYSTEM, "vital-signs"))

    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": resource_id,
        "meta": meta,
        "extension": [{"url": codes.PLAUSIBILITY_EXTENSION_URL, "valueCode": quality}],
        "status": "preliminary" if obs.flags & codes.PRELIMINARY_FLAGS else "final",
        "category": category,
        "code": {"coding": _codings(obs.mdc_code, obs.loinc)},
        "subject": {"reference": reference(base_url, "Patient", patient_id)},
    }
    if obs.time is not None:
        resource["effectiveDateTime"] = format_time(obs.time)
    resource["issued"] = format_time(received_at)

    # A measurement status saying "no valid value" wins over the value and over a special
    # value (PhdNumericObservation.dataAbsentReason); a compound then has no parts either.
    status_absent = next(
        (reason for flag, reason in codes.DATA_ABSENT_REASON_BY_STATUS if flag in obs.flags),
        None,
    )
    if status_absent is not None:
        resource["dataAbsentReason"] = _absent(status_absent)
    elif obs.value is not None:
        resource.update(_value(obs.value, obs.unit))

    interpretation = [
        _concept(codes.MEASUREMENT_STATUS_SYSTEM, code)
        for flag, code in codes.INTERPRETATION_BY_STATUS
        if flag in obs.flags
    ]
    if interpretation:
        resource["interpretation"] = interpretation
    resource["device"] = {"reference": reference(base_url, "Device", device_id)}

    components = [_supplemental(flag) for flag in sorted(obs.flags & _SUPPLEMENTAL_FLAGS)]
    if compound and status_absent is None:
        components.extend(_component(part, obs.unit) for part in obs.components)
    if components:
        resource["component"] = components
    return resource


_SUPPLEMENTAL_FLAGS = frozenset(codes.SUPPLEMENTAL_TYPE_BY_FLAG)


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return coding


def _codings(mdc_code: int, loinc: str | None) -> list[dict[str, Any]]:
    term = mdc.TERMS.get(mdc_code)
    codings = [_coding(codes.MDC_SYSTEM, str(mdc_code), None if term is None else term.ref_id)]
    if loinc is not None:
        generic = codes.VITAL_SIGNS_GENERIC_LOINC.get(mdc_code)
        if generic is not None and generic != loinc:
            codings.append(_coding(codes.LOINC_SYSTEM, generic))
        codings.append(_coding(codes.LOINC_SYSTEM, loinc))
    return codings


def _absent(code: str) -> dict[str, Any]:
    return _concept(codes.DATA_ABSENT_REASON_SYSTEM, code)


def _value(value: MedicalNumber, unit: str) -> dict[str, Any]:
    if isinstance(value, SpecialValue):
        return {"dataAbsentReason": _absent(codes.DATA_ABSENT_REASON_BY_SPECIAL[value])}
    return {"valueQuantity": _quantity(value, unit)}


def _quantity(value: Decimal, unit: str) -> dict[str, Any]:
    # Quantity.unit repeats the UCUM code: it is what a reader needs to display, and a
    # second spelling would be one more table to keep right.
    return {"value": value, "unit": unit, "system": codes.UCUM_SYSTEM, "code": unit}


def _component(part: Component, unit: str) -> dict[str, Any]:
    return {"code": {"coding": _codings(part.mdc_code, part.loinc)}, **_value(part.value, unit)}


def _supplemental(flag: str) -> dict[str, Any]:
    code, ref_id = codes.SUPPLEMENTAL_TYPE_BY_FLAG[flag]
    return {
        "code": _concept(
            codes.MDC_SYSTEM, str(codes.MDC_ATTR_SUPPLEMENTAL_TYPES), "MDC_ATTR_SUPPLEMENTAL_TYPES"
        ),
        "valueCodeableConcept": _concept(codes.MDC_SYSTEM, str(code), ref_id),
    }
