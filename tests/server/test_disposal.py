"""Destruction and disposal: patient erasure by crypto-shredding, retention, on both backends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, update
from sqlmodel import col, select

from hospital_server.app import create_app
from hospital_server.auditlog import checkpoint_now, verify
from hospital_server.disposal import (
    AlreadyErasedError,
    ErasureReason,
    dispose_expired,
    erase_patient,
)
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.gateways import revoke_gateway
from hospital_server.keys import KeyUnavailableError, LocalKeyFileProvider
from hospital_server.models import (
    AuditEvent,
    CareTeamMember,
    Credential,
    Device,
    DeviceStatus,
    IngestedEnvelope,
    Observation,
    Patient,
    PatientCreate,
    PatientKey,
    PatientStatus,
    Quarantine,
    StaffUser,
    table_of,
    utcnow,
)
from hospital_server.patients import (
    PatientNotFoundError,
    create_patient,
    find_by_mrn,
    read_patient,
)
from hospital_server.pki.layout import PkiLayout
from hospital_server.revocation import PkiBrokerRevocations
from hospital_server.settings import Settings
from phd_cli.main import main
from phd_protocol.errors import RejectReason
from phd_protocol.pki import load_crls
from phd_protocol.wire import AckStatus
from tests.server.conftest import CLINICIAN, audit_entries, dev_session
from tests.server.ingest_world import World, bp

GW = "gw-1"


def _count(world: World, model: type, **where: str) -> int:
    with world.ctx.sessions() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(s.exec(query).one())


def _ingest(world: World, mrn: str, envelopes: int) -> str:
    device = world.enroll(mrn=mrn)
    with world.ctx.sessions() as s:
        results = world.ingestor.process(
            s, GW, [world.seal(device, [bp(device, str(110 + n))]) for n in range(envelopes)]
        )
    assert [r.status for r in results] == [AckStatus.STORED] * envelopes
    return device.patient_id


def test_erasure_shreds_the_key_and_deletes_the_patients_data(world: World) -> None:
    erased, kept = _ingest(world, "E-1", 3), _ingest(world, "K-1", 2)
    device = world.devices[0]
    replayed = world.seal(device, [bp(device, "99")], seq=1)  # a replay: quarantined
    with world.ctx.sessions() as s:
        assert world.ingestor.process(s, GW, [replayed])[0].status is AckStatus.REJECTED
        clinician = s.exec(select(StaffUser.id).where(StaffUser.username == CLINICIAN[0])).one()
        s.add(CareTeamMember(patient_id=erased, user_id=clinician, added_by="a", added_at=utcnow()))
        s.commit()

    with world.ctx.sessions() as s:
        report = erase_patient(
            s, world.ctx.keys, erased, actor="admin-1", reason=ErasureReason.PATIENT_REQUEST
        )
        s.commit()
    assert (report.envelopes, report.observations, report.quarantined) == (3, 3, 1)
    assert (report.devices_revoked, report.care_team) == (1, 1)

    for model in (IngestedEnvelope, Observation):
        assert _count(world, model, patient_id=erased) == 0
        assert _count(world, model, patient_id=kept) == 2
    assert _count(world, Quarantine, device_id=device.device_id) == 0
    assert _count(world, PatientKey, patient_id=erased) == 0
    with world.ctx.sessions() as s:
        patient = s.get(Patient, erased)
        assert patient is not None
        assert patient.status == PatientStatus.ERASED
        assert (patient.name_ct, patient.mrn_ct, patient.dob_ct) == (b"", b"", None)
        stored_device = s.get(Device, device.device_id)
        assert stored_device is not None
        assert stored_device.status == DeviceStatus.REVOKED
        assert stored_device.info_ct is None
        with pytest.raises(PatientNotFoundError):
            read_patient(s, world.ctx.keys, erased)
        # The key is gone: nothing sealed under it opens any more (this process's cache was
        # told; the cache of another process expires, and the rows it could open are gone).
        with pytest.raises(KeyUnavailableError):
            world.ctx.keys.get(s, erased)
        assert find_by_mrn(s, world.ctx.keys, "E-1") is None
        # The MRN may be registered again (re-admission), as a new patient.
        again = create_patient(
            s, world.ctx.keys, PatientCreate(name="Test Patient", mrn="E-1"), actor="admin"
        )
        s.commit()
        assert again.id != erased
        assert read_patient(s, world.ctx.keys, kept).name == "Test Patient"

    [entry] = audit_entries(world.ctx, "patient.erased")
    assert entry == {
        "actor": "admin-1",
        "subject": erased,
        "reason": "patient_request",
        "devices_revoked": 1,
        "envelopes": 3,
        "observations": 3,
        "quarantined": 1,
        "break_glass": 0,
        "care_team": 1,
    }
    assert verify(world.ctx.sessions, world.ctx.key_provider).intact
    with world.ctx.sessions() as s, pytest.raises(AlreadyErasedError):
        erase_patient(s, world.ctx.keys, erased, actor="a", reason=ErasureReason.LEGAL_ORDER)


def test_an_erased_patients_late_envelope_is_refused_and_not_kept(world: World) -> None:
    device = world.enroll(mrn="L-1")
    late = world.seal(device)  # sealed before the erasure, still in some gateway's outbox
    with world.ctx.sessions() as s:
        erase_patient(
            s, world.ctx.keys, device.patient_id, actor="a", reason=ErasureReason.LEGAL_ORDER
        )
        s.commit()
    with world.ctx.sessions() as s:
        result = world.ingestor.process(s, GW, [late])[0]
    assert result.status is AckStatus.REJECTED
    assert result.reason is RejectReason.NOT_ENROLLED
    with world.ctx.sessions() as s:
        row = s.exec(select(Quarantine).where(Quarantine.device_id == device.device_id)).one()
    assert row.sealed == b""  # the ingest key would open it: not kept


async def test_erase_endpoint(
    world: World,
    settings: Settings,
    server_pki: PkiLayout,
    admin_headers: dict[str, str],
    clinician_headers: dict[str, str],
) -> None:
    patient_id = await asyncio.to_thread(_ingest, world, "A-1", 2)
    serial = await asyncio.to_thread(_serial, world)
    ctx = dataclasses.replace(world.ctx, revocations=PkiBrokerRevocations(layout=server_pki))
    app = create_app(settings, context=ctx)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://server"
    ) as client:
        await _erase_requests(client, patient_id, admin_headers, clinician_headers)
    crls = load_crls(await asyncio.to_thread(server_pki.crl("device").read_bytes))
    assert serial in {format(e.serial_number, "x") for crl in crls for e in crl}


def _serial(world: World) -> str:
    with world.ctx.sessions() as s:
        return s.exec(
            select(Credential.serial).where(Credential.device_id == world.devices[0].device_id)
        ).one()


async def _erase_requests(
    client: httpx.AsyncClient,
    patient_id: str,
    admin_headers: dict[str, str],
    clinician_headers: dict[str, str],
) -> None:
    url = f"/api/v1/patients/{patient_id}/erase"
    body = {"reason": "patient_request"}
    assert (await client.post(url, json=body, headers=clinician_headers)).status_code == 403
    bad = await client.post(url, json={"reason": "because"}, headers=admin_headers)
    assert bad.status_code == 422
    done = await client.post(url, json=body, headers=admin_headers)
    assert done.status_code == 200
    assert done.json() | {"id": ""} == {
        "id": "",
        "status": "erased",
        "devices_revoked": 1,
        "envelopes": 2,
        "observations": 2,
        "quarantined": 0,
        "break_glass": 0,
        "care_team": 0,
    }
    again = await client.post(url, json=body, headers=admin_headers)
    assert (again.status_code, again.json()["detail"]) == (409, "already_erased")
    unknown = await client.post(
        "/api/v1/patients/00000000-0000-0000-0000-000000000000/erase",
        json=body,
        headers=admin_headers,
    )
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "patient_not_found")


def test_retention_disposes_only_what_is_past_it(world: World) -> None:
    _ingest(world, "R-1", 4)
    with world.ctx.sessions() as s:  # two envelopes sealed eleven years ago
        old = list(s.exec(select(IngestedEnvelope.id).limit(2)))
        s.connection().execute(
            update(table_of(IngestedEnvelope))
            .where(col(IngestedEnvelope.id).in_(old))
            .values(sealed_at=utcnow() - timedelta(days=4018))
        )
        s.add(
            Quarantine(
                digest="ab" * 32,
                reason="malformed",
                gateway_id=GW,
                size=1,
                sealed=b"x",
                received_at=utcnow() - timedelta(days=91),
            )
        )
        s.commit()
    report = dispose_expired(
        world.ctx.sessions, readings=timedelta(days=3650), quarantine=timedelta(days=90), batch=1
    )
    assert (report.envelopes, report.observations, report.quarantined) == (2, 2, 1)
    assert report.batches == 2  # one envelope per transaction
    assert _count(world, IngestedEnvelope) == 2
    assert _count(world, Observation) == 2
    with world.ctx.sessions() as s:
        left = set(s.exec(select(Observation.envelope_id)))
        assert not left & set(old)
        details = [
            json.loads(d)
            for d in s.exec(
                select(AuditEvent.detail)
                .where(AuditEvent.event_type == "retention.disposed")
                .order_by(col(AuditEvent.seq))
            )
        ]
    assert [d["what"] for d in details] == ["readings", "readings", "quarantine"]
    assert sum(d.get("envelopes", 0) for d in details) == 2
    again = dispose_expired(
        world.ctx.sessions, readings=timedelta(days=3650), quarantine=timedelta(days=90)
    )
    assert (again.envelopes, again.quarantined) == (0, 0)


def test_retention_may_not_undercut_the_replay_horizon() -> None:
    with pytest.raises(ValidationError, match="retention_readings"):
        Settings(profile="dev", retention_readings=timedelta(days=30))
    with pytest.raises(ValidationError, match="retention_quarantine"):
        Settings(profile="dev", retention_quarantine=timedelta(hours=1))


def test_erase_and_dispose_commands(dev_server: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = PatientKeys(LocalKeyFileProvider.load(dev_server / "var/dev/server-keys.json"))
    with dev_session(dev_server) as s:
        patient_id = create_patient(s, keys, PatientCreate(name="C", mrn="C-1"), actor="t").id
        s.commit()
    assert main(["server", "--dev", "erase-patient", patient_id, "--reason", "whim"]) == 2
    assert "must be one of" in capsys.readouterr().err
    unknown = "00000000-0000-0000-0000-000000000000"
    assert main(["server", "--dev", "erase-patient", unknown, "--reason", "legal_order"]) == 1
    argv = ["server", "--dev", "erase-patient", patient_id, "--reason", "legal_order"]
    assert main(argv) == 0
    assert f"patient {patient_id} erased" in capsys.readouterr().out
    with dev_session(dev_server) as s:
        patient = s.get(Patient, patient_id)
        assert patient is not None
        assert patient.status == PatientStatus.ERASED
    assert main(argv) == 0  # already erased: nothing to do, not an error
    assert "already erased" in capsys.readouterr().err
    assert main(["server", "--dev", "dispose"]) == 0
    assert "disposed: 0 envelopes" in capsys.readouterr().out


def test_erasure_reaches_envelopes_a_revoked_gateway_relayed(world: World) -> None:
    device = world.enroll(mrn="G-1")
    with world.ctx.sessions() as s:
        revoke_gateway(s, "gw-revoked", actor="admin")
        s.commit()
    before = world.seal(device)
    with world.ctx.sessions() as s:
        [result] = world.ingestor.process(s, "gw-revoked", [before])
    assert result.reason is RejectReason.GATEWAY_REVOKED
    with world.ctx.sessions() as s:  # refused unverified, but attributed to its credential
        row = s.exec(select(Quarantine)).one()
    assert (row.device_id, row.sealed) == (device.device_id, before)
    with world.ctx.sessions() as s:
        report = erase_patient(
            s, world.ctx.keys, device.patient_id, actor="a", reason=ErasureReason.LEGAL_ORDER
        )
        s.commit()
    assert report.quarantined == 1
    assert _count(world, Quarantine) == 0
    # After the erasure, the same path keeps nothing the ingest key could open.
    with world.ctx.sessions() as s:
        world.ingestor.process(s, "gw-revoked", [world.seal(device)])
        assert s.exec(select(Quarantine.sealed)).one() == b""


def test_a_batch_prepared_before_an_erasure_and_committed_after_stores_nothing(
    world: World,
) -> None:
    device = world.enroll(mrn="P-1")
    envelope = world.seal(device)
    with world.ctx.sessions() as s:
        prepared = world.ingestor.prepare(s, GW, [envelope])  # the pipeline's phase 1
    with world.ctx.sessions() as s:
        erase_patient(
            s, world.ctx.keys, device.patient_id, actor="a", reason=ErasureReason.LEGAL_ORDER
        )
        s.commit()
    with world.ctx.sessions() as s:
        [result] = world.ingestor.commit(s, prepared)
    assert (result.status, result.reason) == (AckStatus.REJECTED, RejectReason.NOT_ENROLLED)
    for model in (IngestedEnvelope, Observation):
        assert _count(world, model, patient_id=device.patient_id) == 0
    with world.ctx.sessions() as s:
        assert s.exec(select(Quarantine.sealed)).one() == b""


def test_records_are_logged_at_the_default_log_level(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = world.enroll(mrn="Q-1")
    # The server's default (phd_cli.main: the root logger at WARNING, its handler at any
    # level): INFO lines of other loggers are dropped ...
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    with world.ctx.sessions() as s:
        erase_patient(
            s, world.ctx.keys, device.patient_id, actor="a", reason=ErasureReason.LEGAL_ORDER
        )
        s.commit()
    assert checkpoint_now(world.ctx.sessions, world.ctx.key_provider) is not None
    records = [r.getMessage() for r in caplog.records if r.name == "phd.records"]
    # ... except these two records, the copies outside the database.
    assert records[0] == f"patient {device.patient_id} erased (legal_order)"
    assert records[1].startswith("audit checkpoint seq=")
