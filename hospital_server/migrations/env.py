"""Alembic environment: runs migrations on the connection handed over by ``upgrade()``.

Offline (SQL script) mode is not supported: migrations run against a live database so that
both SQLite (batch mode for ALTER) and PostgreSQL get the same revisions.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import hospital_server.models  # noqa: F401 -- registers the tables on SQLModel.metadata

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Render our and sqlmodel's column types by bare name; script.py.mako imports them.
        user_module_prefix="",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through hospital_server.migrations.upgrade()")
_run(connection)
