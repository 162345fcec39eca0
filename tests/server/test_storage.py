"""Encrypted storage on SQLite and PostgreSQL: schema, field encryption, keys, blind index."""

from __future__ import annotations

import stat
import time
import uuid
from datetime import date
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, select

from hospital_server.db import IntegrityError, SessionFactory, check_database
from hospital_server.fieldcrypt import (
    FieldDecryptError,
    PatientKeys,
    decrypt_text,
    encrypt_text,
)
from hospital_server.keys import (
    KeyFileError,
    KeyUnavailableError,
    LocalKeyFileProvider,
    blind_index,
)
from hospital_server.migrations import current_revision, head_revision
from hospital_server.models import (
    ConsentKind,
    Patient,
    PatientCreate,
    PatientKey,
    new_ids,
)
from hospital_server.patients import (
    DuplicateMrnError,
    consent_history,
    consent_in_force,
    create_patient,
    find_by_mrn,
    read_patient,
    record_consent,
)

ALICE = PatientCreate(
    name="Alice Example", mrn="MRN-0042 77", date_of_birth=date(1950, 3, 1), contact="+44 1234"
)
BOB = PatientCreate(name="Bob Sample", mrn="MRN-0099", date_of_birth=None, contact=None)


def test_migrations_reach_head_and_match_the_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    assert check_database(engine)


def test_patient_round_trip_and_nothing_readable_at_rest(
    sessions: SessionFactory, patient_keys: PatientKeys, engine: Engine
) -> None:
    with sessions() as s:
        pid = create_patient(s, patient_keys, ALICE, actor="admin").id
        s.commit()
    with sessions() as s:
        public = read_patient(s, patient_keys, pid)
    assert (public.name, public.mrn, public.date_of_birth, public.contact) == (
        "Alice Example",
        "MRN-0042 77",
        date(1950, 3, 1),
        "+44 1234",
    )
    # What a stolen database shows: no name, MRN, birth date or contact in any column.
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM patient")).all()
    dump = repr(rows).encode()
    for secret in (b"Alice", b"0042", b"1950", b"1234"):
        assert secret not in dump
    for row in rows:
        for value in row:
            if isinstance(value, bytes | memoryview):
                assert b"Alice" not in bytes(value)


def test_mrn_lookup_through_the_blind_index(
    sessions: SessionFactory, patient_keys: PatientKeys, provider: LocalKeyFileProvider
) -> None:
    with sessions() as s:
        alice = create_patient(s, patient_keys, ALICE, actor="admin").id
        bob = create_patient(s, patient_keys, BOB, actor="admin").id
        s.commit()
    with sessions() as s:
        found = find_by_mrn(s, patient_keys, "mrn-004277")  # case and spaces normalised
        assert found is not None
        assert found.id == alice
        other = find_by_mrn(s, patient_keys, "MRN-0099")
        assert other is not None
        assert other.id == bob
        assert find_by_mrn(s, patient_keys, "MRN-0043") is None
        # The index is keyed: a different key (another site, an attacker) gives other values.
        assert found.mrn_index == blind_index(provider.blind_index_key(), "MRN-004277")
        assert found.mrn_index != blind_index(b"k" * 32, "MRN-004277")
        with pytest.raises(DuplicateMrnError):
            create_patient(s, patient_keys, ALICE.model_copy(update={"name": "X"}), actor="a")


def test_ciphertext_moved_to_another_patient_or_column_does_not_decrypt(
    sessions: SessionFactory, patient_keys: PatientKeys
) -> None:
    with sessions() as s:
        alice = create_patient(s, patient_keys, ALICE, actor="admin").id
        bob = create_patient(s, patient_keys, BOB, actor="admin").id
        s.commit()
    with sessions() as s:
        a = s.get(Patient, alice)
        b = s.get(Patient, bob)
        assert a is not None
        assert b is not None
        stolen_name = a.name_ct
        # Attack 1: copy Alice's name ciphertext onto Bob's row.
        b.name_ct = stolen_name
        # Attack 2: swap Alice's name into her own MRN column (same row, other column).
        a.mrn_ct = stolen_name
        s.add_all([a, b])
        s.commit()
    with sessions() as s, pytest.raises(FieldDecryptError):
        read_patient(s, patient_keys, bob)
    with sessions() as s, pytest.raises(FieldDecryptError):
        read_patient(s, patient_keys, alice)


def test_same_key_other_row_or_tampered_blob_is_refused() -> None:
    key = bytes(range(32))
    blob = encrypt_text(
        key, "120", table="observation", column="value", row_id="r1", patient_id="p"
    )
    assert decrypt_text(key, blob, table="observation", column="value", row_id="r1", patient_id="p")
    for row_id, patient in (("r2", "p"), ("r1", "q")):
        with pytest.raises(FieldDecryptError):
            decrypt_text(
                key, blob, table="observation", column="value", row_id=row_id, patient_id=patient
            )
    for i in range(len(blob)):
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        with pytest.raises(FieldDecryptError):
            decrypt_text(
                key,
                bytes(flipped),
                table="observation",
                column="value",
                row_id="r1",
                patient_id="p",
            )


