"""``phd server quarantine`` (list, show, release) on SQLite and PostgreSQL.

Quarantine rows are made by real ingest of real envelopes (tests/server/ingest_world.py); the
CLI runs in process against the same database, key file and PKI, through the environment
(prod profile). Release goes through the real Ingestor again, so a revoked gateway or a forged
signature is refused again. Every command's output is checked for the patient's name, MRN,
reading values and sealed bytes, which must never appear.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from hospital_server import quarantine
from hospital_server.disposal import ErasureReason, erase_patient
from hospital_server.gateways import revoke_gateway
from hospital_server.ingest.process import process_envelope
from hospital_server.models import (
    AuditEvent,
    ConsentKind,
    IngestedEnvelope,
    Observation,
    Quarantine,
    utcnow,
)
from hospital_server.patients import record_consent
from hospital_server.pki.layout import PkiLayout
from hospital_server.settings import Settings
from phd_cli.main import main
from phd_protocol import crypto
from phd_protocol.envelope import DeviceSigner
from phd_protocol.errors import RejectReason
from phd_protocol.wire import AckStatus
from tests.server.conftest import audit_entries
from tests.server.ingest_world import EnrolledDevice, World, bp, temperature

NAME, MRN = "Ottoline Vasquez-Brunhilde", "MRN-QRT-80417"
SYSTOLIC, DIASTOLIC, TEMPERATURE = "164.7", "91.3", "38.64"


@dataclass
class Cli:
    """Runs ``phd server quarantine ...`` and keeps everything it printed."""

    capsys: pytest.CaptureFixture[str]
    printed: list[str] = field(default_factory=list)

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["server", "quarantine", *argv])
        captured = self.capsys.readouterr()
        self.printed += [captured.out, captured.err]
        return code, captured.out, captured.err

    def json(self, *argv: str) -> Any:
        code, out, _ = self(*argv, "--json")
        assert code == 0
        return json.loads(out)

    def assert_no_phi(self, *sealed: bytes) -> None:
        text = "\n".join(self.printed)
        assert text.strip(), "nothing was printed: nothing was checked"
        for secret in (NAME, MRN, SYSTOLIC, DIASTOLIC, TEMPERATURE):
            assert secret not in text, f"output carries {secret!r}"
        for data in sealed:
            assert data, "an empty envelope proves nothing"
            assert data[8:40].hex() not in text, "output carries sealed bytes (hex)"
            assert base64.b64encode(data[9:39]).decode() not in text, "sealed bytes (base64)"


@pytest.fixture
def cli(
    world: World,
    settings: Settings,
    server_pki: PkiLayout,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    for name in [k for k in os.environ if k.startswith("PHD_SERVER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PHD_SERVER_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("PHD_SERVER_KEY_FILE", str(settings.effective_key_file))
    monkeypatch.setenv("PHD_SERVER_PKI_DIR", str(Path(server_pki.root)))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unfolded
    return Cli(capsys)


def _patient(world: World, *, consent: bool, mrn: str = MRN) -> EnrolledDevice:
    return world.enroll(mrn=mrn, name=NAME, consent=consent)


def _readings(device: EnrolledDevice) -> list[dict[str, Any]]:
    return [bp(device, SYSTOLIC, DIASTOLIC), temperature(device, Decimal(TEMPERATURE))]


def _ingest(world: World, envelope: bytes, gateway: str = "gw-1") -> AckStatus:
    with world.ctx.sessions() as s:
        return process_envelope(world.ingestor, s, envelope, gateway).status


def _refused(world: World, device: EnrolledDevice, gateway: str = "gw-1") -> bytes:
    envelope = world.seal(device, _readings(device))
    assert _ingest(world, envelope, gateway) is AckStatus.REJECTED
    return envelope


def _forged(world: World, device: EnrolledDevice) -> bytes:
    real = device.signer
    device.signer = DeviceSigner(
        device_id=device.device_id, kid=real.kid, key=crypto.generate_signing_key()
    )
    try:
        return _refused(world, device, "gw-2")
    finally:
        device.signer = real


def _digest(envelope: bytes) -> str:
    return crypto.sha256(envelope).hex()


def _row(world: World, envelope: bytes) -> Quarantine | None:
    with world.ctx.sessions() as s:
        return s.exec(select(Quarantine).where(Quarantine.digest == _digest(envelope))).first()


def _count(world: World, model: type) -> int:
    with world.ctx.sessions() as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def _consent(world: World, device: EnrolledDevice) -> None:
    with world.ctx.sessions() as s:
        record_consent(s, device.patient_id, ConsentKind.COLLECTION, granted=True, actor="a")
        s.commit()


# ---------------------------------------------------------------- list and show


def test_list_filters_and_per_reason_summary(world: World, cli: Cli) -> None:
    a = _patient(world, consent=False)
    b = _patient(world, consent=True, mrn="MRN-QRT-80418")
    unenrolled = [_refused(world, a), _refused(world, a)]
    forged = _forged(world, b)
    garbage = b"\x00 not an envelope"
    assert _ingest(world, garbage) is AckStatus.REJECTED

    everything = cli.json("list")
    assert everything["total"] == 4
    assert everything["by_reason"] == {"not_enrolled": 2, "bad_signature": 1, "malformed": 1}
    assert [e["digest"] for e in everything["entries"]] == [
        _digest(e) for e in (garbage, forged, *reversed(unenrolled))
    ]  # newest first
    first = everything["entries"][-1]
    assert first["reason"] == "not_enrolled"
    assert first["gateway"] == "gw-1"
    assert first["device"] == a.device_id
    assert first["size"] == len(unenrolled[0])
    assert first["kept"] is True
    assert "sealed" not in first

    only = cli.json("list", "--reason", "not_enrolled")
    assert only["by_reason"] == {"not_enrolled": 2}
    assert {e["digest"] for e in only["entries"]} == {_digest(e) for e in unenrolled}
    device = cli.json("list", "--device", b.device_id)
    assert [e["digest"] for e in device["entries"]] == [_digest(forged)]
    gateway = cli.json("list", "--gateway", "gw-2")
    assert gateway["by_reason"] == {"bad_signature": 1}
    assert cli.json("list", "--since", "1h")["total"] == 4
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert cli.json("list", "--since", tomorrow) == {"total": 0, "by_reason": {}, "entries": []}
    limited = cli.json("list", "--limit", "1")
    assert limited["total"] == 4  # the summary counts every match, not the page
    assert [e["digest"] for e in limited["entries"]] == [_digest(garbage)]

    code, out, _ = cli("list")
    assert code == 0
    for envelope in (*unenrolled, forged, garbage):
        assert _digest(envelope)[:16] in out
        assert _digest(envelope) not in out  # tables show a prefix
    assert "4 of 4" in out
    assert "by reason" in out
    assert a.device_id in out
    with pytest.raises(SystemExit):
        main(["server", "quarantine", "list", "--reason", "not_a_reason"])
    cli.assert_no_phi(*unenrolled, forged)


def test_show_by_prefix_explains_the_reason(world: World, cli: Cli) -> None:
    device = _patient(world, consent=False)
    envelope = _refused(world, device)
    digest = _digest(envelope)

    code, out, _ = cli("show", digest[:8].upper())
    assert code == 0
    assert digest in out
    assert "not_enrolled" in out
    assert quarantine.MEANINGS[RejectReason.NOT_ENROLLED] in out
    assert "collection consent" in out
    assert device.device_id in out
    assert f"{len(envelope)} bytes" in out
    shown = cli.json("show", digest)
    assert shown["digest"] == digest
    assert shown["meaning"] == quarantine.MEANINGS[RejectReason.NOT_ENROLLED]
    assert shown["credential"] == device.signer.kid.hex()
    cli.assert_no_phi(envelope)


def test_show_refuses_unknown_ambiguous_and_malformed_prefixes(world: World, cli: Cli) -> None:
    device = _patient(world, consent=False)
    envelope = _refused(world, device)
    digest = _digest(envelope)
    # A second row sharing the first 10 digits (made directly: a real collision would take
    # billions of envelopes).
    twin = digest[:10] + ("0" if digest[10] != "0" else "1") + digest[11:]
    with world.ctx.sessions() as s:
        s.add(
            Quarantine(
                digest=twin,
                reason="malformed",
                gateway_id="gw-1",
                size=3,
                sealed=b"\x00\x01\x02",
                received_at=utcnow(),
            )
        )
        s.commit()

    code, out, err = cli("show", digest[:8])
    assert (code, out) == (2, "")
    assert "more than one" in err
    assert cli("show", digest[:11])[0] == 0  # one more digit decides
    unknown = "".join("f" if c != "f" else "e" for c in digest[:12])
    code, out, err = cli("show", unknown)
    assert (code, out) == (2, "")
    assert "no quarantined envelope" in err
    for bad in ("abc1234", "not-hex-at-all", MRN):
        code, out, err = cli("show", bad)
        assert (code, out) == (2, "")
        assert "8 to 64 hex digits" in err
        assert bad not in err  # what is not a digest is not echoed
    # Release is as strict: an ambiguous prefix releases nothing and audits nothing.
    code, _, err = cli("release", digest[:8], "--actor", "ops-1")
    assert code == 2
    assert "more than one" in err
    assert _row(world, envelope) is not None
    assert audit_entries(world.ctx, quarantine.EVENT) == []
    cli.assert_no_phi(envelope)


# ---------------------------------------------------------------- release


def test_release_after_consent_stores_once_removes_the_row_and_audits(
    world: World, cli: Cli
) -> None:
    device = _patient(world, consent=False)
    envelope = _refused(world, device)
    digest = _digest(envelope)

    # Still no consent: refused again, stays, and the run is audited all the same.
    code, out, _ = cli("release", digest[:12], "--actor", "ops-1")
    assert code == 1
    assert f"{digest[:16]}  still refused: not_enrolled" in out
    assert "released 0 of 1" in out
    assert _count(world, Quarantine) == 1
    assert _count(world, IngestedEnvelope) == 0

    _consent(world, device)
    code, out, _ = cli("release", digest[:12], "--actor", "ops-1")
    assert code == 0
    assert f"{digest[:16]}  stored: released" in out
    assert "released 1 of 1" in out
    assert _row(world, envelope) is None
    assert _count(world, IngestedEnvelope) == 1
    assert _count(world, Observation) == 2
    events = audit_entries(world.ctx, quarantine.EVENT)
    assert len(events) == 2
    assert events[0]["actor"] == "ops-1"
    assert (events[0]["released"], events[0]["refused"], events[0]["stored"]) == ([], 1, 0)
    assert events[1]["released"] == [digest[:32]]
    assert (events[1]["stored"], events[1]["refused"], events[1]["by"]) == (1, 0, "digest")

    # Again: a clear no-op (nothing ingested, nothing audited), and the gateway's own
    # redelivery of the envelope is now a duplicate.
    code, out, _ = cli("release", digest, "--actor", "ops-1")
    assert code == 0
    assert "not in quarantine" in out
    assert "nothing to release" in out
    assert len(audit_entries(world.ctx, quarantine.EVENT)) == 2
    assert _count(world, IngestedEnvelope) == 1
    assert _ingest(world, envelope) is AckStatus.DUPLICATE
    assert _count(world, Quarantine) == 0

    with world.ctx.sessions() as s:
        details = [e.detail for e in s.exec(select(AuditEvent))]
    assert not any(NAME in d or MRN in d or SYSTOLIC in d for d in details)
    cli.assert_no_phi(envelope)


def test_release_by_reason_and_device_in_runs_of_the_cap(
    world: World, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _patient(world, consent=False)
    b = _patient(world, consent=False, mrn="MRN-QRT-80419")
    mine = [_refused(world, a) for _ in range(3)]
    theirs = _refused(world, b)
    _consent(world, a)
    monkeypatch.setattr(quarantine, "MAX_RELEASE", 2)

    argv = ("release", "--reason", "not_enrolled", "--device", a.device_id, "--actor", "ops-2")
    code, out, _ = cli(*argv)
    assert code == 0
    assert "released 2 of 2" in out
    assert "1 more match: run again" in out
    assert [_row(world, e) is None for e in mine] == [True, True, False]  # oldest first
    code, out, _ = cli(*argv)
    assert code == 0
    assert "released 1 of 1" in out
    assert "more match" not in out
    assert _count(world, IngestedEnvelope) == 3
    assert _row(world, theirs) is not None  # another device: not selected
    code, out, _ = cli(*argv)
    assert (code, out.strip()) == (0, "nothing to release")

    code, out, _ = cli("release", "--reason", "not_enrolled", "--actor", "ops-2")
    assert code == 1
    assert "still refused: not_enrolled" in out
    events = audit_entries(world.ctx, quarantine.EVENT)
    assert [e["device"] for e in events[:2]] == [a.device_id, a.device_id]
    assert [len(e["released"]) for e in events] == [2, 1, 0]
    assert all(e["reason"] == "not_enrolled" and e["actor"] == "ops-2" for e in events)
    cli.assert_no_phi(*mine, theirs)


def test_release_through_a_since_revoked_gateway_stays_quarantined(world: World, cli: Cli) -> None:
    device = _patient(world, consent=False)
    envelope = _refused(world, device)
    _consent(world, device)
    with world.ctx.sessions() as s:
        revoke_gateway(s, "gw-1", actor="admin")
        s.commit()

    code, out, _ = cli("release", _digest(envelope), "--actor", "ops-1")
    assert code == 1
    assert "still refused: gateway_revoked (was not_enrolled)" in out
    row = _row(world, envelope)
    assert row is not None
    assert row.reason == RejectReason.GATEWAY_REVOKED.value  # the reason it is refused for now
    assert row.sealed == envelope
    assert _count(world, Quarantine) == 1  # the same row, not a second one
    assert _count(world, IngestedEnvelope) == 0
    assert cli.json("list", "--reason", "gateway_revoked")["total"] == 1
    cli.assert_no_phi(envelope)


def test_forged_envelope_stays_quarantined(world: World, cli: Cli) -> None:
    device = _patient(world, consent=True)
    forged = _forged(world, device)
    code, out, _ = cli("release", _digest(forged)[:10], "--actor", "ops-1")
    assert code == 1
    assert "still refused: bad_signature" in out
    assert "(was" not in out
    row = _row(world, forged)
    assert row is not None
    assert row.reason == "bad_signature"
    assert _count(world, IngestedEnvelope) == 0
    assert audit_entries(world.ctx, quarantine.EVENT)[0]["refused"] == 1
    cli.assert_no_phi(forged)


def test_erased_patients_row_cannot_be_released(world: World, cli: Cli) -> None:
    device = _patient(world, consent=True)
    late = world.seal(device, _readings(device), ts=datetime.now(UTC) - timedelta(minutes=1))
    with world.ctx.sessions() as s:
        erase_patient(
            s, world.ctx.keys, device.patient_id, actor="admin", reason=ErasureReason.LEGAL_ORDER
        )
        s.commit()
    assert _ingest(world, late) is AckStatus.REJECTED
    row = _row(world, late)
    assert row is not None
    assert row.sealed == b""

    (entry,) = cli.json("list")["entries"]
    assert (entry["kept"], entry["size"]) == (False, 0)
    code, out, _ = cli("show", _digest(late)[:8])
    assert code == 0
    assert "not kept" in out
    assert "cannot be released" in out
    code, out, _ = cli("release", _digest(late), "--actor", "ops-1")
    assert code == 1
    assert "cannot be released: its sealed bytes were not kept (patient erased)" in out
    assert _row(world, late) is not None
    assert audit_entries(world.ctx, quarantine.EVENT)[0]["not_kept"] == 1
    cli.assert_no_phi(late)


def test_release_refuses_bad_arguments_before_touching_anything(world: World, cli: Cli) -> None:
    device = _patient(world, consent=True)
    envelope = _forged(world, device)
    digest = _digest(envelope)
    for argv in (
        ("release", "--actor", "ops-1"),  # neither digests nor --reason
        ("release", digest, "--reason", "bad_signature", "--actor", "ops-1"),  # both
        ("release", digest, "--device", device.device_id, "--actor", "ops-1"),
        ("release", digest, "--actor", NAME),  # an actor is an id, not a name with spaces
    ):
        code, out, err = cli(*argv)
        assert (code, out) == (2, ""), argv
        assert "error" in err
    with pytest.raises(SystemExit):
        main(["server", "quarantine", "release", digest])  # --actor is required
    assert audit_entries(world.ctx, quarantine.EVENT) == []
    assert _row(world, envelope) is not None
    cli.assert_no_phi(envelope)


def test_every_public_reason_has_a_documented_meaning() -> None:
    assert set(quarantine.MEANINGS) == set(RejectReason)
    assert all(meaning.strip() for meaning in quarantine.MEANINGS.values())


def test_release_caps_a_run_and_names_its_actor_as_an_id(world: World) -> None:
    with world.ctx.sessions() as s:
        with pytest.raises(ValueError, match="actor"):
            quarantine.release(s, world.ingestor, [], actor="Dr Who", selection={})
        with pytest.raises(ValueError, match="envelopes per run"):
            quarantine.release(s, world.ingestor, [], actor="ops-1", selection={})
