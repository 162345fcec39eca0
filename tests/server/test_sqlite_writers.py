"""Writers of one SQLite file queueing for its write lock (hospital_server.db._sqlite_begin).

Two engines stand for two ingest worker processes on one file: a second writer waits while the
first holds the lock and then writes; past the lock timeout it fails with a transient error;
either way the connection keeps its busy timeout for every other statement.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from hospital_server.db import is_transient, make_engine


@contextmanager
def _engines(tmp_path: Path, lock_timeout_ms: int) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one new file (two processes' worth): the second with ``lock_timeout_ms``."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = make_engine(url)
    second = make_engine(url, lock_timeout_ms=lock_timeout_ms)
    try:
        with first.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        yield first, second
    finally:
        first.dispose()
        second.dispose()


def _busy_timeout(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())


def test_a_second_writer_waits_for_the_lock_then_writes(tmp_path: Path) -> None:
    with _engines(tmp_path, lock_timeout_ms=10_000) as (first, second):
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


def test_a_writer_past_the_lock_timeout_fails_with_a_transient_error(tmp_path: Path) -> None:
    with _engines(tmp_path, lock_timeout_ms=200) as (first, second):
        with first.connect() as holding, holding.begin():  # the write lock, held
            with pytest.raises(OperationalError) as failed, second.begin():
                pass
            assert is_transient(failed.value)
            assert "locked" in str(failed.value)
        # The same pooled connection writes once the lock is free, with its timeout intact.
        with second.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (3)")
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 200


def test_readers_do_not_take_the_write_lock(tmp_path: Path) -> None:
    from hospital_server.db import READ_ONLY

    with (
        _engines(tmp_path, lock_timeout_ms=200) as (first, second),
        first.connect() as holding,
        holding.begin(),  # the write lock, held
    ):
        holding.exec_driver_sql("INSERT INTO t VALUES (1)")
        with second.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 0
