"""SQLite's write-ahead log stays bounded under readers that never let it restart
(hospital_server.db.bound_wal, called by ingest after every commit).

A reader that holds a snapshot across each commit stands for the second ingest worker and the
API: the log is then never fully copied back while nobody uses it, so it grows with every
write. Past the limit, bound_wal's RESTART checkpoint makes the next write start the log from
its beginning again; while a reader holds it, bound_wal gives up after a short wait.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from hospital_server.db import SessionFactory, bound_wal, make_engine, make_session_factory

MIB = 1024 * 1024


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, Engine, SessionFactory, sqlite3.Connection]]:
    path = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (b BLOB)")
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        yield path, engine, make_session_factory(engine), reader
    finally:
        reader.close()
        engine.dispose()


def _write(sessions: SessionFactory) -> None:
    """Commit one MiB."""
    with sessions() as s:
        s.connection().exec_driver_sql("INSERT INTO t VALUES (randomblob(1048576))")
        s.commit()


def _starve(sessions: SessionFactory, reader: sqlite3.Connection, writes: int) -> None:
    """Commit while a reader holds a snapshot taken before each commit."""
    for _ in range(writes):
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        _write(sessions)
        reader.execute("COMMIT")


def _wal(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


def test_a_starved_log_grows_and_is_restarted_past_the_limit(
    db: tuple[Path, Engine, SessionFactory, sqlite3.Connection],
) -> None:
    path, _engine, sessions, reader = db
    _starve(sessions, reader, 8)
    grown = _wal(path)
    assert grown > 8 * MIB
    _starve(sessions, reader, 1)
    assert _wal(path) > grown  # left alone, it keeps growing

    grown = _wal(path)
    with sessions() as s:
        assert bound_wal(s, limit=grown + 1) is None  # within the limit: nothing done
        assert bound_wal(s, limit=MIB) is True
    _starve(sessions, reader, 2)
    assert _wal(path) <= grown  # the log started again from its beginning
    with sessions() as s:
        assert s.connection().exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 11


def test_a_reader_on_the_log_makes_it_give_up_quickly_and_lose_nothing(
    db: tuple[Path, Engine, SessionFactory, sqlite3.Connection],
) -> None:
    path, _engine, sessions, reader = db
    _starve(sessions, reader, 4)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a snapshot on the log, held
    _write(sessions)
    start = time.monotonic()
    with sessions() as s:
        assert bound_wal(s, limit=MIB) is False
    assert time.monotonic() - start < 2.0  # bounded wait, not the 30 s lock timeout
    reader.execute("COMMIT")
    _write(sessions)  # writers carry on
    with sessions() as s:
        assert s.connection().exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 6
        assert s.connection().exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
    assert _wal(path) > MIB


def test_nothing_to_do_for_a_database_in_memory() -> None:
    engine = make_engine("sqlite://")
    try:
        with make_session_factory(engine)() as s:
            assert bound_wal(s, limit=0) is None
    finally:
        engine.dispose()
