"""A real, throwaway PostgreSQL 15 cluster for the test session (no mocks, no skips).

``postgresql_server`` starts a cluster with :func:`phd_cli.pg_local.start_postgres` (initdb in
a temporary directory owned by the ``postgres`` system user, since initdb refuses root;
``pg_ctl`` on a free loopback port) and stops and deletes it at session end. Tests get a
SQLAlchemy URL; ``fresh_database(server, template)`` clones a migrated template database so
each test starts from an empty schema in tens of milliseconds.

Import the fixture into a conftest: ``from tests.pg_fixtures import postgresql_server``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from phd_cli.pg_local import PostgresServer, start_postgres, stop_postgres

__all__ = ["PostgresServer", "fresh_database", "postgresql_server"]


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        stop_postgres(server)


def fresh_database(server: PostgresServer, template: str) -> str:
    """Create a new database cloned from ``template`` and return its URL."""
    name = f"t_{secrets.token_hex(6)}"
    server.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return server.url(name)
