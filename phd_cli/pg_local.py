"""A throwaway local PostgreSQL cluster: initdb in a temp dir, pg_ctl on a loopback port.

The server binaries are the newest installed under /usr/lib/postgresql/VERSION/bin (Debian's
layout, whatever major version its ``postgresql`` package brings), else ``pg_config --bindir``.

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
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["PostgresServer", "newest_server_bindir", "pg_bindir", "start_postgres", "stop_postgres"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
_SERVER_TOOLS = ("initdb", "pg_ctl")
_SUPERUSER = "phd"
_NOT_FOUND = (
    "no PostgreSQL server found (initdb and pg_ctl under {root}/VERSION/bin or in "
    "`pg_config --bindir`): apt-get install -y postgresql (scripts/setup.sh does it)"
)


def _major(bindir: Path) -> tuple[int, ...] | None:
    """(16,) for .../16/bin, (9, 6) for .../9.6/bin; None when the name is not a version."""
    parts = bindir.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def newest_server_bindir(bindirs: Iterable[Path]) -> Path | None:
    """The ``VERSION/bin`` directory of the highest version among ``bindirs``, if any has one.

    Pure: it reads version numbers from the paths only (callers pass directories that hold the
    server tools). Versions compare as numbers, so 10 is newer than 9.6.
    """
    versioned = [(v, d) for d in bindirs if (v := _major(d)) is not None]
    return max(versioned)[1] if versioned else None


def _has_server_tools(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in _SERVER_TOOLS)


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    result = subprocess.run(  # noqa: S603 -- the pg_config found on PATH, fixed arguments
        [pg_config, "--bindir"], check=False, capture_output=True, text=True
    )
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


@cache
def pg_bindir() -> Path:
    """Where initdb and pg_ctl are: newest Debian-layout install, else ``pg_config --bindir``."""
    installed = [d for d in DEBIAN_ROOT.glob("*/bin") if _has_server_tools(d)]
    newest = newest_server_bindir(installed)
    if newest is not None:
        return newest
    fallback = _pg_config_bindir()  # libpq-dev's pg_config may exist without a server
    if fallback is not None and _has_server_tools(fallback):
        return fallback
    raise RuntimeError(_NOT_FOUND.format(root=DEBIAN_ROOT))


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
    bindir = pg_bindir()
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
            str(bindir / "initdb"),
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
            str(bindir / "pg_ctl"),
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
        _as_postgres(str(pg_bindir() / "pg_ctl"), "-D", str(server.datadir), "-m", "fast", "stop"),
        check=False,
        capture_output=True,
    )
    shutil.rmtree(server.datadir.parent, ignore_errors=True)