def test_wrapped_key_moved_to_another_patient_does_not_unwrap(
    sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    writer = PatientKeys(provider)
    with sessions() as s:
        alice = create_patient(s, writer, ALICE, actor="admin").id
        bob = create_patient(s, writer, BOB, actor="admin").id
        s.commit()
    with sessions() as s:
        ka = s.get(PatientKey, alice)
        kb = s.get(PatientKey, bob)
        assert ka is not None
        assert kb is not None
        kb.wrapped = ka.wrapped
        s.add(kb)
        s.commit()
    reader = PatientKeys(provider)  # fresh cache: must unwrap from the database
    with sessions() as s, pytest.raises(KeyUnavailableError):
        read_patient(s, reader, bob)


def test_crypto_shredding_makes_records_unreadable(
    sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    keys = PatientKeys(provider)
    with sessions() as s:
        alice = create_patient(s, keys, ALICE, actor="admin").id
        s.commit()
    with sessions() as s:
        keys.destroy(s, alice)
        s.commit()
    with sessions() as s, pytest.raises(KeyUnavailableError):
        read_patient(s, PatientKeys(provider), alice)


def test_consent_history_newest_row_wins(
    sessions: SessionFactory, patient_keys: PatientKeys
) -> None:
    with sessions() as s:
        pid = create_patient(s, patient_keys, ALICE, actor="admin").id
        assert not consent_in_force(s, pid, ConsentKind.COLLECTION)
        record_consent(s, pid, ConsentKind.COLLECTION, granted=True, actor="admin")
        record_consent(s, pid, ConsentKind.AI_RESEARCH, granted=True, actor="admin")
        record_consent(s, pid, ConsentKind.AI_RESEARCH, granted=False, actor="admin")
        s.commit()
    with sessions() as s:
        assert consent_in_force(s, pid, ConsentKind.COLLECTION)
        assert not consent_in_force(s, pid, ConsentKind.AI_RESEARCH)
        assert [(c.kind, c.granted) for c in consent_history(s, pid)] == [
            ("collection", True),
            ("ai_research", True),
            ("ai_research", False),
        ]


def test_unique_mrn_index_is_enforced_by_the_database(
    sessions: SessionFactory, patient_keys: PatientKeys
) -> None:
    with sessions() as s:
        p = create_patient(s, patient_keys, ALICE, actor="admin")
        s.commit()
        index = p.mrn_index
    with sessions() as s:
        s.add(
            Patient(
                id="x" * 36,
                status="active",
                mrn_index=index,
                name_ct=b"\x01",
                mrn_ct=b"\x01",
                created_at=p.created_at,
            )
        )
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        assert len(list(s.exec(select(Patient)))) == 1


# ---------------------------------------------------------------- key file (no database)


def test_key_file_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    LocalKeyFileProvider.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError):
        LocalKeyFileProvider.create(path)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    LocalKeyFileProvider.create(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        LocalKeyFileProvider.load(path)


@pytest.mark.parametrize(
    "content", ["", "{}", '{"version": 1}', '{"version": 1, "current": "a", "keks": {"a": "zz"}}']
)
def test_malformed_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        LocalKeyFileProvider.load(path)


def test_missing_key_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="init-keys"):
        LocalKeyFileProvider.load(tmp_path / "absent.json")


def test_provider_repr_shows_ids_not_keys(key_file: Path) -> None:
    provider = LocalKeyFileProvider.load(key_file)
    assert provider.current_kek_id in repr(provider)
    assert provider.blind_index_key().hex() not in repr(provider)


def test_sqlite_commits_are_durable_against_power_loss(tmp_path: Path) -> None:
    # The hospital acks right after a commit and the gateway then deletes its copy, so a
    # committed transaction must reach the disk: WAL with synchronous=FULL (2), not NORMAL.
    from hospital_server.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
        # statement journals (one per multi-row INSERT at ingest) kept off the disk
        assert conn.execute(text("PRAGMA temp_store")).scalar() == 2
    engine.dispose()


def test_ingest_row_ids_are_time_ordered_uuid7_and_unique() -> None:
    before = time.time_ns() // 1_000_000
    first = new_ids(200)
    time.sleep(0.002)
    later = new_ids(3)
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in first + later]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(first + later)) == 203  # 74 random bits each
    stamps = [int.from_bytes(u.bytes[:6], "big") for u in parsed]
    assert all(before <= s <= after for s in stamps)
    # the point of version 7: a later batch sorts after an earlier one (appends to the index)
    assert max(first) < min(later)
