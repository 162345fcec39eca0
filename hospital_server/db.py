"""The one module that creates database engines and sessions (SQLite WAL or PostgreSQL).

SQLite is the embedded default: WAL journal, foreign keys on, a busy timeout so that several
ingest workers on one file wait instead of failing (writers retry the write lock at most 2 ms
apart, not on SQLite's sleeping schedule). PostgreSQL is reached through psycopg 3
(``postgresql+psycopg://``). Database exceptions are classified here (transient or not) so the
ingest worker can answer ``retry_later`` without knowing driver details. This module must never
hold a module-level engine: callers build one from settings.

SQLite's write-ahead log is bounded here too (:func:`bound_wal`): under steady load with two
ingest workers it restarts only now and then, and a reader that never lets go would let it
grow without limit.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, create_engine, text

__all__ = [
    "READ_ONLY",
    "WAL_LIMIT_BYTES",
    "IntegrityError",
    "Session",
    "SessionFactory",
    "bound_wal",
    "check_database",
    "is_transient",
    "make_engine",
    "make_session_factory",
    "normalise_url",
    "session_scope",
]

log = logging.getLogger(__name__)

SessionFactory = sessionmaker[Session]

# Execution option marking a transaction that will not write (see _sqlite_begin). Use as
# ``session.connection(execution_options=READ_ONLY)`` before the first statement.
READ_ONLY_OPTION = "phd_read_only"
READ_ONLY: dict[str, Any] = {READ_ONLY_OPTION: True}


def normalise_url(url: str) -> str:
    """Pin the PostgreSQL driver to psycopg 3 whatever spelling the operator used."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5, lock_timeout_ms: int = 30_000) -> Engine:
    """An engine for ``url``. ``lock_timeout_ms`` bounds how long a writer waits for a lock
    before the driver raises (a transient error: ingest answers ``retry_later``).

    Bound parameters are hidden from SQLAlchemy's logs and from the text of its errors: an
    error logged anywhere (a traceback, the web server's log) then carries no value."""
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": lock_timeout_ms / 1000},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take it over
        # (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL").
        event.listen(engine, "begin", partial(_sqlite_begin, lock_timeout_ms=lock_timeout_ms))
        return engine
    if backend == "postgresql":
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={"options": f"-c lock_timeout={lock_timeout_ms}"},
            hide_parameters=True,
        )
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: the WAL is fsynced at every commit. The hospital acks right after the commit
        # and the gateway then deletes its copy, so a commit must survive a power loss, not
        # only a process crash (WAL + NORMAL would lose the last acked transactions, and
        # nobody would resend them). One fsync per batch of up to 64 envelopes.
        cursor.execute("PRAGMA synchronous=FULL")
        # Statement journals in memory: ingest's multi-row INSERTs each wrote one to a new
        # file in /var/tmp (about 35 MB per 4 s at 1,000 envelopes/s in the e2e bench: every
        # index page such a statement touches is copied first, in case the statement alone
        # must be undone). Sorts without an index would go to memory too; the queries here
        # sort along indexes.
        cursor.execute("PRAGMA temp_store=MEMORY")
        # When the log restarts (see bound_wal), its file is cut back to this size.
        cursor.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
    finally:
        cursor.close()


# Longest pause between two tries for SQLite's write lock (see _sqlite_begin).
_LOCK_RETRY_MAX = 0.002


def _sqlite_begin(conn: Any, *, lock_timeout_ms: int) -> None:
    # IMMEDIATE takes the write lock up front, so concurrent workers queue for it instead of
    # failing a read-to-write upgrade with SQLITE_BUSY mid-transaction. Read-only work
    # (READ_ONLY execution option) begins deferred so it runs beside a writer in WAL mode.
    if conn.get_execution_options().get(READ_ONLY_OPTION):
        conn.exec_driver_sql("BEGIN")
        return
    # SQLite's own busy handler retries after 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms:
    # a writer of another process (two ingest workers on one file) went on sleeping for tens
    # of milliseconds after the lock was free. Here the lock is tried at most 2 ms apart, for
    # as long as the busy timeout would have waited; every other statement keeps the timeout.
    raw = conn.connection.dbapi_connection
    with _busy_timeout(raw, 0):
        deadline = time.monotonic() + lock_timeout_ms / 1000
        pause = 0.0001
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    break
            time.sleep(pause)
            pause = min(pause * 2, _LOCK_RETRY_MAX)
        # The last try through SQLAlchemy, so a failure is its OperationalError (transient).
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _busy_timeout(raw: Any, ms: int) -> Iterator[None]:
    """Run with the DB-API connection's busy timeout at ``ms``, then put its own back."""
    before = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
    raw.execute(f"PRAGMA busy_timeout={int(ms)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout={before}")


# The write-ahead log restarts from its beginning only when a checkpoint has copied every frame
# back into the database and no reader still uses the log. Two ingest workers (each reading
# its next batch's standing while the other commits) and the API keep some reader on the log
# most of the time, so under steady load it restarts only now and then: in one `phd bench e2e`
# run (session 12) it reached 157 to 245 MB between restarts (each ingested envelope appends
# about 28 KiB of pages to it, half of them for the random content-MAC index), and a reader
# that never lets go would let it grow without limit. Past WAL_LIMIT_BYTES the writer that has
# just committed asks for a RESTART checkpoint, waiting at most _WAL_RESTART_WAIT_MS for the
# readers of the log (other writers wait that long too); if they do not finish in time, the
# next commit tries again. journal_size_limit (_WAL_KEEP_BYTES) then gives the disk space back:
# without it the file keeps its largest size for good.
WAL_LIMIT_BYTES = 256 * 1024 * 1024
_WAL_KEEP_BYTES = 64 * 1024 * 1024
_WAL_RESTART_WAIT_MS = 200


def bound_wal(session: Session, *, limit: int = WAL_LIMIT_BYTES) -> bool | None:
    """After a commit: restart an SQLite log larger than ``limit`` bytes.

    None when there was nothing to do (PostgreSQL, an in-memory database, a log within the
    limit); True when the log was checkpointed and will restart at the next write; False when
    readers still held it after the wait (the caller's next commit tries again).
    """
    bind = session.get_bind()
    if bind.dialect.name != "sqlite" or not isinstance(bind, Engine):
        return None
    path = bind.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    try:
        if Path(path + "-wal").stat().st_size <= limit:
            return None
    except FileNotFoundError:
        return None
    try:
        with bind.connect() as conn:
            # The DB-API connection directly: SQLAlchemy would begin a transaction first, and
            # a checkpoint runs outside any.
            raw = conn.connection.dbapi_connection
            if raw is None:  # pragma: no cover -- a pooled connection always has one
                return None
            with _busy_timeout(raw, _WAL_RESTART_WAIT_MS):
                busy, _log, _done = raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    except (sqlite3.Error, DBAPIError) as exc:
        # What was committed stays committed; the log is only left longer for a while.
        log.warning(
            "SQLite log checkpoint failed (%s); retried after the next commit", type(exc).__name__
        )
        return False
    return not busy


def make_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(bind=engine, class_=Session, expire_on_commit=False)


@contextmanager
def session_scope(factory: SessionFactory) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def check_database(engine: Engine) -> bool:
    """True when a trivial query succeeds (readiness probe)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError:
        return False
    return True


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may succeed if retried (lock, lost connection, serialization).

    Integrity errors are not transient: they mean the data conflicts (a duplicate), and the
    caller re-reads to decide. Everything else from the driver is an operational condition.
    """
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # psycopg reports serialization failures and deadlocks with SQLSTATE class 40.
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("40")
