"""Search-set Bundle, minimal Patient and OperationOutcome (FHIR R4), as JSON-ready dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from hospital_server.fhir import codes
from hospital_server.fhir._check import check_id, check_text, check_url

__all__ = ["bundle", "operation_outcome", "patient_resource"]

_MAX_DIAGNOSTICS = 256


def bundle(
    resources: Sequence[Mapping[str, Any]],
    *,
    total: int | None,
    self_url: str,
    next_url: str | None,
    base_url: str = "",
) -> dict[str, Any]:
    """A ``searchset`` Bundle of ``resources`` (each from this package's builders).

    ``entry[].fullUrl`` is ``{base}/{resourceType}/{id}``, where the base is ``base_url`` or,
    when that is empty, ``self_url`` without its query and its last path segment (the search
    URL ``{base}/Observation?...`` gives ``{base}``). ``search.mode`` is ``match``, or
    ``outcome`` for an OperationOutcome (FHIR R4 Bundle: warnings about the search travel in
    an OperationOutcome entry). ``total`` is left out when None (not counted); ``link`` holds
    ``self`` and, when there is a next page, ``next``.
    """
    check_url(self_url, "self_url")
    if next_url is not None:
        check_url(next_url, "next_url")
    count: object = total  # checked at run time too: it comes from a query
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ValueError("total must be a non-negative integer or None")
    base = check_url(base_url, "base_url").rstrip("/") if base_url else _base_of(self_url)

    entries = []
    for index, resource in enumerate(resources):
        item: object = resource  # checked at run time too: routes build these lists
        kind = item.get("resourceType") if isinstance(item, Mapping) else None
        if not isinstance(kind, str) or not kind.isascii() or not kind.isalpha():
            raise ValueError(f"resources[{index}] must be a FHIR resource dict")
        entry: dict[str, Any] = {}
        if "id" in resource:
            resource_id = check_id(resource["id"], f"resources[{index}].id")
            entry["fullUrl"] = f"{base}/{kind}/{resource_id}"
        entry["resource"] = resource
        entry["search"] = {"mode": "outcome" if kind == "OperationOutcome" else "match"}
        entries.append(entry)

    result: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        result["total"] = total
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    result["link"] = links
    result["entry"] = entries
    return result


def _base_of(self_url: str) -> str:
    path = self_url.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    head, sep, _ = path.rpartition("/")
    if not sep or head.endswith(("/", ":")):
        raise ValueError("self_url must be a search URL {base}/{type}?... (or pass base_url)")
    return head


def patient_resource(
    *,
    patient_id: str,
    name: str,
    mrn: str,
    mrn_system: str,
    birth_date: date | None,
) -> dict[str, Any]:
    """A minimal R4 Patient (PHD IG PhdPatient): the MRN as an identifier of type MR, the
    name as given (one ``HumanName.text``: we do not guess family and given parts) and the
    birth date when known. Raises ValueError naming the argument, never its value."""
    check_id(patient_id, "patient_id")
    check_text(name, "name")
    check_text(mrn, "mrn")
    check_url(mrn_system, "mrn_system")
    born: object = birth_date  # a datetime is a date too, and would print a time
    if born is not None and (not isinstance(born, date) or isinstance(born, datetime)):
        raise ValueError("birth_date must be a date or None")
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "meta": {"profile": [codes.PHD_PATIENT_PROFILE]},
        "identifier": [
            {
                "type": {"coding": [{"system": codes.V2_0203_SYSTEM, "code": "MR"}]},
                "system": mrn_system,
                "value": mrn,
            }
        ],
        "name": [{"text": name}],
    }
    if birth_date is not None:
        resource["birthDate"] = birth_date.isoformat()
    return resource


def operation_outcome(code: str, diagnostics: str) -> dict[str, Any]:
    """An R4 OperationOutcome with one error issue.

    ``code`` is from the FHIR issue-type value set (``forbidden``, ``not-found``,
    ``invalid``...). ``diagnostics`` must be fixed text chosen by the caller: never a value, a
    name or an identifier from the request or the database (it is checked to be short plain
    text; its meaning cannot be checked here).
    """
    if code not in codes.ISSUE_TYPES:
        raise ValueError("code must be a FHIR issue-type code")
    check_text(diagnostics, "diagnostics")
    if len(diagnostics) > _MAX_DIAGNOSTICS:
        raise ValueError(f"diagnostics must be at most {_MAX_DIAGNOSTICS} characters")
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
