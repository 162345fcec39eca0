"""Signed checkpoints of the audit chain, and its verification (``phd audit``).

The chain (:mod:`hospital_server.audit`) shows any edited, deleted, inserted or reordered
entry to anyone who recomputes it, *unless* the editor recomputed every later hash too, which
anyone with write access to the database can. A checkpoint closes that: it is the chain's
(seq, hash) at some moment, signed with an Ed25519 key that is stored wrapped by the KEK
(``audit_signing_key``, bound to its kid), so forging one needs the key file as well as the
database. :func:`verify` then recomputes every link and checks:

    problem              what it means
    -------------------  ---------------------------------------------------------------
    gap                  entries missing (deleted) before the seq given
    mismatch             the entry at seq differs from what the chain says (edited, moved,
                         inserted, or an earlier entry was edited and the rest re-hashed)
    checkpoint_mismatch  the chain at a checkpoint's seq no longer has the signed hash
    checkpoint_invalid   a checkpoint's signature does not verify, or its key is not one
                         the KEK vouches for
    truncated            the chain ends before a checkpoint's seq, or before its head row
    head_mismatch        the head row does not name the last entry

Entries after the newest checkpoint are covered by the chain alone: someone who can write to
the database could remove or re-hash that tail unseen. Checkpoints are therefore taken often
(the server every ``audit_checkpoint_seconds``, and ``phd audit checkpoint`` for cron), and
each is also logged (seq and hash: no content), so a copy outside the database bounds what a
database-only attacker can rewrite. Reports carry seqs, hashes, kids and counts only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from hospital_server.audit import GENESIS, RECORDS, entry_hash
from hospital_server.db import SessionFactory
from hospital_server.keys import KeyProvider
from hospital_server.metrics import ServerMetrics
from hospital_server.models import (
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    utcnow,
)
from hospital_server.signing_keys import AUDIT_KEYS
from phd_protocol import cbor, crypto

__all__ = [
    "AuditReport",
    "Checkpoint",
    "Problem",
    "checkpoint",
    "checkpoint_loop",
    "checkpoint_message",
    "checkpoint_now",
    "verify",
]

log = logging.getLogger(__name__)

_DOMAIN = "phd-audit-checkpoint-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PAGE = 2000  # entries per read while verifying
MAX_PROBLEMS = 50  # a report lists at most this many (the count goes on)


def checkpoint_message(seq: int, chain_hash: str, at: datetime, kid: str) -> bytes:
    """The bytes a checkpoint signs (deterministic CBOR, domain-separated)."""
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return cbor.encode([_DOMAIN, seq, bytes.fromhex(chain_hash), micros, kid])


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    chain_hash: str
    at: datetime
    kid: str


def checkpoint(
    session: Session, keys: KeyProvider, *, now: datetime | None = None
) -> Checkpoint | None:
    """Sign the chain's head if entries were added since the newest checkpoint (else None).
    Flushes; the caller commits. Logs the checkpoint's seq and hash."""
    head = session.exec(select(AuditChainHead).where(AuditChainHead.id == 1)).one()
    # A checkpoint row beyond the head is not ours (verify reports it): it must not stop
    # checkpointing.
    newest: int | None = session.exec(
        select(func.max(AuditCheckpoint.seq)).where(col(AuditCheckpoint.seq) <= head.seq)
    ).one()
    if head.seq == 0 or (newest is not None and head.seq <= newest):
        return None
    at = now or utcnow()
    kid, signature = AUDIT_KEYS.sign(
        session,
        keys,
        lambda kid: checkpoint_message(head.seq, head.chain_hash, at, kid),
        now=at,
    )
    session.add(
        AuditCheckpoint(
            seq=head.seq, chain_hash=head.chain_hash, at=at, kid=kid, signature=signature
        )
    )
    session.flush()
    RECORDS.info("audit checkpoint seq=%d hash=%s kid=%s", head.seq, head.chain_hash, kid)
    return Checkpoint(head.seq, head.chain_hash, at, kid)


def checkpoint_now(sessions: SessionFactory, keys: KeyProvider) -> Checkpoint | None:
    """:func:`checkpoint` in a transaction of its own, committed."""
    with sessions() as session:
        made = checkpoint(session, keys)
        session.commit()
    return made


async def checkpoint_loop(
    sessions: SessionFactory, keys: KeyProvider, every: float, metrics: ServerMetrics
) -> None:
    """Checkpoint every ``every`` seconds until cancelled (an API server's background task).
    A failure is logged (its type only) and counted in ``phd_audit_checkpoints_total
    {result="failed"}`` (alert on it: docs/OPERATIONS.md), and the next round tries again."""
    while True:
        await asyncio.sleep(every)
        try:
            made = await asyncio.to_thread(checkpoint_now, sessions, keys)
        except Exception as exc:  # noqa: BLE001 -- the server keeps serving; next round retries
            metrics.audit_checkpoints.labels(result="failed").inc()
            name = type(exc).__name__
            log.error("audit checkpoint failed (%s); retrying in %.0f s", name, every)
            continue
        metrics.audit_checkpoints.labels(result="signed" if made else "nothing_new").inc()


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    seq: int
    detail: str = ""


