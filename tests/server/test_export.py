"""Pseudonymised research exports, on both backends: only consenting patients, no identifier
reaches the file (a validator seeded with known synthetic identifiers), k-anonymity, date
profiles, signed manifest, expiry and destruction."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import select

from hospital_server.auditlog import verify
from hospital_server.clinical import RecordIntegrityError
from hospital_server.keys import KeyUnavailableError
from hospital_server.models import (
    ConsentKind,
    Credential,
    IngestedEnvelope,
    ResearchExport,
    table_of,
)
from hospital_server.patients import record_consent
from hospital_server.research import (
    COLUMNS,
    DateProfile,
    ExportError,
    ExportResult,
    create_project,
    destroy_export,
    expire,
    leaks,
    manifest_message,
    run_export,
    verify_manifest,
)
from hospital_server.signing_keys import EXPORT_KEYS, SigningKeyStore
from phd_cli.main import main
from phd_protocol import crypto, mdc
from phd_protocol.wire import AckStatus
from tests.server.conftest import audit_entries
from tests.server.ingest_world import World, bp

GW = "gw-1"
MEASURED = [datetime(2026, 10, 3, 7, 30, tzinfo=UTC), datetime(2026, 10, 5, 19, 45, tzinfo=UTC)]


def _person(world: World, n: int, *, born: date, research: bool = True) -> dict[str, Any]:
    """A patient with synthetic identifiers (the ground truth), two readings, consent."""
    person = {
        "name": f"Zebulon Quartermaine-{n:02d}",
        "mrn": f"MRN-77{n:04d}",
        "born": born.isoformat(),
        "contact": f"zq{n:02d}@example.org, 221B Baker Street",
        "serial": f"SER-ZQ-{n:04d}",
    }
    device = world.enroll(
        mrn=person["mrn"],
        name=person["name"],
        born=born,
        contact=person["contact"],
        serial=person["serial"],
    )
    with world.ctx.sessions() as s:
        if research:
            record_consent(s, device.patient_id, ConsentKind.AI_RESEARCH, granted=True, actor="a")
            s.commit()
        envelopes = [world.seal(device, [bp(device, str(120 + n), at=at)]) for at in MEASURED]
        results = world.ingestor.process(s, GW, envelopes)
        cred = s.exec(select(Credential).where(Credential.device_id == device.device_id)).one()
    assert [r.status for r in results] == [AckStatus.STORED] * 2
    return {
        **person,
        "patient_id": device.patient_id,
        "device_id": device.device_id,
        "kid": cred.kid,
        "cert_serial": cred.serial,
    }


def _project(
    world: World, profile: DateProfile, *, name: str = "Hypertension ML", k: int = 3
) -> str:
    with world.ctx.sessions() as s:
        project = create_project(
            s,
            world.ctx.key_provider,
            name=name,
            purpose="Blood pressure trend model",
            approval_ref="IRB-2026-041",
            date_profile=profile,
            k=k,
            expires_at=datetime.now(UTC) + timedelta(days=90),
            actor="admin-1",
        )
        s.commit()
        return project.id


def _export(
    world: World, project: str, out: Path, *, actor: str = "a", now: datetime | None = None
) -> ExportResult:
    return run_export(
        world.ctx.sessions,
        world.ctx.keys,
        world.ctx.key_provider,
        project,
        out_dir=out,
        actor=actor,
        now=now,
    )


def _read(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_export_holds_consenting_patients_and_no_identifier(world: World, tmp_path: Path) -> None:
    people = [_person(world, n, born=date(1950 + n % 3, 3, 14)) for n in range(4)]
    outlier = _person(world, 10, born=date(1990, 6, 1))  # alone in its age band: suppressed
    refuser = _person(world, 11, born=date(1951, 1, 1), research=False)
    project = _project(world, DateProfile.SAFE_HARBOR)

    result = _export(world, project, tmp_path / "out", actor="admin-1")
    assert (result.patients, result.suppressed_patients) == (4, 1)
    assert result.rows == 4 * 2 * 2  # four patients, two readings, two components each
    rows = _read(result.csv_path)
    assert tuple(rows[0]) == COLUMNS[DateProfile.SAFE_HARBOR]
    assert len({r["pseudonym"] for r in rows}) == 4
    assert all(len(r["pseudonym"]) == 32 for r in rows)
    assert {r["age_band"] for r in rows} == {"70-79"}
    assert {r["year"] for r in rows} == {"2026"}
    assert sorted({r["day_offset"] for r in rows}) == ["0", "2"]
    systolic, diastolic = mdc.PRESS_BLD_NONINV_SYS.code, mdc.PRESS_BLD_NONINV_DIA.code
    assert {r["component_mdc"] for r in rows} == {str(systolic), str(diastolic)}
    assert oct(result.csv_path.stat().st_mode & 0o777) == "0o600"

    # The validator: every synthetic identifier of every patient, consenting or not, plus
    # every internal id and the exact measurement dates, searched in the files.
    everyone = [*people, outlier, refuser]
    ground_truth = {
        kind: [p[kind] for p in everyone]
        for kind in ("name", "mrn", "born", "contact", "serial", "patient_id", "device_id")
    }
    ground_truth |= {"kid": [p["kid"] for p in everyone], "measured": ["2026-10-03", "2026-10-05"]}
    ground_truth["cert_serial"] = [p["cert_serial"] for p in everyone]
    files = result.csv_path.read_bytes() + result.manifest_path.read_bytes()
    assert leaks(files, ground_truth) == []
    # ... and the validator does find what it is told to look for.
    assert leaks(b"x,Zebulon Quartermaine-02,14/03/1952", ground_truth) == ["name", "born"]

    signed = json.loads(result.manifest_path.read_text())
    manifest = signed["manifest"]
    assert manifest["csv_sha256"] == hashlib.sha256(result.csv_path.read_bytes()).hexdigest()
    assert (manifest["patients"], manifest["suppressed_patients"]) == (4, 1)
    with world.ctx.sessions() as s:
        public = EXPORT_KEYS.vouched(s, world.ctx.key_provider)[signed["kid"]]
    signature = base64.b64decode(signed["signature"])
    crypto.verify(public, signature, manifest_message(manifest, signed["kid"]))
    with pytest.raises(crypto.CryptoError):
        crypto.verify(public, signature, manifest_message({**manifest, "rows": 1}, signed["kid"]))

    assert verify_manifest(world.ctx.sessions, world.ctx.key_provider, result.manifest_path) is None
    result.csv_path.write_bytes(result.csv_path.read_bytes() + b"extra,row\n")
    problem = verify_manifest(world.ctx.sessions, world.ctx.key_provider, result.manifest_path)
    assert problem == "CSV differs from the manifest"

    [created] = audit_entries(world.ctx, "export.created")
    assert created == {
        "actor": "admin-1",
        "subject": result.export_id,
        "project": project,
        "rows": 16,
        "patients": 4,
        "suppressed": 1,
    }
    assert verify(world.ctx.sessions, world.ctx.key_provider).intact


def test_shifted_dates_keep_intervals_and_pseudonyms_differ_per_project(
    world: World, tmp_path: Path
) -> None:
    for n in range(3):
        _person(world, n, born=date(1980, 1, 1))
    first = _project(world, DateProfile.SHIFTED, name="Shifted A")
    second = _project(world, DateProfile.SHIFTED, name="Shifted B")
    exports = [_export(world, project, tmp_path) for project in (first, second)]
    rows = [_read(e.csv_path) for e in exports]
    assert tuple(rows[0][0]) == COLUMNS[DateProfile.SHIFTED]
    starts = []
    for row_set in rows:
        by_patient: dict[str, set[datetime]] = {}
        for r in row_set:
            by_patient.setdefault(r["pseudonym"], set()).add(
                datetime.fromisoformat(r["measured_at_shifted"])
            )
        for times in by_patient.values():
            early, late = sorted(times)
            assert late - early == MEASURED[1] - MEASURED[0]  # the interval survives
            assert abs(early - MEASURED[0]) <= timedelta(days=365)
            starts.append(early)
    # Each patient's shift is one of 731 days: six all zero would be a broken shift.
    assert len(starts) == 6
    assert set(starts) != {MEASURED[0]}
    assert not {r["pseudonym"] for r in rows[0]} & {r["pseudonym"] for r in rows[1]}


def test_withdrawn_consent_removes_the_patient_from_later_exports(
    world: World, tmp_path: Path
) -> None:
    people = [_person(world, n, born=date(1960, 5, 5)) for n in range(3)]
    project = _project(world, DateProfile.SAFE_HARBOR, k=2)
    with world.ctx.sessions() as s:
        record_consent(
            s, people[0]["patient_id"], ConsentKind.AI_RESEARCH, granted=False, actor="a"
        )
        s.commit()
    result = _export(world, project, tmp_path)
    assert (result.patients, result.rows) == (2, 8)


def test_expiry_destroys_exports_and_refuses_new_ones(world: World, tmp_path: Path) -> None:
    for n in range(2):
        _person(world, n, born=date(1970, 2, 2))
    project = _project(world, DateProfile.SAFE_HARBOR, k=2)
    result = _export(world, project, tmp_path)
    later = datetime.now(UTC) + timedelta(days=91)
    with pytest.raises(ExportError, match="project_expired"):
        _export(world, project, tmp_path, now=later)
    assert expire(world.ctx.sessions, actor="retention", now=datetime.now(UTC)) == 0
    assert expire(world.ctx.sessions, actor="retention", now=later) == 1
    assert not result.csv_path.exists()
    assert not result.manifest_path.exists()
    with world.ctx.sessions() as s:
        row = s.get(ResearchExport, result.export_id)
        assert row is not None
        assert row.destroyed_at is not None
        assert destroy_export(s, result.export_id, actor="a") is False  # once only
    [destroyed] = audit_entries(world.ctx, "export.destroyed")
    assert (destroyed["subject"], destroyed["project"]) == (result.export_id, project)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"k": 1}, "bad_k"),
        ({"name": "../etc"}, "bad_name"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "bad_expiry"),
        ({"expires_at": datetime.now(UTC) + timedelta(days=3000)}, "bad_expiry"),
        ({"approval_ref": ""}, "bad_purpose_or_approval"),
    ],
)
def test_project_bounds(world: World, change: dict[str, Any], reason: str) -> None:
    args: dict[str, Any] = {
        "name": "P",
        "purpose": "p",
        "approval_ref": "IRB-1",
        "date_profile": DateProfile.SAFE_HARBOR,
        "k": 5,
        "expires_at": datetime.now(UTC) + timedelta(days=30),
        "actor": "a",
    }
    with world.ctx.sessions() as s, pytest.raises(ExportError, match=reason):
        create_project(s, world.ctx.key_provider, **(args | change))


def test_export_commands(dev_server: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create = ["export", "--dev", "project-create", "--name", "CLI project", "--purpose", "p"]
    create += ["--approval", "IRB-9", "--profile", "shifted", "--expires-days", "30"]
    assert main([*create[:-1], "0"]) == 2  # expiry out of bounds
    assert main(create) == 0
    project_id = capsys.readouterr().out.split()[1]
    assert main(create) == 1  # the same name again
    assert "duplicate_name" in capsys.readouterr().err
    out = dev_server / "exports"
    assert main(["export", "--dev", "run", project_id, "--out", str(out)]) == 0
    assert "0 rows of 0 patients" in capsys.readouterr().out
    [manifest] = out.glob("*.manifest.json")
    assert main(["export", "--dev", "verify", str(manifest)]) == 0
    export_id = manifest.name.split(".")[0]
    (out / f"{export_id}.csv").write_text("pseudonym\nforged\n")
    assert main(["export", "--dev", "verify", str(manifest)]) == 1
    assert "CSV differs" in capsys.readouterr().out
    assert main(["export", "--dev", "destroy", export_id]) == 0
    assert list(out.iterdir()) == []
    assert main(["export", "--dev", "expire"]) == 0
    assert "destroyed 0 expired exports" in capsys.readouterr().out


def test_a_failed_export_leaves_no_file(world: World, tmp_path: Path) -> None:
    for n in range(2):
        _person(world, n, born=date(1970, 2, 2))
    project = _project(world, DateProfile.SAFE_HARBOR, k=2)
    with world.ctx.sessions() as s:  # one stored record damaged: its MAC check fails
        s.connection().execute(update(table_of(IngestedEnvelope)).values(signed_ct=b"\x00" * 64))
        s.commit()
    with pytest.raises(RecordIntegrityError):
        _export(world, project, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    assert audit_entries(world.ctx, "export.created") == []


def test_destruction_never_writes_through_a_planted_name(world: World, tmp_path: Path) -> None:
    for n in range(2):
        _person(world, n, born=date(1970, 2, 2))
    project = _project(world, DateProfile.SAFE_HARBOR, k=2)
    precious = tmp_path / "server-keys.json"
    precious.write_text("the key file")
    hard, soft = (_export(world, project, tmp_path / d) for d in ("hard", "soft"))
    hard.csv_path.unlink()
    hard.csv_path.hardlink_to(precious)  # someone with access to the export directory
    soft.csv_path.unlink()
    soft.csv_path.symlink_to(precious)
    with world.ctx.sessions() as s:
        assert destroy_export(s, hard.export_id, actor="a")
        assert destroy_export(s, soft.export_id, actor="a")
        s.commit()
    assert precious.read_text() == "the key file"  # unlinked, never overwritten
    assert not hard.csv_path.exists()
    assert not soft.csv_path.is_symlink()
    # A row pointed at another file is refused outright.
    again = _export(world, project, tmp_path / "third")
    with world.ctx.sessions() as s:
        row = s.get(ResearchExport, again.export_id)
        assert row is not None
        row.path = str(precious)
        s.add(row)
        s.commit()
        with pytest.raises(ExportError, match="export_path_changed"):
            destroy_export(s, again.export_id, actor="a")
    assert precious.read_text() == "the key file"


def test_an_export_that_fails_after_writing_leaves_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(2):
        _person(world, n, born=date(1970, 2, 2))
    project = _project(world, DateProfile.SAFE_HARBOR, k=2)

    def unavailable(*_args: object, **_kwargs: object) -> tuple[str, bytes]:
        raise KeyUnavailableError("the key service is down")

    monkeypatch.setattr(SigningKeyStore, "sign", unavailable)  # after the CSV is written
    with pytest.raises(KeyUnavailableError):
        _export(world, project, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    with world.ctx.sessions() as s:
        assert s.exec(select(ResearchExport)).first() is None


def test_an_export_directory_others_may_write_is_refused(world: World, tmp_path: Path) -> None:
    _person(world, 0, born=date(1970, 2, 2))
    project = _project(world, DateProfile.SAFE_HARBOR, k=2)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ExportError, match="unsafe_directory"):
        _export(world, project, shared)
    assert list(shared.iterdir()) == []
