"""Everything ``phd demo`` prepares before starting a child: PKI, broker config, server state.

What it is for: one fresh run directory per demo (``<dir>/run-YYYYmmdd-HHMMSS``) holding the
broker config, the SQLite database and its key file, the gateway's outbox and config, the
agent home and every child's log. The PKI (default ``certs/dev``) is created when missing and
reused otherwise (``hospital_server.pki.ca.init_pki`` is idempotent); the demo gateway's
certificate is issued once. The database is migrated to head before the server starts, and a
bootstrap admin with a random password and a TOTP second factor is created (the password and
the base32 TOTP secret go to two 0600 files; the demo logs in with them, docs/auth.md).

What it must never do: delete anything (a new run directory each time, nothing is wiped),
print or log a key, a password or a TOTP secret, or put patient data anywhere but the
server's API.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from phd_cli.demo.procs import DemoSetupError

if TYPE_CHECKING:
    from phd_cli.demo.stack import UplinkTuning
    from phd_cli.demo.staff_login import StaffCredentials

__all__ = [
    "ADMIN_USER",
    "GATEWAY_ID",
    "DemoPaths",
    "Ports",
    "new_run_dir",
    "prepare_broker",
    "prepare_gateway_config",
    "prepare_pki",
    "prepare_server_db",
    "server_env",
]

GATEWAY_ID = "demo-gw-1"
ADMIN_USER = "demo-admin"
CLINICIAN_USER = "demo-clinician"
BROKER_HOST = "localhost"  # the broker certificate's SAN (PkiLayout default hosts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ports:
    mqtt: int
    http: int
    gateway_metrics: int


# sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoPaths:
    run: Path
    pki: Path
    socket_dir: Path  # the run's gateway directory unless its path is too long for a socket

    @property
    def logs(self) -> Path:
        return self.run / "logs"

    @property
    def broker(self) -> Path:
        return self.run / "broker"

    @property
    def database(self) -> Path:
        return self.run / "server.db"

    @property
    def key_file(self) -> Path:
        return self.run / "server-keys.json"

    @property
    def admin_password(self) -> Path:
        return self.run / "admin-password"

    @property
    def admin_totp_secret(self) -> Path:
        return self.run / "admin-totp-secret"

    @property
    def clinician_password(self) -> Path:
        return self.run / "clinician-password"

    @property
    def clinician_totp_secret(self) -> Path:
        return self.run / "clinician-totp-secret"

    @property
    def gateway_dir(self) -> Path:
        return self.run / "gateway"

    @property
    def gateway_config(self) -> Path:
        return self.gateway_dir / "gateway.toml"

    @property
    def gateway_socket(self) -> Path:
        return self.socket_dir / "ingress.sock"

    @property
    def gateway_outbox(self) -> Path:
        return self.gateway_dir / "outbox.db"

    @property
    def agent_home(self) -> Path:
        return self.run / "agent"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"


def new_run_dir(base: Path, pki: Path) -> DemoPaths:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run = base.resolve() / f"run-{stamp}"
    suffix = 1
    while run.exists():  # two demos in the same second: never reuse a directory
        suffix += 1
        run = base.resolve() / f"run-{stamp}-{suffix}"
    run.mkdir(parents=True, mode=0o700)
    socket_dir = run / "gateway"
    if len(str(socket_dir / "ingress.sock")) > _MAX_SOCKET_PATH:
        # A Unix socket path cannot be that long: use a private short directory instead.
        socket_dir = Path(tempfile.mkdtemp(prefix="phd-demo-"))
    return DemoPaths(run=run, pki=pki.resolve(), socket_dir=socket_dir)


def prepare_pki(paths: DemoPaths) -> bool:
    """Create or complete the dev PKI and the demo gateway's certificate; True if created."""
    from hospital_server.pki.ca import generate_crls, init_pki, issue_gateway
    from hospital_server.pki.errors import PkiError
    from hospital_server.pki.layout import PkiLayout

    layout = PkiLayout(paths.pki)
    created = not layout.root_ca_cert.exists()
    try:
        init_pki(layout)
        if not layout.gateway_cert(GATEWAY_ID).exists():
            issue_gateway(layout, GATEWAY_ID)
        # Fresh CRLs every run: the broker refuses every client when its CRL is out of date.
        generate_crls(layout)
    except PkiError as exc:
        # e.g. CA keys under a passphrase, or the root key kept offline: not a dev PKI.
        raise DemoSetupError(
            f"the PKI in {paths.pki} cannot be used by the demo ({exc})",
            "the demo needs a dev PKI whose CA keys it can use: pass --pki with a new "
            "directory and it creates one",
        ) from exc
    return created


