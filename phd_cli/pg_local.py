"""A throwaway local PostgreSQL 15 cluster: initdb in a temp dir, pg_ctl on a loopback port.

Used by the test suite (tests/pg_fixtures.py) and by ``phd bench ingest``. PostgreSQL refuses
to run as root, so when we are root the binaries run as the ``postgres`` system user via
``runuser`` in a directory that user owns. Authentication is scram-sha-256 with a random
password; durability settings are relaxed (fsync off) because the data is disposable.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PG_BIN", "PostgresServer", "start_postgres", "stop_postgres"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_SUPERUSER = "phd"


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


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """Start a cluster; ``durable`` keeps PostgreSQL's default fsync/commit settings (bench)."""
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
    subprocess.run(  # noqa: S603 -- fixed binary path, arguments built here
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
        "-c max_connections=60"
    )
    if not durable:  # test data is disposable: skip the flushes
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(  # noqa: S603 -- fixed binary path, arguments built here
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
    subprocess.run(  # noqa: S603 -- fixed binary path, arguments built here
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(server.datadir), "-m", "fast", "stop"),
        check=False,
        capture_output=True,
    )
    shutil.rmtree(server.datadir.parent, ignore_errors=True)
