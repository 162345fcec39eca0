"""Server test fixtures: every storage-touching test runs on SQLite AND on a real PostgreSQL.

``db_url`` is parametrized over both backends. Each backend's schema is built once per session
by the real Alembic migrations into a template (a file for SQLite, a template database for
PostgreSQL); each test gets a fresh copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hospital_server.app import create_app
from hospital_server.auth.tokens import TokenPolicy, issue_access_token
from hospital_server.context import ServerContext, tcp_probe
from hospital_server.db import SessionFactory, make_engine, make_session_factory
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.keys import LocalKeyFileProvider
from hospital_server.migrations import upgrade
from hospital_server.models import AuditEvent, StaffUser, utcnow
from hospital_server.pki.layout import PkiLayout
from hospital_server.settings import Settings
from hospital_server.staff import create_staff_user, provision_totp
from phd_cli.main import main
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
def dev_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory of ``phd server --dev`` commands (which keep their
    key file and database under ``var/dev``), with no PHD_SERVER_* settings inherited."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("PHD_SERVER_")]:
        monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def dev_server(dev_dir: Path) -> Path:
    """:func:`dev_dir` with its key file created and its database migrated, by the CLI."""
    assert main(["server", "--dev", "init-keys"]) == 0
    assert main(["server", "--dev", "migrate"]) == 0
    return dev_dir


@contextmanager
def dev_session(root: Path) -> Iterator[Session]:
    """A session on the dev profile's SQLite database under ``root``."""
    engine = make_engine(f"sqlite:///{root / 'var/dev/server.db'}")
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


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


def totp_secret_for(username: str) -> bytes:
    """The fixture users' TOTP secrets: fixed per name, so a test can compute codes."""
    return hashlib.sha256(b"test-totp\x00" + username.encode()).digest()[:20]


def add_staff_user(
    ctx: ServerContext, username: str, password: str, *, role: str, actor: str = "bootstrap"
) -> str:
    """A staff user with a TOTP secret (:func:`totp_secret_for`); returns the user id."""
    with ctx.sessions() as session:
        user = create_staff_user(session, username, password, role=role, actor=actor)
        provision_totp(
            session, ctx.key_provider, user, actor=actor, secret=totp_secret_for(username)
        )
        session.commit()
        return user.id


def bearer_headers(ctx: ServerContext, username: str) -> dict[str, str]:
    """An Authorization header with a fresh access token for ``username``, issued directly
    (no password, TOTP or audit: for tests about something other than logging in). Blocking:
    from async tests call it through ``asyncio.to_thread``."""
    with ctx.sessions() as session:
        user = session.exec(select(StaffUser).where(StaffUser.username == username)).one()
        access = issue_access_token(
            session,
            ctx.key_provider,
            TokenPolicy.from_settings(ctx.settings),
            user_id=user.id,
            role=user.role,
            now=utcnow(),
        )
        session.commit()
    return {"Authorization": f"Bearer {access.token}"}


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
    add_staff_user(ctx, *ADMIN, role="admin")
    add_staff_user(ctx, *CLINICIAN, role="clinician")
    yield ctx
    ctx.close()


@pytest.fixture
async def client(settings: Settings, context: ServerContext) -> AsyncIterator[httpx.AsyncClient]:
    """The application on ``context``, called in process (ASGI)."""
    app = create_app(settings, context=context)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://server"
    ) as c:
        yield c


def audit_entries(ctx: ServerContext, event_type: str) -> list[dict[str, Any]]:
    """The audit entries of one type, oldest first: actor, subject and the detail's keys.
    Blocking: from async tests call it through ``asyncio.to_thread``."""
    with ctx.sessions() as s:
        rows = s.exec(
            select(AuditEvent)
            .where(AuditEvent.event_type == event_type)
            .order_by(col(AuditEvent.id))
        ).all()
        return [{"actor": r.actor, "subject": r.subject, **json.loads(r.detail)} for r in rows]


@pytest.fixture
def admin_headers(context: ServerContext) -> dict[str, str]:
    return bearer_headers(context, ADMIN[0])


@pytest.fixture
def clinician_headers(context: ServerContext) -> dict[str, str]:
    return bearer_headers(context, CLINICIAN[0])


# ---------------------------------------------------------------- ingest


@pytest.fixture
def server_pki(tmp_path: Path) -> PkiLayout:
    """A PKI of this test's own: enrollment issues certificates and tests revoke in it."""
    return make_pki(tmp_path / "pki", gateways=("gw-1", "gw-2"))


@pytest.fixture
def world(context: ServerContext, server_pki: PkiLayout) -> World:
    return build_world(context, server_pki)
