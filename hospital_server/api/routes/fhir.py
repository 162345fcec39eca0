"""FHIR R4 read API (``/fhir``): Observation search and read, Patient read, capabilities.

Same access rules and audit as the JSON API (:mod:`hospital_server.api.routes.clinical`): a
clinician or nurse on the patient's care team, or under break-glass; ``observation.read`` /
``patient.read`` committed before the response. Resources are built by
:mod:`hospital_server.fhir` (PHD IG style: MDC + LOINC codings, UCUM units) and sent as
``application/fhir+json`` with exact decimals. Errors are OperationOutcome resources.

Search parameters of ``GET /fhir/Observation``: ``patient`` (required: ``Patient/{id}`` or
the id), ``code`` (comma-separated tokens ``system|code`` or ``code``; systems
``urn:iso:std:iso:11073:10101`` (MDC) and ``http://loinc.org``), ``date`` (repeatable, with
prefixes ``ge``, ``gt``, ``le``, ``lt``; a date or a date-time with offset), ``_count``
(1..1000, default 100) and ``_offset`` (paging; the ``next`` link carries it).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import Session

from hospital_server.access import AccessDenied, Grant, authorize_read, record_read
from hospital_server.api.deps import Ctx, CurrentPrincipal, DbSession
from hospital_server.auth.principal import Principal
from hospital_server.clinical import (
    MAX_PAGE,
    ReadingQuery,
    RecordIntegrityError,
    StoredReading,
    observation_patient,
    read_observation,
    read_observations,
)
from hospital_server.fhir import (
    bundle,
    observation_resource,
    operation_outcome,
    patient_resource,
    to_json,
)
from hospital_server.patients import PatientNotFoundError, read_patient
from phd_protocol import mdc

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["fhir"])

FHIR_JSON = "application/fhir+json"
MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
MRN_SYSTEM = "urn:phd-hospital:mrn"
_MICROSECOND = timedelta(microseconds=1)


class FhirError(Exception):
    def __init__(self, status_code: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status_code, self.code, self.diagnostics = status_code, code, diagnostics


def _send(resource: dict[str, Any], status_code: int = 200) -> Response:
    return Response(to_json(resource), status_code=status_code, media_type=FHIR_JSON)


def _outcome(error: FhirError) -> Response:
    return _send(operation_outcome(error.code, error.diagnostics), error.status_code)


def _authorize(session: Session, principal: Principal, patient_id: str) -> Grant:
    try:
        return authorize_read(
            session, user_id=principal.user_id, role=principal.role, patient_id=patient_id
        )
    except AccessDenied as denied:
        session.commit()  # the denial's audit entry
        raise FhirError(403, "forbidden", denied.reason) from None


def _resource(reading: StoredReading, base: str) -> dict[str, Any]:
    return observation_resource(
        reading.observation,
        resource_id=reading.id,
        patient_id=reading.patient_id,
        device_id=reading.device_id,
        quality=reading.quality,
        received_at=reading.received_at,
        base_url=base,
    )


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


# ------------------------------------------------------------------ search parameters


def _patient_param(value: str) -> str:
    patient_id = value.removeprefix("Patient/")
    if not patient_id or len(patient_id) > 64 or "/" in patient_id:
        raise FhirError(400, "invalid", "patient must be Patient/{id} or an id")
    return patient_id


def _code_param(values: list[str]) -> frozenset[int] | None:
    if not values:
        return None
    codes: set[int] = set()
    for value in values:
        for token in value.split(","):
            system, bar, code = token.rpartition("|")
            if not bar:
                system = MDC_SYSTEM
            if system == MDC_SYSTEM:
                if not code.isdigit() or len(code) > 10:
                    raise FhirError(400, "invalid", "an MDC code is a decimal number")
                codes.add(int(code))
            elif system == LOINC_SYSTEM:
                codes.update(c for c, term in mdc.TERMS.items() if term.loinc == code)
            else:
                raise FhirError(400, "not-supported", "code systems: MDC and LOINC")
    return frozenset(codes)


def _instant(text: str, *, end: bool) -> datetime:
    """The start of a date or date-time, or with ``end`` the first instant after it (the
    next midnight for a date, one microsecond on for a date-time): FHIR compares ranges."""
    try:
        if len(text) == 10:
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FhirError(400, "invalid", "date must be YYYY-MM-DD or a date-time") from None
    if moment.tzinfo is None:
        raise FhirError(400, "invalid", "a date-time must carry its offset")
    return moment + _MICROSECOND if end else moment


def _date_params(values: list[str]) -> tuple[datetime | None, datetime | None]:
    """(since, until) from ``date`` parameters: ge/gt bound below, le/lt above."""
    since: datetime | None = None
    until: datetime | None = None
    for value in values:
        prefix, text = value[:2], value[2:]
        if prefix not in {"ge", "gt", "le", "lt"}:
            raise FhirError(400, "not-supported", "date prefixes: ge, gt, le, lt")
        bound = _instant(text, end=prefix in {"gt", "le"})
        if prefix in {"ge", "gt"}:
            since = bound if since is None else max(since, bound)
        else:
            until = bound if until is None else min(until, bound)
    return since, until


# ------------------------------------------------------------------ interactions


@router.get("/Observation", response_class=Response)
def search_observations(
    request: Request,
    *,
    principal: CurrentPrincipal,
    ctx: Ctx,
    session: DbSession,
    patient: Annotated[str | None, Query()] = None,
    code: Annotated[list[str] | None, Query()] = None,
    date_: Annotated[list[str] | None, Query(alias="date")] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=10_000_000)] = 0,
) -> Response:
    try:
        if patient is None:
            raise FhirError(400, "required", "the patient search parameter is required")
        patient_id = _patient_param(patient)
        since, until = _date_params(date_ or [])
        query = ReadingQuery(
            mdc_codes=_code_param(code or []),
            since=since,
            until=until,
            limit=count,
            offset=offset,
        )
        grant = _authorize(session, principal, patient_id)
        try:
            readings, more = read_observations(session, ctx.keys, patient_id, query)
        except RecordIntegrityError:
            raise FhirError(500, "exception", "record_integrity") from None
    except FhirError as error:
        return _outcome(error)
    record_read(
        session, grant, user_id=principal.user_id, patient_id=patient_id, count=len(readings)
    )
    base = _base(request)
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "_offset"]
    self_url = f"{base}/Observation?{urlencode([*params, ('_offset', offset)])}"
    next_url = (
        f"{base}/Observation?{urlencode([*params, ('_offset', offset + len(readings))])}"
        if more
        else None
    )
    return _send(
        bundle(
            [_resource(r, base) for r in readings],
            total=None,
            self_url=self_url,
            next_url=next_url,
        )
    )


@router.get("/Observation/{observation_id}", response_class=Response)
def read_one_observation(
    observation_id: str,
    request: Request,
    principal: CurrentPrincipal,
    ctx: Ctx,
    session: DbSession,
) -> Response:
    try:
        patient_id = observation_patient(session, observation_id)
        if patient_id is None:
            raise FhirError(404, "not-found", "no such Observation")
        grant = _authorize(session, principal, patient_id)
        try:
            reading = read_observation(session, ctx.keys, patient_id, observation_id)
        except RecordIntegrityError:
            raise FhirError(500, "exception", "record_integrity") from None
        if reading is None:
            raise FhirError(404, "not-found", "no such Observation")
    except FhirError as error:
        return _outcome(error)
    record_read(session, grant, user_id=principal.user_id, patient_id=patient_id, count=1)
    return _send(_resource(reading, _base(request)))


@router.get("/Patient/{patient_id}", response_class=Response)
def read_one_patient(
    patient_id: str, principal: CurrentPrincipal, ctx: Ctx, session: DbSession
) -> Response:
    try:
        grant = _authorize(session, principal, patient_id)
        try:
            patient = read_patient(session, ctx.keys, patient_id)
        except PatientNotFoundError:
            raise FhirError(404, "not-found", "no such Patient") from None
    except FhirError as error:
        return _outcome(error)
    record_read(
        session, grant, user_id=principal.user_id, patient_id=patient_id, event="patient.read"
    )
    return _send(
        patient_resource(
            patient_id=patient.id,
            name=patient.name,
            mrn=patient.mrn,
            mrn_system=MRN_SYSTEM,
            birth_date=patient.date_of_birth,
        )
    )


@router.get("/metadata", response_class=Response)
def capability_statement() -> Response:
    """What this FHIR endpoint supports (read-only, token-authenticated)."""
    return _send(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-11-23",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": [FHIR_JSON],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "description": "Bearer ES256 tokens from /api/v1/auth/token; "
                        "care-team or break-glass access per patient."
                    },
                    "resource": [
                        {
                            "type": "Observation",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {"name": "patient", "type": "reference"},
                                {"name": "code", "type": "token"},
                                {"name": "date", "type": "date"},
                            ],
                        },
                        {"type": "Patient", "interaction": [{"code": "read"}]},
                    ],
                }
            ],
        }
    )
