"""Writers of one SQLite file queueing for its write lock (hospital_server.db._sqlite_begin).

Two engines stand for two ingest worker processes on one file: a second writer waits while the
first holds the lock and then writes; past the lock timeout it fails with a transient error;
either way the connection keeps its busy timeout for every other statement.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from hospital_server.db import is_transient, make_engine


def _engines(tmp_path: Path, lock_timeout_ms: int) -> tuple[Engine, Engine]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = make_engine(url)
    with first.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    return first, make_engine(url, lock_timeout_ms=lock_timeout_ms)


def _busy_timeout(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())


def test_a_second_writer_waits_for_the_lock_then_writes(tmp_path: Path) -> None:
    first, second = _engines(tmp_path, lock_timeout_ms=10_000)
    try:
        holding = first.connect()
        holding.begin()  # BEGIN IMMEDIATE: the write lock
        holding.exec_driver_sql("INSERT INTO t VALUES (1)")
        release = threading.Timer(0.3, holding.commit)
        release.start()
        with second.begin() as conn:  # blocks until the first commits, then takes the lock
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        release.join()
        holding.close()
        with second.connect() as conn:
            assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]
        assert _busy_timeout(second) == 10_000
    finally:
        first.dispose()
        second.dispose()


def test_a_writer_past_the_lock_timeout_fails_with_a_transient_error(tmp_path: Path) -> None:
    first, second = _engines(tmp_path, lock_timeout_ms=200)
    try:
        with first.connect() as holding, holding.begin():  # the write lock, held
            with pytest.raises(OperationalError) as failed, second.begin():
                pass
            assert is_transient(failed.value)
            assert "locked" in str(failed.value)
        # The same pooled connection writes once the lock is free, with its timeout intact.
        with second.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (3)")
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 200
    finally:
        first.dispose()
        second.dispose()


def test_readers_do_not_take_the_write_lock(tmp_path: Path) -> None:
    from hospital_server.db import READ_ONLY

    first, second = _engines(tmp_path, lock_timeout_ms=200)
    try:
        with first.connect() as holding, holding.begin():  # the write lock, held
            holding.exec_driver_sql("INSERT INTO t VALUES (1)")
            with second.connect().execution_options(**READ_ONLY) as conn, conn.begin():
                assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 0
    finally:
        first.dispose()
        second.dispose()
