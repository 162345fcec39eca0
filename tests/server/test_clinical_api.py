"""Clinician API over HTTP: JSON and FHIR reads, care teams, break-glass, refusals, audit."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation as FhirObservation
from fhir.resources.R4B.patient import Patient as FhirPatient
from sqlalchemy import update
from sqlmodel import col, select

from hospital_server.context import ServerContext
from hospital_server.ingest.process import process_envelope
from hospital_server.models import AuditEvent, StaffUser
from hospital_server.models import Observation as ObservationRow
from phd_protocol import mdc
from tests.server.conftest import CLINICIAN, add_staff_user, audit_entries, bearer_headers
from tests.server.ingest_world import EnrolledDevice, World, bp, temperature

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
PASSWORD = "a long enough password"


@pytest.fixture
def patient(world: World, admin_headers: dict[str, str]) -> EnrolledDevice:
    """A patient with three blood pressures (08:00, 09:00, 10:00) and two temperatures."""
    device = world.enroll(mrn="API-1")
    for observations in (
        [bp(device, str(120 + i), "80", at=T0 + timedelta(hours=i)) for i in range(3)],
        [temperature(device, Decimal("36.60"), minute=m) for m in (5, 6)],
    ):
        with world.ctx.sessions() as s:
            result = process_envelope(world.ingestor, s, world.seal(device, observations), "gw-1")
        assert result.status.value == "stored"
    return device


# The database is reached through threads: async tests must not block the event loop.


async def _audit(ctx: ServerContext, event_type: str) -> list[dict[str, Any]]:
    return await asyncio.to_thread(audit_entries, ctx, event_type)


def _all_audit_text(ctx: ServerContext) -> str:
    with ctx.sessions() as s:
        return " ".join(e.detail for e in s.exec(select(AuditEvent)).all())


def _staff_id(ctx: ServerContext, username: str) -> str:
    with ctx.sessions() as s:
        return s.exec(select(StaffUser).where(StaffUser.username == username)).one().id


async def _clinician_id(ctx: ServerContext) -> str:
    return await asyncio.to_thread(_staff_id, ctx, CLINICIAN[0])


def _any_row_id(ctx: ServerContext) -> str:
    with ctx.sessions() as s:
        row = s.exec(select(ObservationRow)).first()
        assert row is not None
        return row.id


def _point_temperatures_at_item_0(ctx: ServerContext) -> None:
    with ctx.sessions() as s:
        s.execute(
            update(ObservationRow)
            .where(col(ObservationRow.mdc_code) == mdc.TEMP_BODY.code)
            .values(item=0)
        )
        s.commit()


async def _join(
    client: httpx.AsyncClient, admin: dict[str, str], patient_id: str, user_id: str
) -> None:
    response = await client.put(f"/api/v1/patients/{patient_id}/care-team/{user_id}", headers=admin)
    assert response.status_code == 204, response.text


async def test_care_team_clinician_reads_json_and_fhir(
    client: httpx.AsyncClient,
    context: ServerContext,
    patient: EnrolledDevice,
    admin_headers: dict[str, str],
    clinician_headers: dict[str, str],
) -> None:
    doctor = await _clinician_id(context)
    await _join(client, admin_headers, patient.patient_id, doctor)
    team = await client.get(
        f"/api/v1/patients/{patient.patient_id}/care-team", headers=admin_headers
    )
    assert [m["user_id"] for m in team.json()] == [doctor]

    # JSON: newest first, exact decimals in the bytes themselves.
    response = await client.get(
        f"/api/v1/patients/{patient.patient_id}/observations", headers=clinician_headers
    )
    assert response.status_code == 200
    assert b"36.60" in response.content
    body = json.loads(response.content, parse_float=Decimal)
    assert len(body["items"]) == 5
    assert body["next_offset"] is None
    assert [c["value"] for c in body["items"][0]["components"]] == [122, 80]

    # FHIR search: a valid R4 searchset with five Observations, MDC + LOINC coded.
    fhir = await client.get(
        "/fhir/Observation",
        params={"patient": f"Patient/{patient.patient_id}"},
        headers=clinician_headers,
    )
    assert fhir.status_code == 200
    assert fhir.headers["content-type"] == "application/fhir+json"
    bundle = Bundle.model_validate_json(fhir.content)
    assert bundle.type == "searchset"
    resources = [e["resource"] for e in fhir.json()["entry"]]
    assert len(resources) == 5
    codings = [r["code"]["coding"][0] for r in resources]
    assert sorted((c["system"], c["code"]) for c in codings) == sorted(
        [("urn:iso:std:iso:11073:10101", str(mdc.PRESS_BLD_NONINV.code))] * 3
        + [("urn:iso:std:iso:11073:10101", str(mdc.TEMP_BODY.code))] * 2
    )
    assert b'"value":36.60' in fhir.content.replace(b" ", b"")
    assert all(
        r["subject"]["reference"].endswith(f"Patient/{patient.patient_id}") for r in resources
    )

    # FHIR read of one Observation and of the Patient.
    one = await client.get(f"/fhir/Observation/{resources[0]['id']}", headers=clinician_headers)
    assert one.status_code == 200
    FhirObservation.model_validate_json(one.content)
    person = await client.get(f"/fhir/Patient/{patient.patient_id}", headers=clinician_headers)
    assert person.status_code == 200
    identifiers = FhirPatient.model_validate_json(person.content).identifier
    assert identifiers is not None
    assert identifiers[0].value == "API-1"

    # Every read audited, as a care-team read, with counts and no values.
    reads = await _audit(context, "observation.read")
    assert [(r["actor"], r["subject"], r["count"], r["access"]) for r in reads] == [
        (doctor, patient.patient_id, 5, "care_team"),
        (doctor, patient.patient_id, 5, "care_team"),
        (doctor, patient.patient_id, 1, "care_team"),
    ]
    assert len(await _audit(context, "patient.read")) == 1
    details = await asyncio.to_thread(_all_audit_text, context)
    assert "36.6" not in details
    assert "API-1" not in details


async def test_fhir_search_parameters_and_paging(
    client: httpx.AsyncClient,
    context: ServerContext,
    patient: EnrolledDevice,
    admin_headers: dict[str, str],
    clinician_headers: dict[str, str],
) -> None:
    await _join(client, admin_headers, patient.patient_id, await _clinician_id(context))

    async def search(**params: Any) -> dict[str, Any]:
        response = await client.get(
            "/fhir/Observation",
            params={"patient": patient.patient_id, **params},
            headers=clinician_headers,
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    by_loinc = await search(code="http://loinc.org|8310-5")
    assert len(by_loinc["entry"]) == 2
    by_mdc = await search(code=f"urn:iso:std:iso:11073:10101|{mdc.PRESS_BLD_NONINV.code}")
    assert len(by_mdc["entry"]) == 3
    window = await search(date=["ge2026-11-01T09:00:00+00:00", "lt2026-11-01T09:05:00+00:00"])
    (only,) = window["entry"]
    systolic = only["resource"]["component"][0]["valueQuantity"]["value"]
    assert systolic == 121  # the 09:00 reading; 09:05 is outside the half-open window
    assert (await search(date="le2026-10-31")).get("entry", []) == []

    # Paging: follow next links two at a time; every reading once.
    seen: list[str] = []
    page = await search(_count=2)
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        response = await client.get(nxt[0], headers=clinician_headers)
        page = response.json()
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "required"),
        ({"patient": "x", "code": "http://snomed.info/sct|123"}, "not-supported"),
        ({"patient": "x", "code": "urn:iso:std:iso:11073:10101|abc"}, "invalid"),
        ({"patient": "x", "date": "eq2026-11-01"}, "not-supported"),
        ({"patient": "x", "date": "ge2026-11-01T09:00:00"}, "invalid"),
        ({"patient": "x", "date": "genot-a-date"}, "invalid"),
    ],
)
async def test_fhir_bad_search_is_an_operation_outcome(
    client: httpx.AsyncClient,
    clinician_headers: dict[str, str],
    params: dict[str, str],
    code: str,
) -> None:
    response = await client.get("/fhir/Observation", params=params, headers=clinician_headers)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


async def test_refusals_are_audited_and_reveal_nothing(
    client: httpx.AsyncClient,
    context: ServerContext,
    patient: EnrolledDevice,
    admin_headers: dict[str, str],
    clinician_headers: dict[str, str],
) -> None:
    path = f"/api/v1/patients/{patient.patient_id}/observations"
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers={"Authorization": "Bearer x.y.z"})).status_code == 401
    # Admins manage but do not read clinical data.
    admin = await client.get(path, headers=admin_headers)
    assert (admin.status_code, admin.json()["detail"]) == (403, "role_not_permitted")
    # A clinician outside the care team, for a real and for an unknown patient: same answer.
    for pid in (patient.patient_id, "00000000-0000-4000-8000-000000000000"):
        denied = await client.get(f"/api/v1/patients/{pid}/observations", headers=clinician_headers)
        assert (denied.status_code, denied.json()["detail"]) == (403, "not_care_team")
    fhir = await client.get(
        "/fhir/Observation", params={"patient": patient.patient_id}, headers=clinician_headers
    )
    assert fhir.status_code == 403
    assert fhir.json()["issue"][0]["code"] == "forbidden"
    assert "36.6" not in fhir.text
    row_id = await asyncio.to_thread(_any_row_id, context)
    one = await client.get(f"/fhir/Observation/{row_id}", headers=clinician_headers)
    assert one.status_code == 403
    assert len(await _audit(context, "authz.denied")) == 5
    assert await _audit(context, "observation.read") == []


async def test_break_glass_over_http_is_flagged_and_reviewable(
    client: httpx.AsyncClient,
    context: ServerContext,
    patient: EnrolledDevice,
) -> None:
    nurse = await asyncio.to_thread(add_staff_user, context, "nurse-er", PASSWORD, role="nurse")
    await asyncio.to_thread(add_staff_user, context, "auditor-1", PASSWORD, role="auditor")
    nurse_headers = await asyncio.to_thread(bearer_headers, context, "nurse-er")
    auditor_headers = await asyncio.to_thread(bearer_headers, context, "auditor-1")
    path = f"/api/v1/patients/{patient.patient_id}"
    assert (await client.get(path, headers=nurse_headers)).status_code == 403
    short = await client.post(f"{path}/break-glass", json={"reason": "x"}, headers=nurse_headers)
    assert short.status_code == 422
    granted = await client.post(
        f"{path}/break-glass",
        json={"reason": "Collapsed at home, paramedics on call", "minutes": 15},
        headers=nurse_headers,
    )
    assert granted.status_code == 201, granted.text
    grant_id = granted.json()["id"]
    person = await client.get(path, headers=nurse_headers)
    assert person.status_code == 200
    assert person.json()["mrn"] == "API-1"
    reads = await client.get(f"{path}/observations", headers=nurse_headers)
    assert reads.status_code == 200
    flagged = (await _audit(context, "observation.read"))[-1]
    assert (flagged["actor"], flagged["access"], flagged["grant"]) == (
        nurse,
        "break_glass",
        grant_id,
    )
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    register = await client.get(
        "/api/v1/break-glass", params={"since": since}, headers=auditor_headers
    )
    assert register.status_code == 200
    assert [(g["id"], g["reason"]) for g in register.json()] == [
        (grant_id, "Collapsed at home, paramedics on call")
    ]
    assert (
        await client.get("/api/v1/break-glass", params={"since": since}, headers=nurse_headers)
    ).status_code == 403
    details = await asyncio.to_thread(_all_audit_text, context)
    assert "paramedics" not in details


async def test_a_tampered_row_answers_record_integrity_without_values(
    client: httpx.AsyncClient,
    context: ServerContext,
    patient: EnrolledDevice,
    admin_headers: dict[str, str],
    clinician_headers: dict[str, str],
) -> None:
    await _join(client, admin_headers, patient.patient_id, await _clinician_id(context))
    await asyncio.to_thread(_point_temperatures_at_item_0, context)
    response = await client.get(
        f"/api/v1/patients/{patient.patient_id}/observations", headers=clinician_headers
    )
    assert (response.status_code, response.json()["detail"]) == (500, "record_integrity")
    fhir = await client.get(
        "/fhir/Observation", params={"patient": patient.patient_id}, headers=clinician_headers
    )
    assert fhir.status_code == 500
    assert fhir.json()["issue"][0]["code"] == "exception"
    assert "36.6" not in response.text + fhir.text
