"""KEK life cycle: rotate, re-wrap every stored secret, retire; on SQLite and PostgreSQL.

Attacks and accidents: a tampered wrap, a KEK missing from the key file, a re-issue racing
the re-wrap, a retire while something is still wrapped, a key file swapped for another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from hospital_server.auditlog import checkpoint, verify
from hospital_server.auth.tokens import current_signing_key, signing_key_context
from hospital_server.db import SessionFactory, make_engine, make_session_factory
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.kek import rewrap, usage
from hospital_server.keys import (
    KeyFileError,
    KeyManagementError,
    LocalKeyFileProvider,
    WrappedKey,
)
from hospital_server.models import (
    AuditEvent,
    PatientCreate,
    PatientKey,
    StaffUser,
    TokenSigningKey,
    utcnow,
)
from hospital_server.patients import create_patient, read_patient
from hospital_server.research import DateProfile, create_project
from hospital_server.signing_keys import EXPORT_KEYS
from hospital_server.staff import create_staff_user, provision_totp, totp_secret
from phd_cli.main import main
from tests.pg_fixtures import PostgresServer, fresh_database
from tests.server.conftest import dev_session

_EVERY_KIND = {
    "patient keys": 2,
    "TOTP secrets": 1,
    "token keys": 1,
    "audit keys": 1,
    "export keys": 1,
    "research keys": 1,
}


def _populate(sessions: SessionFactory, provider: LocalKeyFileProvider) -> dict[str, Any]:
    """Two patients, a staff user with TOTP, a token signing key, an audit checkpoint (and
    so its signing key), a research project and an export signing key: every wrapped kind."""
    keys = PatientKeys(provider)
    with sessions() as s:
        patients = [
            create_patient(s, keys, PatientCreate(name=f"Kek {n}", mrn=f"K-{n}"), actor="t").id
            for n in range(2)
        ]
        user = create_staff_user(s, "kek-admin", "a long enough password", role="admin", actor="t")
        provision_totp(s, provider, user, actor="t", secret=b"\x07" * 20)
        signing = current_signing_key(s, provider, now=utcnow())
        s.commit()
        assert checkpoint(s, provider) is not None
        create_project(
            s,
            provider,
            name="Kek project",
            purpose="p",
            approval_ref="IRB-1",
            date_profile=DateProfile.SHIFTED,
            k=5,
            expires_at=utcnow() + timedelta(days=30),
            actor="t",
        )
        EXPORT_KEYS.sign(s, provider, lambda kid: kid.encode(), now=utcnow())
        s.commit()
        deks = {pid: keys.get(s, pid) for pid in patients}
        return {"patients": patients, "deks": deks, "user": user.id, "kid": signing.kid}


def _secrets(
    sessions: SessionFactory, provider: LocalKeyFileProvider, world: dict[str, Any]
) -> Any:
    """Every wrapped secret, opened through a fresh provider and cache."""
    keys = PatientKeys(provider)
    with sessions() as s:
        deks = {pid: keys.get(s, pid) for pid in world["patients"]}
        user = s.get(StaffUser, world["user"])
        assert user is not None
        row = s.get(TokenSigningKey, world["kid"])
        assert row is not None
        pem = provider.unwrap(
            WrappedKey(row.kek_id, row.private_wrapped), context=signing_key_context(row.kid)
        )
        return deks, totp_secret(provider, user), pem


def test_rotate_rewrap_retire_keeps_every_secret(
    sessions: SessionFactory, key_file: Path, provider: LocalKeyFileProvider
) -> None:
    world = _populate(sessions, provider)
    before = _secrets(sessions, provider, world)
    old = provider.current_kek_id
    assert usage(sessions) == {old: _EVERY_KIND}

    running = LocalKeyFileProvider.load(key_file)  # a server started before the rotation
    operator = LocalKeyFileProvider.load(key_file)
    new = operator.rotate(key_file)
    assert new != old
    assert running.current_kek_id == new
    with pytest.raises(KeyManagementError):
        operator.retire(key_file, new)  # never the current KEK

    report = rewrap(sessions, operator, batch=1)  # one row per transaction: paging exercised
    assert report.rewrapped == _EVERY_KIND
    assert report.unreadable == []
    assert usage(sessions) == {new: _EVERY_KIND}
    assert rewrap(sessions, operator).total == 0  # nothing left: running it again is a no-op

    # Same secrets, opened by the running server (it never saw the new KEK at start) and by a
    # provider that has only the new KEK once the old one is retired.
    assert _secrets(sessions, running, world) == before
    operator.retire(key_file, old)
    assert old not in json.loads(key_file.read_text())["keks"]
    assert _secrets(sessions, LocalKeyFileProvider.load(key_file), world) == before
    # The checkpoint still verifies: its key opens under the new KEK alone.
    assert verify(sessions, LocalKeyFileProvider.load(key_file)).intact
    with sessions() as s:
        name = read_patient(s, PatientKeys(running), world["patients"][0]).name
    assert name == "Kek 0"


def test_new_keys_after_rotation_are_wrapped_under_the_new_kek(
    sessions: SessionFactory, key_file: Path, provider: LocalKeyFileProvider
) -> None:
    running = LocalKeyFileProvider.load(key_file)
    new = LocalKeyFileProvider.load(key_file).rotate(key_file)
    with sessions() as s:
        p = create_patient(s, PatientKeys(running), PatientCreate(name="N", mrn="N-1"), actor="t")
        s.commit()
        row = s.get(PatientKey, p.id)
        assert row is not None
        assert row.kek_id == new


def test_tampered_wrap_is_reported_and_left_as_it_was(
    sessions: SessionFactory, key_file: Path, provider: LocalKeyFileProvider
) -> None:
    world = _populate(sessions, provider)
    victim = world["patients"][0]
    with sessions() as s:
        row = s.get(PatientKey, victim)
        assert row is not None
        row.wrapped = row.wrapped[:-1] + bytes([row.wrapped[-1] ^ 1])
        tampered = row.wrapped
        s.add(row)
        s.commit()
    old = provider.current_kek_id
    provider.rotate(key_file)
    report = rewrap(sessions, provider)
    assert report.unreadable == [("patient keys", victim, old)]
    assert report.rewrapped["patient keys"] == 1
    with sessions() as s:
        row = s.get(PatientKey, victim)
        assert row is not None
        assert (row.kek_id, row.wrapped) == (old, tampered)
    assert usage(sessions)[old] == {"patient keys": 1}  # so retire refuses (CLI test below)


@pytest.fixture
def pg_sessions(pg_template: PostgresServer) -> Iterator[SessionFactory]:
    engine = make_engine(fresh_database(pg_template, "phd_template"))
    yield make_session_factory(engine)
    engine.dispose()


def test_a_reissue_racing_the_rewrap_wins(
    pg_sessions: SessionFactory, key_file: Path, provider: LocalKeyFileProvider
) -> None:
    # PostgreSQL only: on SQLite the re-wrap's batch holds the write lock from its first read,
    # so a re-issue waits for its commit and cannot land in between.
    sessions = pg_sessions
    world = _populate(sessions, provider)
    provider.rotate(key_file)

    class Racing(LocalKeyFileProvider):
        """Re-issues the user's TOTP secret the moment the re-wrap has read the old one."""

        raced = False

        def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
            secret = super().unwrap(wrapped, context=context)
            if context.startswith(b"totp\x00") and not self.raced:
                Racing.raced = True
                with sessions() as s:
                    user = s.get(StaffUser, world["user"])
                    assert user is not None
                    provision_totp(s, provider, user, actor="t", secret=b"\x09" * 20)
                    s.commit()
            return secret

    report = rewrap(sessions, Racing.load(key_file))
    assert Racing.raced
    assert report.rewrapped["TOTP secrets"] == 0
    with sessions() as s:
        user = s.get(StaffUser, world["user"])
        assert user is not None
        assert totp_secret(provider, user) == b"\x09" * 20  # the re-issue, not the old secret