def prepare_broker(paths: DemoPaths, port: int) -> Path:
    """mosquitto.conf + dynamic-security.json (fresh for this run); the config path."""
    from hospital_server.broker.config import write_broker_config
    from hospital_server.pki.layout import PkiLayout

    files = write_broker_config(PkiLayout(paths.pki), paths.broker, port=port)
    return files.conf


def prepare_gateway_config(
    paths: DemoPaths, ports: Ports, *, tuning: UplinkTuning | None = None
) -> Path:
    """The gateway's TOML config (mobile_gateway.config format) for this run."""
    from hospital_server.pki.layout import PkiLayout
    from phd_cli.demo.stack import UplinkTuning

    layout = PkiLayout(paths.pki)
    t = tuning or UplinkTuning()
    paths.gateway_dir.mkdir(mode=0o700, exist_ok=True)
    body = "\n".join(
        [
            "# Generated by `phd demo` for this run.",
            "[gateway]",
            f'id = "{GATEWAY_ID}"',
            "[ingress]",
            f'socket = "{paths.gateway_socket}"',
            'mode = "0600"',
            "[outbox]",
            f'path = "{paths.gateway_outbox}"',
            "[broker]",
            f'host = "{BROKER_HOST}"',
            f"port = {ports.mqtt}",
            f'ca_file = "{layout.ca_cert("service")}"',
            f'cert_file = "{layout.gateway_chain(GATEWAY_ID)}"',
            f'key_file = "{layout.gateway_key(GATEWAY_ID)}"',
            "[uplink]",
            f"ack_timeout = {t.ack_timeout!r}",
            f"retry_base = {t.retry_base!r}",
            f"retry_cap = {t.retry_cap!r}",
            f"reconnect_base = {t.reconnect_base!r}",
            f"reconnect_cap = {t.reconnect_cap!r}",
            f"max_in_flight = {t.max_in_flight}",
            f"batch_max_count = {t.batch_max_count}",
            "[metrics]",
            'host = "127.0.0.1"',
            f"port = {ports.gateway_metrics}",
            "",
        ]
    )
    paths.gateway_config.write_text(body, encoding="utf-8")
    return paths.gateway_config


def server_env(paths: DemoPaths, ports: Ports) -> dict[str, str]:
    """The ``PHD_SERVER_*`` settings of the demo server and its ingest worker."""
    return {
        "PHD_SERVER_PROFILE": "dev",
        "PHD_SERVER_DATABASE_URL": paths.database_url,
        "PHD_SERVER_KEY_FILE": str(paths.key_file),
        "PHD_SERVER_PKI_DIR": str(paths.pki),
        "PHD_SERVER_MQTT_HOST": BROKER_HOST,
        "PHD_SERVER_MQTT_PORT": str(ports.mqtt),
    }


def prepare_server_db(paths: DemoPaths) -> StaffCredentials:
    """Key file, schema at head, bootstrap admin with a TOTP secret; returns the admin's
    credentials (kept in memory and in two 0600 files, never printed by this module)."""
    from hospital_server.auth.totp import new_secret, secret_base32
    from hospital_server.db import make_engine, make_session_factory, session_scope
    from hospital_server.keys import LocalKeyFileProvider
    from hospital_server.migrations import upgrade
    from hospital_server.staff import create_staff_user, provision_totp
    from phd_cli.demo.staff_login import StaffCredentials

    provider = LocalKeyFileProvider.create(paths.key_file)
    engine = make_engine(paths.database_url)
    try:
        upgrade(engine)
        password = secrets.token_urlsafe(18)
        totp_secret = new_secret()
        with session_scope(make_session_factory(engine)) as session:
            user = create_staff_user(session, ADMIN_USER, password, role="admin", actor="demo")
            provision_totp(session, provider, user, actor="demo", secret=totp_secret)
    except Exception as exc:
        raise DemoSetupError(
            f"preparing the demo database failed ({type(exc).__name__})",
            f"see {paths.run}; run with -v for details",
        ) from exc
    finally:
        engine.dispose()
    write_private(paths.admin_password, password)
    write_private(paths.admin_totp_secret, secret_base32(totp_secret))
    return StaffCredentials(username=ADMIN_USER, password=password, totp_secret=totp_secret)


def write_private(path: Path, text: str) -> None:
    """A new file only its owner can read (0600), holding ``text``; never overwrites."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text + "\n")
