"""The hash-chained audit trail and its signed checkpoints, attacked as someone with write
access to the database (and, where said, without the key file) would, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from hospital_server import audit, auditlog
from hospital_server.auditlog import (
    AuditReport,
    checkpoint,
    checkpoint_loop,
    checkpoint_message,
    checkpoint_now,
    verify,
)
from hospital_server.db import SessionFactory, make_engine, make_session_factory
from hospital_server.keys import KeyUnavailableError, LocalKeyFileProvider
from hospital_server.metrics import ServerMetrics
from hospital_server.migrations import upgrade
from hospital_server.models import AuditCheckpoint, AuditEvent, AuditSigningKey, utcnow
from phd_cli.main import main
from phd_protocol import crypto
from tests.server.conftest import dev_session


def _record(sessions: SessionFactory, count: int, *, actor: str = "t") -> None:
    for n in range(count):
        with sessions() as s:
            audit.record(s, "patient.read", actor=actor, subject=f"p-{n}", n=n)
            s.commit()


def _problems(report: AuditReport) -> list[tuple[str, int]]:
    return [(p.kind, p.seq) for p in report.problems]


def _sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def _rehash_from(engine: Engine, sessions: SessionFactory, seq: int) -> None:
    """What an attacker with database access does to hide an edit: recompute every hash
    from ``seq`` on, and the head."""
    with sessions() as s:
        rows = list(s.exec(select(AuditEvent).order_by(col(AuditEvent.seq))))
    prev = audit.GENESIS
    for row in rows:
        if row.seq >= seq:
            new = audit.entry_hash(
                prev,
                seq=row.seq,
                at=row.at,
                event_type=row.event_type,
                actor=row.actor,
                subject=row.subject,
                detail=row.detail,
            ).hex()
            _sql(engine, "UPDATE audit_event SET chain_hash = :h WHERE seq = :s", h=new, s=row.seq)
            prev = bytes.fromhex(new)
        else:
            prev = bytes.fromhex(row.chain_hash)
    _sql(engine, "UPDATE audit_chain_head SET chain_hash = :h WHERE id = 1", h=prev.hex())


def test_entries_are_chained_in_commit_order_and_verify(
    sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 5)
    with sessions() as s:  # several entries in one transaction: consecutive links
        audit.append(
            s,
            [
                {
                    "at": utcnow(),
                    "event_type": "ingest.rejected",
                    "actor": "ingest",
                    "subject": None,
                    "detail": "{}",
                }
                for _ in range(3)
            ],
        )
        s.commit()
    with sessions() as s:
        seqs = list(s.exec(select(AuditEvent.seq).order_by(col(AuditEvent.id))))
    assert seqs == list(range(1, 9))
    report = verify(sessions, provider)
    assert report.intact, report.problems
    assert (report.entries, report.head_seq, report.checkpoints) == (8, 8, 0)
    assert report.unanchored == 8


def test_rolled_back_entries_leave_no_gap(
    sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 2)
    with sessions() as s:
        audit.record(s, "patient.read", actor="t", subject="gone")
        s.rollback()
    _record(sessions, 1)
    report = verify(sessions, provider)
    assert report.intact, report.problems
    assert report.head_seq == 3


def test_concurrent_writers_never_fork_the_chain(
    sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            _record(sessions, 15, actor=name)
        except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = verify(sessions, provider)
    assert report.intact, report.problems
    assert report.entries == report.head_seq == 60


def test_edited_entry_is_detected(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 6)
    _sql(engine, "UPDATE audit_event SET actor = 'someone-else' WHERE seq = 3")
    assert _problems(verify(sessions, provider)) == [("mismatch", 3)]


def test_deleted_entry_is_detected(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 6)
    _sql(engine, "DELETE FROM audit_event WHERE seq = 4")
    problems = _problems(verify(sessions, provider))
    assert ("gap", 5) in problems
    assert ("mismatch", 5) in problems  # its link names the deleted entry's hash


def test_inserted_entry_is_detected(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 4)
    # Make room after seq 2 and insert an entry there with a well-formed but wrong link.
    for seq in (4, 3):
        _sql(engine, "UPDATE audit_event SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
    _sql(
        engine,
        "INSERT INTO audit_event (seq, at, event_type, actor, subject, detail, chain_hash) "
        "VALUES (3, :at, 'auth.login', 'forger', NULL, '{}', :h)",
        at=utcnow().isoformat() if engine.dialect.name == "sqlite" else utcnow(),
        h="00" * 32,
    )
    problems = _problems(verify(sessions, provider))
    assert problems[0] == ("mismatch", 3)
    assert ("mismatch", 4) in problems  # the moved entry no longer follows its link


def test_reordered_entries_are_detected(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 5)
    _sql(engine, "UPDATE audit_event SET seq = -1 WHERE seq = 2")
    _sql(engine, "UPDATE audit_event SET seq = 2 WHERE seq = 3")
    _sql(engine, "UPDATE audit_event SET seq = 3 WHERE seq = -1")
    problems = _problems(verify(sessions, provider))
    assert problems[:2] == [("mismatch", 2), ("mismatch", 3)]


def test_a_rehashed_edit_is_caught_by_the_signed_checkpoint(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 5)
    made = checkpoint_now(sessions, provider)
    assert made is not None
    assert made.seq == 5
    _record(sessions, 2)
    assert verify(sessions, provider).intact
    _sql(engine, "UPDATE audit_event SET subject = 'p-other' WHERE seq = 2")
    _rehash_from(engine, sessions, 2)
    report = verify(sessions, provider)
    # Every link recomputes now; only the checkpoint, which the attacker cannot re-sign
    # without the key file, no longer matches.
    assert _problems(report) == [("checkpoint_mismatch", 5)]


def test_a_checkpoint_from_a_key_the_kek_does_not_vouch_for_is_refused(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 3)
    assert checkpoint_now(sessions, provider) is not None
    _sql(engine, "UPDATE audit_event SET detail = :d WHERE seq = 1", d='{"n":9}')
    _rehash_from(engine, sessions, 1)
    # The attacker's own key, stored as a checkpoint key, and a checkpoint signed with it
    # over the rewritten chain: it has no wrap the KEK opens, so it vouches for nothing.
    forger = crypto.generate_signing_key()
    with sessions() as s:
        head = s.exec(select(AuditEvent).where(AuditEvent.seq == 3)).one()
    at = utcnow()
    _sql(engine, "DELETE FROM audit_checkpoint")
    with sessions() as s:
        s.add(
            AuditSigningKey(
                kid="forged",
                public_pem=crypto.public_key_pem(forger.public_key()),
                private_wrapped=b"\x00" * 64,
                kek_id=provider.current_kek_id,
                created_at=at,
            )
        )
        s.add(
            AuditCheckpoint(
                seq=3,
                chain_hash=head.chain_hash,
                at=at,
                kid="forged",
                signature=crypto.sign(forger, checkpoint_message(3, head.chain_hash, at, "forged")),
            )
        )
        s.commit()
    assert _problems(verify(sessions, provider)) == [("checkpoint_invalid", 3)]


def test_a_tampered_checkpoint_signature_is_refused(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 3)
    assert checkpoint_now(sessions, provider) is not None
    _sql(engine, "UPDATE audit_checkpoint SET seq = 2")  # claims an earlier head
    assert _problems(verify(sessions, provider)) == [("checkpoint_invalid", 2)]


def test_truncation_below_a_checkpoint_or_the_head_is_detected(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 6)
    assert checkpoint_now(sessions, provider) is not None
    _sql(engine, "DELETE FROM audit_event WHERE seq > 4")
    problems = _problems(verify(sessions, provider))
    assert ("truncated", 4) in problems
    # Even with the head moved back too, the signed checkpoint at 6 still names the end.
    with sessions() as s:
        last = s.exec(select(AuditEvent).where(AuditEvent.seq == 4)).one()
    _sql(
        engine,
        "UPDATE audit_chain_head SET seq = 4, chain_hash = :h WHERE id = 1",
        h=last.chain_hash,
    )
    assert _problems(verify(sessions, provider)) == [("truncated", 4)]


def test_checkpoint_only_when_entries_were_added(
    sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    assert checkpoint_now(sessions, provider) is None  # an empty chain
    _record(sessions, 1)
    assert checkpoint_now(sessions, provider) is not None
    assert checkpoint_now(sessions, provider) is None
    _record(sessions, 1)
    second = checkpoint_now(sessions, provider)
    assert second is not None
    assert second.seq == 2
    with sessions() as s:
        assert checkpoint(s, provider) is None
        kids = set(s.exec(select(AuditCheckpoint.kid)))
    assert len(kids) == 1  # one key, made once


def test_migration_chains_entries_written_before_it(tmp_path: Path, key_file: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            for n in range(3):
                conn.execute(
                    text(
                        "INSERT INTO audit_event (at, event_type, actor, subject, detail) "
                        "VALUES (:at, 'auth.login', :actor, NULL, '{}')"
                    ),
                    {"at": utcnow().isoformat(), "actor": f"u{n}"},
                )
        upgrade(engine)
        sessions = make_session_factory(engine)
        _record(sessions, 1)
        report = verify(sessions, LocalKeyFileProvider.load(key_file))
        assert report.intact, report.problems
        with sessions() as s:
            actors = list(s.exec(select(AuditEvent.actor).order_by(col(AuditEvent.seq))))
        assert actors == ["u0", "u1", "u2", "t"]
    finally:
        engine.dispose()


def test_audit_commands(dev_server: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--dev", "checkpoint"]) == 0
    assert '"checkpoint": null' in capsys.readouterr().out  # nothing audited yet
    with dev_session(dev_server) as s:
        audit.record(s, "patient.read", actor="t", subject="p-1")
        audit.record(s, "patient.read", actor="t", subject="p-2")
        s.commit()
    assert main(["audit", "--dev", "checkpoint"]) == 0
    assert '"seq": 2' in capsys.readouterr().out
    assert main(["audit", "--dev", "verify"]) == 0
    out = capsys.readouterr().out
    assert "audit chain intact" in out
    assert "checkpoints: 1 (newest at seq 2; 0 entries after it)" in out
    with dev_session(dev_server) as s:
        s.connection().execute(text("UPDATE audit_event SET actor = 'x' WHERE seq = 1"))
        s.commit()
    assert main(["audit", "--dev", "verify"]) == 1
    out = capsys.readouterr().out
    assert "mismatch at seq 1" in out
    assert "'x'" not in out  # seqs and kinds, never an entry's content


def test_a_head_row_that_does_not_name_the_last_entry_is_reported(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 3)
    _sql(engine, "UPDATE audit_chain_head SET chain_hash = :h WHERE id = 1", h="11" * 32)
    assert _problems(verify(sessions, provider)) == [("head_mismatch", 3)]
    _sql(engine, "DELETE FROM audit_chain_head")
    assert _problems(verify(sessions, provider)) == [("head_mismatch", 3)]
    with sessions() as s, pytest.raises(RuntimeError, match="phd server migrate"):
        audit.record(s, "patient.read", actor="t")  # no head: refused, nothing forked


def test_deleted_checkpoints_are_caught_only_by_a_copy_outside_the_database(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 5)
    made = checkpoint_now(sessions, provider)
    assert made is not None
    # Checkpoints deleted, the chain cut back to seq 2 and the head rewound to match:
    _sql(engine, "DELETE FROM audit_checkpoint")
    _sql(engine, "DELETE FROM audit_event WHERE seq > 2")
    with sessions() as s:
        second = s.exec(select(AuditEvent).where(AuditEvent.seq == 2)).one()
    _sql(
        engine,
        "UPDATE audit_chain_head SET seq = 2, chain_hash = :h WHERE id = 1",
        h=second.chain_hash,
    )
    assert verify(sessions, provider).intact  # the database alone cannot tell (docs/audit.md)
    report = verify(sessions, provider, expect={made.seq: made.chain_hash})
    assert _problems(report) == [("truncated", 2)]
    # An anchor the chain reaches with another hash: rewritten.
    report = verify(sessions, provider, expect={2: "00" * 32})
    assert _problems(report) == [("anchor_mismatch", 2)]


def test_bogus_rows_cannot_stop_checkpointing(
    engine: Engine, sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 2)
    future = utcnow() + timedelta(days=365)
    with sessions() as s:  # a checkpoint far beyond the head, and a key from tomorrow
        s.add(AuditCheckpoint(seq=10**12, chain_hash="00" * 32, at=future, kid="x", signature=b""))
        s.add(
            AuditSigningKey(
                kid="planted",
                public_pem=crypto.public_key_pem(crypto.generate_signing_key().public_key()),
                private_wrapped=b"\x00" * 64,
                kek_id=provider.current_kek_id,
                created_at=future,
            )
        )
        s.commit()
    made = checkpoint_now(sessions, provider)
    assert made is not None
    assert made.kid != "planted"
    problems = _problems(verify(sessions, provider))
    assert ("checkpoint_invalid", 10**12) in problems  # and the planted row is reported


def test_verify_reads_the_chain_as_it_stood_at_the_start(
    sessions: SessionFactory, provider: LocalKeyFileProvider
) -> None:
    _record(sessions, 3)
    appended: list[int] = []

    def progress(done: int, total: int) -> None:
        if not appended:  # a server appends while the check runs
            _record(sessions, 1, actor="late")
            appended.append(done)

    report = verify(sessions, provider, progress=progress)
    assert report.intact, report.problems
    assert report.head_seq == 3
    assert verify(sessions, provider).head_seq == 4


def test_verify_takes_anchors_from_the_logged_checkpoints(
    dev_server: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with dev_session(dev_server) as s:
        audit.record(s, "patient.read", actor="t", subject="p-1")
        s.commit()
    assert main(["audit", "--dev", "checkpoint"]) == 0
    made = json.loads(capsys.readouterr().out)["checkpoint"]
    log = dev_server / "server.log"
    log.write_text(f"... audit checkpoint seq={made['seq']} hash={made['chain_hash']} kid=k\n")
    assert main(["audit", "--dev", "verify", "--anchors", str(log)]) == 0
    assert main(["audit", "--dev", "verify", "--expect", f"{made['seq']}:{'0' * 64}"]) == 1
    assert "anchor_mismatch at seq 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # argparse: usage error, exit status 2
        main(["audit", "--dev", "verify", "--expect", "1:xyz"])
    assert refused.value.code == 2


async def test_the_checkpoint_loop_counts_its_rounds(
    sessions: SessionFactory, provider: LocalKeyFileProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(_record, sessions, 2)
    metrics = ServerMetrics()

    def count(result: str) -> float:
        found = metrics.registry.get_sample_value("phd_audit_checkpoints_total", {"result": result})
        return found or 0.0

    async def rounds(n: int) -> None:
        task = asyncio.create_task(checkpoint_loop(sessions, provider, 0.01, metrics))
        for _ in range(1000):  # at most ten seconds
            if sum(count(r) for r in ("signed", "nothing_new", "failed")) >= n:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    await rounds(2)
    assert count("signed") == 1  # then nothing new to sign
    assert count("nothing_new") >= 1

    def broken(*_args: object) -> None:
        raise KeyUnavailableError("the key file is gone")

    monkeypatch.setattr(auditlog, "checkpoint_now", broken)
    await rounds(4)
    assert count("failed") >= 1  # counted (an alert), and the loop carries on