@dataclass(slots=True)
class AuditReport:
    entries: int = 0
    head_seq: int = 0
    checkpoints: int = 0
    newest_checkpoint: int = 0  # seq; 0 if none
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def intact(self) -> bool:
        return self.problem_count == 0

    @property
    def unanchored(self) -> int:
        """Entries after the newest checkpoint (covered by the chain alone)."""
        return max(0, self.head_seq - self.newest_checkpoint)

    def add(self, kind: str, seq: int, detail: str = "") -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(kind, seq, detail))


def verify(
    sessions: SessionFactory,
    keys: KeyProvider,
    *,
    expect: Mapping[int, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Recompute the chain and check every checkpoint; ``progress(done, total)`` per page.

    ``expect``: ``{seq: chain hash}`` kept outside the database (the logged checkpoints):
    the one defence against someone who deleted checkpoint rows and rewrote what followed.
    Entries committed while this runs are left for the next run (the chain is checked up to
    its end as it stood at the start).
    """
    report = AuditReport()
    anchors = dict(expect or {})
    with sessions() as session:
        # The chain's end and its head in one statement: one snapshot on either backend.
        last, head_seq, head_hash = session.connection().execute(_ENDS).one()
        head = None if head_seq is None else (int(head_seq), str(head_hash))
        checkpoints = list(session.exec(select(AuditCheckpoint).order_by(col(AuditCheckpoint.seq))))
        signers = AUDIT_KEYS.vouched(session, keys)
        total = session.exec(select(func.count()).select_from(AuditEvent)).one()
    report.checkpoints = len(checkpoints)
    expected: dict[int, str] = {}
    for cp in checkpoints:
        public = signers.get(cp.kid)
        try:
            if public is None:
                raise crypto.CryptoError
            crypto.verify(
                public, cp.signature, checkpoint_message(cp.seq, cp.chain_hash, cp.at, cp.kid)
            )
        except crypto.CryptoError:
            report.add("checkpoint_invalid", cp.seq, f"kid {cp.kid}")
            continue
        expected[cp.seq] = cp.chain_hash
        report.newest_checkpoint = max(report.newest_checkpoint, cp.seq)

    seq, prev = 0, GENESIS
    for row in _entries(sessions, total, progress, upto=last or 0):
        report.entries += 1
        entry_seq, stored = row[0], row[6]
        if entry_seq != seq + 1:
            if entry_seq > seq + 1:
                report.add("gap", entry_seq, f"{entry_seq - seq - 1} entries missing before it")
            else:
                report.add("mismatch", entry_seq, "out of order")
        computed = entry_hash(
            prev,
            seq=entry_seq,
            at=row[1],
            event_type=row[2],
            actor=row[3],
            subject=row[4],
            detail=row[5],
        ).hex()
        if computed != stored:
            report.add("mismatch", entry_seq)
        signed = expected.get(entry_seq)
        if signed is not None and signed != computed:
            report.add("checkpoint_mismatch", entry_seq)
        anchored = anchors.pop(entry_seq, None)
        if anchored is not None and anchored != computed:
            report.add("anchor_mismatch", entry_seq)
        # Go on from the stored hash: later problems are reported on their own.
        seq, prev = entry_seq, bytes.fromhex(stored)
    report.head_seq = seq
    if report.newest_checkpoint > seq:
        report.add("truncated", seq, f"ends before checkpoint {report.newest_checkpoint}")
    for anchor in sorted(anchors):  # expected seqs the chain never reached
        report.add("truncated", seq, f"ends before the expected seq {anchor}")
    if head is None:
        report.add("head_mismatch", seq, "head row missing")
    elif head[0] > seq:
        report.add("truncated", seq, f"ends before its head {head[0]}")
    elif head != (seq, prev.hex()):
        report.add("head_mismatch", head[0])
    return report


_ENDS = sa_select(
    sa_select(func.max(col(AuditEvent.seq))).scalar_subquery(),
    sa_select(col(AuditChainHead.seq)).where(col(AuditChainHead.id) == 1).scalar_subquery(),
    sa_select(col(AuditChainHead.chain_hash)).where(col(AuditChainHead.id) == 1).scalar_subquery(),
)


def _entries(
    sessions: SessionFactory,
    total: int,
    progress: Callable[[int, int], None] | None,
    *,
    upto: int,
) -> Iterator[tuple[int, datetime, str, str, str | None, str, str]]:
    """Every entry up to seq ``upto`` in seq order, a page per short read (keyset paging)."""
    last, done = -1, 0
    columns = (
        col(AuditEvent.seq),
        col(AuditEvent.at),
        col(AuditEvent.event_type),
        col(AuditEvent.actor),
        col(AuditEvent.subject),
        col(AuditEvent.detail),
        col(AuditEvent.chain_hash),
    )
    while True:
        with sessions() as session:
            page = (
                session.connection()
                .execute(
                    sa_select(*columns)
                    .where(col(AuditEvent.seq) > last, col(AuditEvent.seq) <= upto)
                    .order_by(col(AuditEvent.seq))
                    .limit(_PAGE)
                )
                .all()
            )
        for row in page:
            yield (row[0], row[1], row[2], row[3], row[4], row[5], row[6])
        done += len(page)
        if progress is not None:
            progress(done, total)
        if len(page) < _PAGE:
            return
        last = page[-1][0]
