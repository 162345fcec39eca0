"""Server test fixtures: every storage-touching test runs on SQLite AND on a real PostgreSQL.

``db_url`` is parametrized over both backends. Each backend's schema is built once per session
by the real Alembic migrations into a template (a file for SQLite, a template database for
PostgreSQL); each test gets a fresh copy.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from hospital_server.context import ServerContext, tcp_probe
from hospital_server.db import SessionFactory, make_engine, make_session_factory
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.keys import LocalKeyFileProvider
from hospital_server.migrations import upgrade
from hospital_server.pki.layout import PkiLayout
from hospital_server.settings import Settings
from hospital_server.staff import create_staff_user
from tests.pg_fixtures import PostgresServer, fresh_database, postgresql_server
from tests.pki_fixtures import make_pki
from tests.server.ingest_world import World, build_world

__all__ = ["postgresql_server"]

_PG_TEMPLATE = "phd_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    # Closing the last connection checkpoints the WAL into the main file and removes it, so a
    # plain copy of the main file is a complete database.
    engine.dispose()
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="session")
def pg_template(postgresql_server: PostgresServer) -> PostgresServer:
    postgresql_server.admin(f'CREATE DATABASE "{_PG_TEMPLATE}"')
    engine = make_engine(postgresql_server.url(_PG_TEMPLATE))
    upgrade(engine)
    engine.dispose()
    return postgresql_server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "server.db"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    server: PostgresServer = request.getfixturevalue("pg_template")
    return fresh_database(server, _PG_TEMPLATE)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> SessionFactory:
    return make_session_factory(engine)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "server-keys.json"
    LocalKeyFileProvider.create(path)
    return path


@pytest.fixture
def provider(key_file: Path) -> LocalKeyFileProvider:
    return LocalKeyFileProvider.load(key_file)


@pytest.fixture
def patient_keys(provider: LocalKeyFileProvider) -> PatientKeys:
    return PatientKeys(provider)


# ---------------------------------------------------------------- API


ADMIN = ("admin", "correct horse battery staple")
CLINICIAN = ("dr-who", "another long password")


@pytest.fixture
def settings(db_url: str, key_file: Path) -> Settings:
    return Settings(profile="dev", database_url=SecretStr(db_url), key_file=key_file)


@pytest.fixture
def broker_listener() -> Iterator[tuple[str, int]]:
    """A real listening TCP socket standing where the broker is expected (readiness only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield "127.0.0.1", int(sock.getsockname()[1])


@pytest.fixture
def context(settings: Settings, broker_listener: tuple[str, int]) -> Iterator[ServerContext]:
    ctx = ServerContext.build(settings, broker_probe=tcp_probe(*broker_listener))
    with ctx.sessions() as session:
        create_staff_user(session, ADMIN[0], ADMIN[1], role="admin", actor="bootstrap")
        create_staff_user(session, CLINICIAN[0], CLINICIAN[1], role="clinician", actor="bootstrap")
        session.commit()
    yield ctx
    ctx.close()


# ---------------------------------------------------------------- ingest


@pytest.fixture
def server_pki(tmp_path: Path) -> PkiLayout:
    """A PKI of this test's own: enrollment issues certificates and tests revoke in it."""
    return make_pki(tmp_path / "pki", gateways=("gw-1", "gw-2"))


@pytest.fixture
def world(context: ServerContext, server_pki: PkiLayout) -> World:
    return build_world(context, server_pki)
