"""``phd server``: operate the hospital server (init-keys, migrate, create-admin,
rotate-token-key, kek, run, ingest).

Settings come from ``PHD_SERVER_*`` environment variables (hospital_server.settings); the
``--dev`` flag selects the dev profile with embedded defaults (SQLite and a key file under
var/dev). Passwords (and an operator-chosen TOTP secret) are read from an environment variable
or prompted, never taken from the command line. Nothing here prints a key, a password or a
record; the one secret ever printed is a new admin's random TOTP secret, once, at creation,
because its owner must enroll it in an authenticator app.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import signal
import threading
from pathlib import Path
from typing import Any

from phd_cli import cmd_kek, cmd_quarantine


def add_parser(sub: Any) -> None:
    p = sub.add_parser("server", help="hospital server: storage, ingest workers, API")
    p.add_argument("--dev", action="store_true", help="dev profile: embedded defaults")
    cmds = p.add_subparsers(dest="server_command", metavar="SERVER_COMMAND", required=True)

    cmds.add_parser("init-keys", help="create the local key file (0600) if it does not exist")
    cmds.add_parser("migrate", help="bring the database schema to the latest revision")

    admin = cmds.add_parser("create-admin", help="create the bootstrap admin account")
    admin.add_argument("--username", default="admin")
    admin.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the password (default: prompt)",
    )
    admin.add_argument(
        "--if-missing",
        action="store_true",
        help="exit 0 without changes when an admin of this name exists (compose one-shots)",
    )
    admin.add_argument(
        "--totp-secret-env",
        metavar="VAR",
        help="environment variable holding a base32 TOTP secret (160+ bits) to use instead of "
        "printing a new random one (automation)",
    )

    cmds.add_parser(
        "rotate-token-key",
        help="new signing key for access tokens; the old one verifies until its tokens expire",
    )

    run = cmds.add_parser("run", help="serve the API (HTTPS) and run ingest workers")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8443)
    run.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="NAME",
        help="ingest worker identity to run in-process (repeatable; default: none)",
    )
    run.add_argument(
        "--no-tls",
        action="store_true",
        help="plain HTTP (only behind a TLS-terminating proxy on the same host)",
    )

    cmd_kek.add_parser(cmds)

    dispose = cmds.add_parser(
        "dispose",
        help="dispose of readings and quarantine past retention (docs/disposal.md; daily cron)",
    )
    dispose.add_argument("--batch", type=int, default=500, help="envelopes per transaction")
    erase = cmds.add_parser(
        "erase-patient",
        help="crypto-shred a patient and delete their readings (irreversible; docs/disposal.md)",
    )
    erase.add_argument("patient_id", metavar="PATIENT_ID")
    erase.add_argument(
        "--reason",
        required=True,
        help="patient_request, retention_ended, legal_order, enrolled_in_error, "
        "reapplied_after_restore",
    )

    ingest = cmds.add_parser("ingest", help="run ingest workers only (foreground)")
    ingest.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="NAME",
        help="ingest worker identity (repeatable; default ingest-1)",
    )
    ingest.add_argument(
        "--health-file",
        type=Path,
        metavar="PATH",
        help="keep PATH current with the workers' health, for `phd server ingest-health`",
    )
    health = cmds.add_parser(
        "ingest-health",
        help="probe: exit 0 if an ingest pool's health file is fresh and all is connected",
    )
    health.add_argument("health_file", type=Path, metavar="PATH")
    health.add_argument(
        "--max-age",
        type=float,
        default=None,  # hospital_server.ingest.health.DEFAULT_MAX_AGE (imported when run)
        metavar="SECONDS",
        help="oldest acceptable health file (default 15; the pool rewrites it every 5)",
    )
    for sp in (cmds.choices[name] for name in cmds.choices):
        sp.set_defaults(handler=_dispatch)
    cmd_quarantine.add_parser(cmds, _settings)  # after the loop: it sets its own handler


def _settings(args: argparse.Namespace) -> Any:
    from hospital_server.settings import Settings

    return Settings(profile="dev") if args.dev else Settings()


def _dispatch(args: argparse.Namespace) -> int:
    handlers = {
        "init-keys": _init_keys,
        "migrate": _migrate,
        "create-admin": _create_admin,
        "rotate-token-key": _rotate_token_key,
        "kek": lambda args: cmd_kek.run(_settings(args), args),
        "dispose": _dispose,
        "erase-patient": _erase_patient,
        "run": _run,
        "ingest": _ingest,
        "ingest-health": _ingest_health,
    }
    result: int = handlers[args.server_command](args)
    return result


def _init_keys(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.keys import LocalKeyFileProvider

    settings = _settings(args)
    path = settings.effective_key_file
    console = Console()
    if path.exists():
        LocalKeyFileProvider.load(path)  # refuses an unsafe or malformed file
        console.print(f"key file {path} exists and is valid; left unchanged")
        return 0
    provider = LocalKeyFileProvider.create(path)
    console.print(f"created key file {path} (mode 0600), KEK {provider.current_kek_id}")
    console.print("[yellow]back it up separately from the database backups[/yellow]")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.db import make_engine
    from hospital_server.migrations import current_revision, upgrade

    settings = _settings(args)
    if settings.profile == "dev":
        settings.effective_key_file.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
        Console().print(f"database at revision {current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def _create_admin(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.auth.totp import parse_base32
    from hospital_server.context import ServerContext
    from hospital_server.db import IntegrityError
    from hospital_server.staff import create_staff_user, provision_totp

    console = Console()
    settings = _settings(args)
    if args.if_missing:
        existing = _existing_role(settings, args.username)
        if existing == "admin":
            console.print(f"admin {args.username!r} exists; left unchanged")
            return 0
        if existing is not None:
            console.print(f"[red]error:[/red] {args.username!r} exists and is not an admin")
            return 2
    chosen_secret: bytes | None = None
    if args.totp_secret_env:
        try:
            chosen_secret = parse_base32(os.environ.get(args.totp_secret_env, ""))
        except ValueError as exc:
            console.print(f"[red]error:[/red] ${args.totp_secret_env}: {exc}")
            return 2
    if args.password_env:
        password = os.environ.get(args.password_env, "")
    else:
        password = getpass.getpass("new admin password: ")
        if getpass.getpass("again: ") != password:
            console.print("[red]passwords differ[/red]")
            return 2
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:
        with ctx.sessions() as session:
            user = create_staff_user(
                session, args.username, password, role="admin", actor="bootstrap"
            )
            provisioning = provision_totp(
                session, ctx.key_provider, user, actor="bootstrap", secret=chosen_secret
            )
            session.commit()
    except IntegrityError:
        # Another create-admin won the race for this username between our check and insert.
        if args.if_missing and _existing_role(settings, args.username) == "admin":
            console.print(f"admin {args.username!r} exists; left unchanged")
            return 0
        console.print("[red]error:[/red] a staff user with this name already exists")
        return 2
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    finally:
        ctx.close()
    console.print(f"admin {args.username!r} created (id {user.id})")
    if chosen_secret is not None:
        console.print(f"second factor: the TOTP secret from ${args.totp_secret_env}")
        return 0
    # Shown this once: the server keeps only the wrapped secret. No markup, no wrapping, so
    # the URI can be pasted into a QR generator or an authenticator app intact.
    console.print("second factor: add this TOTP secret to an authenticator app now")
    console.print("(it is shown only once; an admin can re-issue it):")
    console.print(f"  secret: {provisioning.secret_base32}", markup=False, highlight=False)
    console.print(f"  uri:    {provisioning.uri}", markup=False, highlight=False, soft_wrap=True)
    return 0


def _rotate_token_key(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server import audit
    from hospital_server.auth.tokens import TokenPolicy, rotate_signing_key
    from hospital_server.context import ServerContext
    from hospital_server.models import utcnow

    settings = _settings(args)
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:
        with ctx.sessions() as session:
            rotation = rotate_signing_key(
                session, ctx.key_provider, TokenPolicy.from_settings(settings), now=utcnow()
            )
            audit.record(
                session,
                "key.rotated",
                actor="operator",
                subject=rotation.new_kid,
                key="token-signing",
                retired=len(rotation.retired),
                deleted=len(rotation.deleted),
            )
            session.commit()
    finally:
        ctx.close()
    Console().print(
        f"token signing key {rotation.new_kid} now signs; retired {len(rotation.retired)} "
        f"(published until their tokens expire), deleted {len(rotation.deleted)} expired"
    )
    return 0


def _erase_patient(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.context import ServerContext
    from hospital_server.disposal import AlreadyErasedError, ErasureReason, erase_patient
    from hospital_server.patients import PatientNotFoundError
    from hospital_server.pki.layout import PkiLayout
    from hospital_server.revocation import PkiBrokerRevocations

    err = Console(stderr=True)
    try:
        reason = ErasureReason(args.reason)
    except ValueError:
        err.print(f"[red]error:[/red] --reason must be one of {', '.join(ErasureReason)}")
        return 2
    settings = _settings(args)
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:
        with ctx.sessions() as session:
            report = erase_patient(
                session, ctx.keys, args.patient_id, actor="operator", reason=reason
            )
            session.commit()
        if report.serials:  # the CRL, as a device revocation through the API does
            PkiBrokerRevocations(layout=PkiLayout(settings.pki_dir)).revoke_certificates(
                report.serials, reason="cessationOfOperation"
            )
    except PatientNotFoundError:
        err.print(f"[red]error:[/red] no patient {args.patient_id}")
        return 1
    except AlreadyErasedError:
        err.print(f"patient {args.patient_id} is already erased; nothing to do")
        return 0
    finally:
        ctx.close()
    Console().print(
        f"patient {report.patient_id} erased: data key destroyed, {report.envelopes} envelopes "
        f"({report.observations} readings) and {report.quarantined} quarantined envelopes "
        f"deleted, {report.devices_revoked} devices revoked"
    )
    return 0


def _dispose(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.context import ServerContext
    from hospital_server.disposal import DisposalReport, dispose_expired

    if not 1 <= args.batch <= 10_000:
        Console(stderr=True).print("[red]error:[/red] --batch must be between 1 and 10000")
        return 2
    console = Console()
    settings = _settings(args)
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:

        def progress(report: DisposalReport) -> None:
            console.print(f"  disposed so far: {report.envelopes} envelopes", end="\r")

        report = dispose_expired(
            ctx.sessions,
            readings=settings.retention_readings,
            quarantine=settings.retention_quarantine,
            batch=args.batch,
            progress=progress,
        )
    finally:
        ctx.close()
    console.print(
        f"disposed: {report.envelopes} envelopes ({report.observations} readings) sealed over "
        f"{settings.retention_readings.days} days ago, {report.quarantined} quarantined "
        f"envelopes over {settings.retention_quarantine.days} days old"
    )
    return 0


def _existing_role(settings: Any, username: str) -> str | None:
    """The role of the staff user called ``username``, or None when there is none."""
    from sqlmodel import col, select

    from hospital_server.db import make_engine, make_session_factory
    from hospital_server.models import StaffUser

    engine = make_engine(settings.effective_database_url)
    try:
        with make_session_factory(engine)() as session:
            role = session.exec(
                select(col(StaffUser.role)).where(StaffUser.username == username)
            ).first()
    finally:
        engine.dispose()
    return None if role is None else str(role)


def _context(args: argparse.Namespace) -> Any:
    from hospital_server.broker.control import ControlSettings
    from hospital_server.context import ServerContext
    from hospital_server.pki.layout import PkiLayout
    from hospital_server.revocation import PkiBrokerRevocations

    settings = _settings(args)
    layout = PkiLayout(settings.pki_dir)
    control = ControlSettings(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        ca_file=layout.ca_cert("service"),
        cert_file=layout.server_cert,
        key_file=layout.server_key,
    )
    return ServerContext.build(
        settings, revocations=PkiBrokerRevocations(layout=layout, control=control)
    )


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from hospital_server.app import create_app
    from hospital_server.ingest.runner import start_workers

    ctx = _context(args)
    pool = start_workers(ctx, args.worker) if args.worker else None
    if pool is not None:  # not ready until the workers can take envelopes
        ctx = dataclasses.replace(ctx, ingest_probe=pool.subscribed)
    app = create_app(ctx.settings, context=ctx)
    tls: dict[str, Any] = {}
    if not args.no_tls:
        tls = {
            "ssl_certfile": str(ctx.pki.server_chain),
            "ssl_keyfile": str(ctx.pki.server_key),
        }
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the
    # handler it found installed. With the default handler that kills the process before the
    # ingest workers disconnect from the broker; this handler lets the cleanup below run.
    previous = {
        sig: signal.signal(sig, lambda *_a: None) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", **tls)
    finally:
        if pool is not None:
            pool.shutdown()
        ctx.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from hospital_server.ingest.runner import start_workers

    ctx = _context(args)
    pool = start_workers(ctx, args.worker or ["ingest-1"], health_file=args.health_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        pool.shutdown()
        ctx.close()
    return 0


def _ingest_health(args: argparse.Namespace) -> int:
    """0 healthy, 1 not (each problem on stderr, so a probe's log says why)."""
    import time

    from rich.console import Console

    from hospital_server.ingest.health import DEFAULT_MAX_AGE, HealthFileError, judge, read_health

    max_age = DEFAULT_MAX_AGE if args.max_age is None else args.max_age
    try:
        problems = judge(read_health(args.health_file), now=time.time(), max_age=max_age)
    except HealthFileError as exc:
        problems = [f"{exc} ({args.health_file}): is `phd server ingest --health-file` running?"]
    for problem in problems:
        Console(stderr=True).print(f"[red]unhealthy:[/red] {problem}")
    if not problems:
        Console().print("ingest healthy")
    return 1 if problems else 0
