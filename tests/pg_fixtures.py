"""A real, throwaway PostgreSQL 15 cluster for the test session (no mocks, no skips).

``postgresql_server`` initdb's a cluster in a temporary directory owned by the ``postgres``
system user (initdb refuses to run as root), starts it with ``pg_ctl`` on a free loopback port
with a Unix socket in the same directory, and stops and deletes it at session end. Tests get a
SQLAlchemy URL; ``fresh_database(server, template)`` clones a migrated template database so
each test starts from an empty schema in tens of milliseconds.

Import the fixture into a conftest: ``from tests.pg_fixtures import postgresql_server``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_SUPERUSER = "phd_test"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    datadir: Path

    def url(self, database: str = "postgres") -> str:
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(sql.encode())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*args: str) -> list[str]:
    # We run as root in CI containers; PostgreSQL refuses root, so drop to its system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return list(args)


def start_postgres() -> PostgresServer:
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(
            "PostgreSQL 15 is not installed: apt-get install -y postgresql (see README, make test)"
        )
    base = Path(tempfile.mkdtemp(prefix="phd-pg-"))
    datadir = base / "data"
    password = secrets.token_hex(16)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n", encoding="utf-8")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    base.chmod(0o700)
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(datadir),
            "-U",
            _SUPERUSER,
            "--pwfile",
            str(pwfile),
            "-A",
            "scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale",
            "C",
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
    )
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            options,
            "-l",
            str(base / "log"),
            "-w",
            "-t",
            "60",
            "start",
        ),
        check=True,
        capture_output=True,
    )
    return PostgresServer("127.0.0.1", port, _SUPERUSER, password, datadir)


def stop_postgres(server: PostgresServer) -> None:
    subprocess.run(
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(server.datadir), "-m", "fast", "stop"),
        check=False,
        capture_output=True,
    )
    shutil.rmtree(server.datadir.parent, ignore_errors=True)


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
