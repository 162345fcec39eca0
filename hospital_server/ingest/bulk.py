"""Bulk insert of plain rows: COPY on PostgreSQL, one prepared executemany on SQLite.

Ingest writes whole batches of rows (one envelope row and a few observation rows per
envelope) that it never reads back in the same transaction. SQLAlchemy's Core
``executemany`` spent more time preparing parameters than the database spent storing them,
and on PostgreSQL it sends one INSERT per row. Here each column's value goes through the
column type's own bind processor (so what is stored is exactly what the ORM would store and
reads back the same way), and then:

- PostgreSQL: ``COPY table (columns) FROM STDIN``, one stream for the batch, inside the
  session's transaction (psycopg 3's copy API on the same connection);
- SQLite: one ``INSERT`` prepared once and run with ``executemany`` (sqlite3 steps it in C).

Constraints apply as to any insert: a unique violation raises SQLAlchemy's ``IntegrityError``
on both backends (COPY's driver errors are wrapped here as SQLAlchemy wraps any other), so the
caller's conflict handling is the same for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

__all__ = ["BulkInserter"]

_Processor = Callable[[Any], Any] | None


class BulkInserter:
    """Inserts rows (dicts keyed by column name) into one table; built once per dialect."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self._table = table.name
        self._columns = tuple(c.name for c in table.columns)
        self._processors: tuple[_Processor, ...] = tuple(
            c.type.bind_processor(dialect) for c in table.columns
        )
        self._postgres = dialect.name == "postgresql"
        # Identifiers come from the schema (never from input) and are quoted by the dialect;
        # every value is bound or streamed, never written into the statement.
        quote = dialect.identifier_preparer.quote
        target = f"{quote(self._table)} ({', '.join(quote(n) for n in self._columns)})"
        if self._postgres:
            self._sql = f"COPY {target} FROM STDIN"
        else:
            marks = ", ".join("?" for _ in self._columns)
            self._sql = f"INSERT INTO {target} VALUES ({marks})"  # noqa: S608 -- see above

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    def insert(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` in ``connection``'s transaction; a missing column is a KeyError."""
        if not rows:
            return
        tuples = [self._values(row) for row in rows]
        if self._postgres:
            self._copy(connection, tuples)
        else:
            connection.exec_driver_sql(self._sql, tuples)

    def _values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            value if proc is None or value is None else proc(value)
            for value, proc in zip(
                (row[name] for name in self._columns), self._processors, strict=True
            )
        )

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
