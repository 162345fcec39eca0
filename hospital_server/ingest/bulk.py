"""Bulk insert of plain rows: COPY on PostgreSQL, one prepared executemany on SQLite.

Ingest writes whole batches of rows (one envelope row and a few observation rows per
envelope) that it never reads back in the same transaction. SQLAlchemy's Core
``executemany`` spent more time preparing parameters than the database spent storing them,
and on PostgreSQL it sends one INSERT per row. Here each column's value goes through the
column type's own bind processor (so what is stored is exactly what the ORM would store and
reads back the same way), and then:

- PostgreSQL: ``COPY table (columns) FROM STDIN``, one stream for the batch, inside the
  session's transaction (psycopg 3's copy API on the same connection);
- SQLite: one multi-row ``INSERT ... VALUES (...), (...)`` per chunk of rows (one step in C,
  see :meth:`BulkInserter.insert` for why not executemany).

Constraints apply as to any insert: a unique violation raises SQLAlchemy's ``IntegrityError``
on both backends (COPY's driver errors are wrapped here as SQLAlchemy wraps any other), so the
caller's conflict handling is the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

__all__ = ["BulkInserter"]

# Rows per SQLite INSERT: 256 rows of our widest table stay far below SQLite's limit of 32,766
# bound parameters per statement.
_SQLITE_ROWS = 256


class BulkInserter:
    """Inserts rows (dicts keyed by column name) into one table; built once per dialect."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self._table = table.name
        self._columns = tuple(c.name for c in table.columns)
        # Only the columns whose type converts values (times here); the rest pass as they are.
        self._processors = tuple(
            (at, proc)
            for at, column in enumerate(table.columns)
            if (proc := column.type.bind_processor(dialect)) is not None
        )
        self._get = itemgetter(*self._columns)
        self._postgres = dialect.name == "postgresql"
        # Identifiers come from the schema (never from input) and are quoted by the dialect;
        # every value is bound or streamed, never written into the statement.
        quote = dialect.identifier_preparer.quote
        target = f"{quote(self._table)} ({', '.join(quote(n) for n in self._columns)})"
        self._sql = f"COPY {target} FROM STDIN"
        self._insert = f"INSERT INTO {target} VALUES "  # noqa: S608 -- see above
        self._row_marks = "(" + ", ".join("?" for _ in self._columns) + ")"
        self._statements: dict[int, str] = {}

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    def insert(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` in ``connection``'s transaction; a missing column is a KeyError."""
        if not rows:
            return
        # A batch repeats its times (an envelope's receive time is every reading's, and its
        # readings share their measurement time): convert each distinct value once per call.
        # Bind processors are pure functions of the value; the processed columns are times.
        memos: list[dict[Any, Any]] = [{} for _ in self._processors]
        tuples = [self._values(row, memos) for row in rows]
        if self._postgres:
            self._copy(connection, tuples)
            return
        # One multi-row INSERT per chunk rather than executemany: sqlite3 releases and retakes
        # the GIL around every step, and each retake waits for the verifying thread to yield
        # (up to the switch interval), so per-row steps starved the pipeline's committer.
        for at in range(0, len(tuples), _SQLITE_ROWS):
            chunk = tuples[at : at + _SQLITE_ROWS]
            flat = tuple(value for values in chunk for value in values)
            connection.exec_driver_sql(self._statement(len(chunk)), flat)

    def _statement(self, rows: int) -> str:
        sql = self._statements.get(rows)
        if sql is None:
            sql = self._statements[rows] = self._insert + ", ".join([self._row_marks] * rows)
        return sql

    def _values(self, row: dict[str, Any], memos: list[dict[Any, Any]]) -> tuple[Any, ...]:
        got = self._get(row)
        values = list(got) if len(self._columns) > 1 else [got]  # itemgetter of one: a scalar
        for (at, proc), memo in zip(self._processors, memos, strict=True):
            value = values[at]
            if value is not None:
                done = memo.get(value)
                if done is None:
                    done = memo[value] = proc(value)
                values[at] = done
        return tuple(values)

    def _copy(self, connection: Connection, tuples: list[tuple[Any, ...]]) -> None:
        driver = connection.connection.driver_connection
        if not isinstance(driver, psycopg.Connection):
            raise TypeError("COPY needs a psycopg 3 connection")
        try:
            with driver.cursor() as cursor, cursor.copy(self._sql) as copy:
                for values in tuples:
                    copy.write_row(values)
        except psycopg.Error as exc:
            # Wrapped as SQLAlchemy wraps driver errors (IntegrityError, OperationalError...),
            # so hospital_server.db.is_transient and the caller's conflict handling apply.
            raise DBAPIError.instance(self._sql, None, exc, psycopg.Error) from exc