def test_key_file_swapped_for_another_is_refused(key_file: Path, tmp_path: Path) -> None:
    running = LocalKeyFileProvider.load(key_file)
    other_kek = LocalKeyFileProvider.create(tmp_path / "other.json").current_kek_id
    (tmp_path / "other.json").replace(key_file)
    with pytest.raises(KeyFileError, match="blind-index key changed"):
        running.wrap(b"\x00" * 32, context=b"x")
    with pytest.raises(KeyFileError):  # refused on every use, never adopted
        assert other_kek not in running.kek_ids


def test_key_file_made_readable_by_others_is_refused_on_reload(key_file: Path) -> None:
    running = LocalKeyFileProvider.load(key_file)
    LocalKeyFileProvider.load(key_file).rotate(key_file)
    key_file.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        running.wrap(b"\x00" * 32, context=b"x")


def test_kek_commands(
    dev_server: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path = dev_server
    monkeypatch.setenv("ADMIN_PW", "a long enough password")
    assert main(["server", "--dev", "create-admin", "--password-env", "ADMIN_PW"]) == 0
    key_file = tmp_path / "var/dev/server-keys.json"
    old = LocalKeyFileProvider.load(key_file).current_kek_id
    capsys.readouterr()

    assert main(["server", "--dev", "kek", "status"]) == 0
    assert old in capsys.readouterr().out
    assert main(["server", "--dev", "kek", "retire", old]) == 2  # still wraps the TOTP secret
    assert "still wraps 1 TOTP secrets" in capsys.readouterr().out
    assert main(["server", "--dev", "kek", "rotate"]) == 0
    new = LocalKeyFileProvider.load(key_file).current_kek_id
    assert new != old
    assert main(["server", "--dev", "kek", "rewrap", "--batch", "1"]) == 0
    assert "1 TOTP secrets" in capsys.readouterr().out
    assert main(["server", "--dev", "kek", "retire", new]) == 2  # the current one: refused
    assert main(["server", "--dev", "kek", "retire", old]) == 0
    assert main(["server", "--dev", "kek", "status"]) == 0
    out = capsys.readouterr().out
    assert old not in out.split("removed from")[-1]
    assert new in out
    with pytest.raises(SystemExit):
        main(["server", "--dev", "kek", "rewrap", "--batch", "0"])
    # A row under a KEK the key file no longer has: status says so and fails.
    with dev_session(tmp_path) as s:
        user = s.exec(select(StaffUser)).one()
        user.totp_kek_id = "0123456789abcdef"
        s.add(user)
        s.commit()
        steps = [
            json.loads(e.detail)["step"]
            for e in s.exec(select(AuditEvent).where(AuditEvent.event_type == "key.rotated"))
        ]
    assert steps == ["rotate", "rewrap", "retire"]
    capsys.readouterr()
    assert main(["server", "--dev", "kek", "status"]) == 1
    assert re.search(r"MISSING", capsys.readouterr().out)
