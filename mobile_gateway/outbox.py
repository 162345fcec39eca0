"""Durable, crash-safe outbox of sealed envelopes on SQLite.

The gateway's one promise: an envelope it accepted is kept until the hospital has committed
it. This module keeps that promise on disk. It never reads an envelope (they are opaque,
sealed bytes), never logs one, and never deletes a row except on a hospital ack.

Entry state machine (one row per envelope)::

    state       event                          next state    written
    ---------   ----------------------------   -----------   -----------------------------
    (new)       put (after commit -> agent 0)  pending       envelope, accepted_at
    pending     claim into a batch             in_flight     batch_id, attempts += 1
    in_flight   ack stored / duplicate         done          row deleted, done_total += 1
    in_flight   ack rejected, permanent        dead          reason, dead_at
    in_flight   ack retry_later / rejected,    pending       next_attempt_at = now + backoff
                not permanent
    in_flight   no ack before the timeout      pending       next_attempt_at = now + backoff
    in_flight   gateway (re)start              pending       (recovery: nothing was acked)
    pending     late ack stored / duplicate    done          (an ack of an expired batch is
    pending     late ack rejected, permanent   dead           still the hospital's word)
    done, dead  anything                       unchanged     (terminal)

"done" is represented by deleting the row: after the hospital's commit the gateway has no
reason to keep clinical ciphertext. "dead" rows stay, with their reason, in the
``dead_letter`` view until an operator purges them. An MQTT PUBACK changes nothing here.

Durability: WAL journal. Accepting is the one write that must be durable before we answer
(the agent deletes its copy on "accepted"), so :meth:`Outbox.put_many` commits with
``synchronous=FULL`` (in WAL mode NORMAL skips the fsync of the WAL at each commit, and a power
cut could lose an envelope the agent was told was stored). Its fsync cost is amortised by group
commit: every envelope that arrived while the previous commit ran is stored in one transaction.
Every other write (claim, settle, status) commits with ``synchronous=NORMAL``: still atomic
and consistent, and if a power cut loses one, the outcome is only a re-send (a lost claim is
recovered as pending anyway; a lost "done" makes the entry go again and the hospital answers
"duplicate"), never a lost envelope. The next FULL commit fsyncs the WAL including them.

Threading: an :class:`Outbox` object is used from one thread only (SQLite's own rule);
:class:`mobile_gateway.store.AsyncOutbox` gives asyncio code a single worker thread for it.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mobile_gateway.errors import OutboxError, OutboxFullError

__all__ = [
    "TRANSITIONS",
    "ClaimedEntry",
    "DeadLetter",
    "EntryEvent",
    "EntryState",
    "Outbox",
    "OutboxStats",
    "Settlement",
    "open_readonly",
    "read_dead_letters",
    "read_stats",
]


class EntryState(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    DEAD = "dead"


class EntryEvent(enum.StrEnum):
    CLAIM = "claim"
    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED_PERMANENT = "rejected_permanent"
    RETRY = "retry"  # retry_later, or rejected but not permanent
    TIMEOUT = "timeout"
    RECOVER = "recover"


# The table above, as data: (state, event) -> next state. Anything not listed is refused.
TRANSITIONS: dict[tuple[EntryState, EntryEvent], EntryState] = {
    (EntryState.PENDING, EntryEvent.CLAIM): EntryState.IN_FLIGHT,
    (EntryState.IN_FLIGHT, EntryEvent.STORED): EntryState.DONE,
    (EntryState.IN_FLIGHT, EntryEvent.DUPLICATE): EntryState.DONE,
    (EntryState.IN_FLIGHT, EntryEvent.REJECTED_PERMANENT): EntryState.DEAD,
    (EntryState.IN_FLIGHT, EntryEvent.RETRY): EntryState.PENDING,
    (EntryState.IN_FLIGHT, EntryEvent.TIMEOUT): EntryState.PENDING,
    (EntryState.IN_FLIGHT, EntryEvent.RECOVER): EntryState.PENDING,
    (EntryState.PENDING, EntryEvent.STORED): EntryState.DONE,
    (EntryState.PENDING, EntryEvent.DUPLICATE): EntryState.DONE,
    (EntryState.PENDING, EntryEvent.REJECTED_PERMANENT): EntryState.DEAD,
}

# Ack outcomes that end an entry ("done": the row is deleted), and the states they may end;
# settle applies them with one DELETE, so every such event must end the same states
# (tests/gateway/test_outbox.py checks the table keeps that shape).
_DONE_EVENTS = frozenset(ev for (_, ev), nxt in TRANSITIONS.items() if nxt is EntryState.DONE)
_DONE_FROM_JSON = json.dumps(
    sorted({st.value for (st, _), nxt in TRANSITIONS.items() if nxt is EntryState.DONE})
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope        BLOB    NOT NULL,
    size            INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'in_flight', 'dead')),
    accepted_at     REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    batch_id        TEXT,
    reason          TEXT,
    dead_at         REAL
);
CREATE INDEX IF NOT EXISTS entry_due ON entry (state, next_attempt_at, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIEW IF NOT EXISTS dead_letter AS
    SELECT id, reason, size, attempts, accepted_at, dead_at FROM entry WHERE state = 'dead';
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement:
    """What one ack result does to one entry; ``delay`` applies to RETRY/TIMEOUT only."""

    entry_id: int
    event: EntryEvent
    reason: str | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.event is EntryEvent.REJECTED_PERMANENT and not self.reason:
            raise ValueError("a permanent rejection needs its reason")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")


@dataclass(frozen=True, slots=True)
class ClaimedEntry:
    entry_id: int
    envelope: bytes
    attempts: int  # including this one


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    entry_id: int
    reason: str
    size: int
    attempts: int
    accepted_at: float
    dead_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    pending: int
    in_flight: int
    dead: int
    bytes_queued: int
    oldest_pending_at: float | None
    done_total: int
    meta: dict[str, str]

    @property
    def depth(self) -> int:
        """Entries the gateway still answers for (pending + in flight)."""
        return self.pending + self.in_flight


class Outbox:
    """The outbox of one gateway. Single-threaded; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        max_entries: int = 200_000,
        max_bytes: int = 1 << 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("outbox capacity must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)  # explicit transactions
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # A crash mid-checkpoint is safe in WAL; bound the WAL file so it cannot grow
            # without limit on a small edge disk.
            self._db.execute("PRAGMA journal_size_limit=67108864")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            path.chmod(0o600)
            self._recover()
            self._depth, self._bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM entry WHERE state != 'dead'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox: {type(exc).__name__}") from exc

    # -- writes
    def _recover(self) -> None:
        # Nothing in flight survives a restart: no ack can arrive for a batch we no longer
        # track, so every in-flight entry is due again now (the hospital dedups).
        with self._tx():
            self._db.execute(
                "UPDATE entry SET state = 'pending', batch_id = NULL, next_attempt_at = ? "
                "WHERE state = 'in_flight'",
                (self._clock(),),
            )

    def put_many(self, envelopes: Sequence[bytes]) -> list[int | None]:
        """Store envelopes in one durable transaction; ``None`` where capacity refused one.

        Returns only after the commit (fsync) so the caller may then answer "accepted".
        """
        now = self._clock()
        ids: list[int | None] = []
        depth, size = self._depth, self._bytes
        try:
            with self._tx(durable=True):
                for env in envelopes:
                    if depth + 1 > self._max_entries or size + len(env) > self._max_bytes:
                        ids.append(None)
                        continue
                    cur = self._db.execute(
                        "INSERT INTO entry (envelope, size, state, accepted_at, next_attempt_at)"
                        " VALUES (?, ?, 'pending', ?, ?)",
                        (env, len(env), now, now),
                    )
                    ids.append(cur.lastrowid)
                    depth += 1
                    size += len(env)
        except sqlite3.Error as exc:
            raise OutboxError(f"put failed: {type(exc).__name__}") from exc
        self._depth, self._bytes = depth, size
        return ids

    def put(self, envelope: bytes) -> int:
        (entry_id,) = self.put_many([envelope])
        if entry_id is None:
            raise OutboxFullError(self._depth, self._bytes)
        return entry_id

    def claim(self, *, batch_id: str, max_count: int, max_bytes: int) -> list[ClaimedEntry]:
        """Move due pending entries (oldest first) into one in-flight batch.

        Bounded by count and by total envelope bytes; never returns more than fits.
        """
        now = self._clock()
        out: list[ClaimedEntry] = []
        total = 0
        try:
            with self._tx():
                rows = self._db.execute(
                    "SELECT id, envelope, size, attempts FROM entry WHERE state = 'pending' "
                    "AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                    (now, max_count),
                ).fetchall()
                for entry_id, env, size, attempts in rows:
                    if total + size > max_bytes and out:
                        break
                    if size > max_bytes:
                        continue  # cannot happen with sane bounds; never block the queue
                    out.append(ClaimedEntry(entry_id, env, attempts + 1))
                    total += size
                self._db.executemany(
                    "UPDATE entry SET state = 'in_flight', batch_id = ?, attempts = attempts + 1"
                    " WHERE id = ? AND state = 'pending'",
                    [(batch_id, e.entry_id) for e in out],
                )
        except sqlite3.Error as exc:
            raise OutboxError(f"claim failed: {type(exc).__name__}") from exc
        return out

    def settle(self, settlements: Iterable[Settlement], meta: dict[str, str] | None = None) -> int:
        """Apply ack outcomes (and status ``meta``) in one transaction; returns how many
        entries changed state."""
        now = self._clock()
        changed = 0
        done = 0
        freed_entries = 0
        freed_bytes = 0
        items = list(settlements)
        done_ids = [s.entry_id for s in items if s.event in _DONE_EVENTS]
        try:
            with self._tx():
                if done_ids:
                    # The common case, every envelope of a batch stored: one statement instead
                    # of a read and a delete per entry (the same transitions as TRANSITIONS).
                    sizes = self._db.execute(
                        "DELETE FROM entry WHERE state IN (SELECT value FROM json_each(?)) "
                        "AND id IN (SELECT value FROM json_each(?)) RETURNING size",
                        (_DONE_FROM_JSON, json.dumps(done_ids)),
                    ).fetchall()
                    changed += len(sizes)
                    done += len(sizes)
                    freed_entries += len(sizes)
                    freed_bytes += sum(size for (size,) in sizes)
                for s in items:
                    if s.event in _DONE_EVENTS:
                        continue
                    row = self._db.execute(
                        "SELECT state, size FROM entry WHERE id = ?", (s.entry_id,)
                    ).fetchone()
                    if row is None:
                        continue  # already done: a late ack
                    state = EntryState(row[0])
                    nxt = TRANSITIONS.get((state, s.event))
                    if nxt is None:
                        continue  # not a legal move (e.g. retry for a pending entry)
                    changed += 1
                    if nxt is EntryState.DEAD:
                        self._db.execute(
                            "UPDATE entry SET state = 'dead', reason = ?, dead_at = ?, "
                            "batch_id = NULL WHERE id = ?",
                            (s.reason, now, s.entry_id),
                        )
                        freed_entries += 1
                        freed_bytes += row[1]
                    else:
                        self._db.execute(
                            "UPDATE entry SET state = 'pending', batch_id = NULL, "
                            "next_attempt_at = ? WHERE id = ?",
                            (now + s.delay, s.entry_id),
                        )
                if done:
                    self._bump("done_total", done)
                if meta:
                    self._set_meta(meta)
        except sqlite3.Error as exc:
            raise OutboxError(f"settle failed: {type(exc).__name__}") from exc
        self._depth -= freed_entries
        self._bytes -= freed_bytes
        return changed

    def set_meta(self, values: dict[str, str]) -> None:
        """Small status facts (link state, last ack) that ``phd gateway status`` reads."""
        try:
            with self._tx():
                self._set_meta(values)
        except sqlite3.Error as exc:
            raise OutboxError(f"meta update failed: {type(exc).__name__}") from exc

    def _set_meta(self, values: dict[str, str]) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def purge_dead(self) -> int:
        with self._tx():
            cur = self._db.execute("DELETE FROM entry WHERE state = 'dead'")
        return cur.rowcount

    def _bump(self, key: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
            "SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT)",
            (key, str(n), n),
        )

    # -- reads
    @property
    def depth(self) -> int:
        return int(self._depth)

    @property
    def bytes_queued(self) -> int:
        return int(self._bytes)

    def next_due(self) -> float | None:
        row = self._db.execute(
            "SELECT min(next_attempt_at) FROM entry WHERE state = 'pending'"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def stats(self) -> OutboxStats:
        return read_stats(self._db)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return read_dead_letters(self._db, limit)

    def close(self) -> None:
        try:
            # Fold the WAL back into the main file so a stopped gateway leaves one file.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    def _tx(self, *, durable: bool = False) -> _Transaction:
        return _Transaction(self._db, durable=durable)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; ``durable`` commits with
    synchronous=FULL (fsync before returning), see the module docstring."""

    def __init__(self, db: sqlite3.Connection, *, durable: bool) -> None:
        self._db = db
        self._durable = durable

    def __enter__(self) -> None:
        if self._durable:
            self._db.execute("PRAGMA synchronous=FULL")  # cannot change inside a transaction
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")
        finally:
            if self._durable:
                self._db.execute("PRAGMA synchronous=NORMAL")


def read_stats(db: sqlite3.Connection) -> OutboxStats:
    counts = dict.fromkeys(("pending", "in_flight", "dead"), 0)
    for state, n in db.execute("SELECT state, count(*) FROM entry GROUP BY state"):
        counts[state] = n
    (size,) = db.execute(
        "SELECT coalesce(sum(size), 0) FROM entry WHERE state != 'dead'"
    ).fetchone()
    (oldest,) = db.execute("SELECT min(accepted_at) FROM entry WHERE state != 'dead'").fetchone()
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return OutboxStats(
        pending=counts["pending"],
        in_flight=counts["in_flight"],
        dead=counts["dead"],
        bytes_queued=int(size),
        oldest_pending_at=None if oldest is None else float(oldest),
        done_total=int(meta.get("done_total", "0")),
        meta=meta,
    )


def read_dead_letters(db: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    rows = db.execute(
        "SELECT id, reason, size, attempts, accepted_at, dead_at FROM dead_letter "
        "ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        DeadLetter(
            entry_id=r[0], reason=r[1], size=r[2], attempts=r[3], accepted_at=r[4], dead_at=r[5]
        )
        for r in rows
    ]


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for ``phd gateway status`` while the gateway runs (WAL allows
    concurrent readers)."""
    if not path.exists():
        raise OutboxError("no outbox database at the configured path")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open outbox read-only: {type(exc).__name__}") from exc
