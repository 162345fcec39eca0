"""``phd demo`` from start to summary: the order of things and the rules for stopping.

Order (each step waits for real readiness before the next)::

    dev PKI (create if missing) + demo gateway certificate + fresh CRLs
    -> broker config from the PKI -> mosquitto (child)        ready: mutual-TLS handshake
    -> server key file, schema at head, bootstrap admin
    -> `phd server run --worker ingest-1` (child, HTTPS)      ready: GET /readyz = 200
    -> `phd gateway run --config ...` (child)                 ready: ingress socket accepts
    -> six virtual PHDs (bumble, in-process); patients, consent, device registration through
       the API as the admin; agent enrollment with the one-time codes (POST /api/v1/enroll)
    -> a clinician on every demo patient's care team (through the admin API)
    -> the device agent (in-process) for --duration seconds, live view
    -> stop the agent (sessions finish and are sealed), deliver its spool, wait until the
       gateway's outbox is acknowledged and the hospital has committed what was sealed
    -> the clinician logs in (password + TOTP) and reads every patient's observations back
       as FHIR; each device's count must equal its committed rows
    -> summary; without --exit, keep everything up until Ctrl-C

Every child is stopped (SIGTERM, then SIGKILL) by :class:`~phd_cli.demo.procs.Supervisor` on
every way out: normal end, an exception, Ctrl-C or SIGTERM. This module must never print a
reading, a name or a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import httpx
from rich.console import Console
from rich.live import Live

from phd_cli.demo import setup
from phd_cli.demo.clinician import add_clinician, fhir_counts
from phd_cli.demo.fleet import enroll_all, make_agent, run_agent, virtual_fleet
from phd_cli.demo.procs import (
    DemoSetupError,
    Supervisor,
    check_port_free,
    free_port,
    require_binary,
)
from phd_cli.demo.stack import Stack
from phd_cli.demo.staff_login import StaffLogin
from phd_cli.demo.stats import (
    IngestCounts,
    Snapshot,
    collect,
    parse_server_metrics,
    settled,
    verdict,
)
from phd_cli.demo.view import (
    AuditState,
    Endpoints,
    live_table,
    summary_json,
    summary_text,
)

__all__ = ["DemoOptions", "judge", "report_scripted", "run_demo"]

TICK = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    duration: float = 60.0
    exit_after: bool = False
    base_dir: Path = Path("var/demo")
    pki_dir: Path = Path("certs/dev")
    mqtt_port: int | None = None
    http_port: int | None = None
    mosquitto: str = "/usr/sbin/mosquitto"
    poll: float = 10.0  # seconds between agent sessions with one PHD
    drain_timeout: float = 60.0
    glucose_records: int = 20


def _ports(options: DemoOptions) -> setup.Ports:
    if options.mqtt_port is not None:
        check_port_free(options.mqtt_port, what="MQTT broker")
    if options.http_port is not None:
        check_port_free(options.http_port, what="server API")
    return setup.Ports(
        mqtt=options.mqtt_port or free_port(),
        http=options.http_port or free_port(),
        gateway_metrics=free_port(),
    )


def run_demo(options: DemoOptions, console: Console) -> int:
    """The whole demo; the exit status (0 only if every reading was committed once)."""
    from hospital_server.broker.config import DYNSEC_PLUGIN

    err = Console(stderr=True)
    try:
        mosquitto = require_binary(options.mosquitto, package="mosquitto")
        if not DYNSEC_PLUGIN.exists():
            raise DemoSetupError(
                f"the mosquitto dynamic-security plugin is missing ({DYNSEC_PLUGIN})",
                "install mosquitto 2.0 or newer from your distribution (apt-get install mosquitto)",
            )
        ports = _ports(options)
        paths = setup.new_run_dir(options.base_dir, options.pki_dir)
    except DemoSetupError as exc:
        err.print(f"[red]error:[/red] {exc}\n[bold]next:[/bold] {exc.hint}")
        return 2
    supervisor = Supervisor(paths.logs)
    received: list[int] = []  # SIGTERM / SIGHUP that ended the demo
    try:
        return asyncio.run(
            _demo(
                options=options,
                paths=paths,
                ports=ports,
                mosquitto=mosquitto,
                supervisor=supervisor,
                console=console,
                err=err,
                received=received,
            )
        )
    except DemoSetupError as exc:
        err.print(f"[red]error:[/red] {exc}\n[bold]next:[/bold] {exc.hint}")
        return 2
    except asyncio.CancelledError:  # SIGTERM or SIGHUP (the terminal went away)
        with contextlib.suppress(OSError):
            err.print("stopped")
        return 128 + (received[0] if received else signal.SIGTERM)
    finally:
        supervisor.stop_all()
        if paths.socket_dir != paths.gateway_dir:  # the short directory made for the socket
            with contextlib.suppress(OSError):
                paths.gateway_socket.unlink(missing_ok=True)
                paths.socket_dir.rmdir()


async def _demo(
    *,
    options: DemoOptions,
    paths: setup.DemoPaths,
    ports: setup.Ports,
    mosquitto: str,
    supervisor: Supervisor,
    console: Console,
    err: Console,
    received: list[int],
) -> int:
    task = asyncio.current_task()
    assert task is not None

    def on_signal(sig: int) -> None:
        # Unwind through every context manager (fleet, agent), then the supervisor stops
        # the children; Ctrl-C (SIGINT) takes the same path through asyncio.run.
        received.append(sig)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)
    say = err.print if options.exit_after else console.print
    stack = Stack(paths=paths, ports=ports, mosquitto=mosquitto, supervisor=supervisor)
    layout = stack.layout

    say(f"[bold]phd demo[/bold]: run directory {paths.run}")
    created = await stack.prepare_pki()
    say(f"PKI {'created' if created else 'reused'} in {paths.pki}")

    await stack.start_broker()
    say(f"broker up on port {ports.mqtt} (mutual TLS, dynamic-security ACLs)")

    admin = await stack.prepare_database()
    await stack.start_server()
    api, trust = stack.api, stack.trust
    say(f"server up: {api} (SQLite {paths.database}, ingest worker {stack.worker})")

    await stack.start_gateway()
    say(f"gateway {setup.GATEWAY_ID} up (outbox {paths.gateway_outbox})")

    endpoints = Endpoints(
        api=api,
        gateway_metrics=f"http://127.0.0.1:{ports.gateway_metrics}/metrics",
        database=paths.database,
        root_ca=layout.root_ca_cert,
        admin_user=setup.ADMIN_USER,
        admin_password_file=paths.admin_password,
        admin_totp_file=paths.admin_totp_secret,
        logs=paths.logs,
        run_dir=paths.run,
        mqtt_port=ports.mqtt,
    )
    root_pem = await asyncio.to_thread(layout.root_ca_cert.read_bytes)
    async with (
        contextlib.AsyncExitStack() as exits,
        virtual_fleet(glucose_records=options.glucose_records) as fleet,
    ):
        admin_login = StaffLogin(admin)  # one session: a TOTP code is good once
        await enroll_all(
            fleet,
            server_url=api,
            admin=admin,
            root_pem=root_pem,
            agent_home=paths.agent_home,
            verify=trust,
            login=admin_login,
        )
        say(f"{len(fleet.enrolled)} virtual PHDs enrolled to synthetic patients (with consent)")
        clinician = await add_clinician(api, admin_login, fleet.enrolled, paths, verify=trust)
        endpoints = replace(
            endpoints,
            clinician_user=clinician.username,
            clinician_password_file=paths.clinician_password,
            clinician_totp_file=paths.clinician_totp_secret,
        )
        say(f"clinician {clinician.username} on every demo patient's care team")
        agent = make_agent(
            fleet,
            agent_home=paths.agent_home,
            gateway_socket=paths.gateway_socket,
            poll=options.poll,
        )
        stop = asyncio.Event()
        agent_task = asyncio.create_task(run_agent(agent, stop))

        metrics_client = httpx.AsyncClient(base_url=api, verify=trust, timeout=2.0)
        exits.push_async_callback(metrics_client.aclose)
        last_ingest = IngestCounts()

        async def snap() -> Snapshot:
            nonlocal last_ingest
            snapshot = await asyncio.to_thread(
                collect, fleet, agent, database=paths.database, outbox=paths.gateway_outbox
            )
            try:
                response = await metrics_client.get("/metrics")
                if response.status_code == 200:
                    last_ingest = parse_server_metrics(response.text)
            except httpx.HTTPError:
                pass  # keep the last good reading; the database counts are authoritative
            snapshot.ingest = last_ingest
            return snapshot

        started = time.monotonic()
        snapshot = await snap()
        live_console = err if options.exit_after else console
        with Live(console=live_console, refresh_per_second=4, transient=False) as live:
            while (elapsed := time.monotonic() - started) < options.duration:
                supervisor.check()
                if agent_task.done():
                    agent_task.result()  # an agent failure surfaces here
                    break
                snapshot = await snap()
                live.update(
                    live_table(
                        snapshot, elapsed=elapsed, duration=options.duration, phase="running"
                    )
                )
                await asyncio.sleep(TICK)
            stop.set()
            drain_started = time.monotonic()
            while True:
                supervisor.check()
                if agent_task.done():
                    agent_task.result()
                    snapshot = await snap()
                    if settled(snapshot):
                        break
                waited = time.monotonic() - drain_started
                if waited > options.drain_timeout:
                    break
                snapshot = await snap()
                live.update(
                    live_table(
                        snapshot,
                        elapsed=time.monotonic() - started,
                        duration=options.duration,
                        phase="draining",
                    )
                )
                await asyncio.sleep(TICK)
            if not agent_task.done():
                agent_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await agent_task
            snapshot = await snap()
            live.update(
                live_table(
                    snapshot,
                    elapsed=time.monotonic() - started,
                    duration=options.duration,
                    phase="done",
                )
            )

        live_console.print()  # the live region ends without a newline on a plain stream
        # The end of the path: the clinician reads every committed reading back as FHIR.
        read_back = await fhir_counts(api, clinician, fleet.enrolled, verify=trust)
    # And the audit trail of all of it (enrollments, logins, reads): the chain recomputed.
    audit = await asyncio.to_thread(audit_trail, paths)
    problems = judge(snapshot, read_back, audit)
    fhir_read = sum(read_back.values())
    if options.exit_after:
        return report_scripted(
            snapshot,
            problems,
            endpoints,
            duration=options.duration,
            fhir_read=fhir_read,
            audit=audit,
            out=sys.stdout,
        )
    console.print(summary_text(snapshot, problems, endpoints, fhir_read=fhir_read, audit=audit))
    console.print("[bold]the server, broker and gateway stay up: press Ctrl-C to stop[/bold]")
    while True:  # until Ctrl-C (KeyboardInterrupt) or SIGTERM (cancel)
        supervisor.check()
        await asyncio.sleep(1.0)


def judge(snapshot: Snapshot, read_back: dict[str, int], audit: AuditState) -> list[str]:
    """The run's problems: the verdict, the FHIR read-back per device, the audit trail."""
    problems = verdict(snapshot) + [
        f"device {d.device_id}: {read_back.get(d.device_id, 0)} of {d.observations} "
        "stored observations read back through /fhir"
        for d in snapshot.devices
        if read_back.get(d.device_id, 0) != d.observations
    ]
    if not audit.intact:
        problems.append(f"audit trail: {audit.problem_count} problems (phd audit verify)")
    return problems


def report_scripted(
    snapshot: Snapshot,
    problems: list[str],
    endpoints: Endpoints,
    *,
    duration: float,
    fhir_read: int,
    audit: AuditState,
    out: TextIO,
) -> int:
    """``--exit``: the JSON summary (problems included) on ``out``; 0 only without problems."""
    doc = summary_json(
        snapshot, problems, endpoints, duration=duration, fhir_read=fhir_read, audit=audit
    )
    out.write(json.dumps(doc, indent=2) + "\n")
    out.flush()
    return 0 if not problems else 1


def audit_trail(paths: setup.DemoPaths) -> AuditState:
    """``phd audit verify`` on the demo's database, with its key file."""
    from hospital_server.auditlog import verify
    from hospital_server.db import make_engine, make_session_factory
    from hospital_server.keys import LocalKeyFileProvider

    engine = make_engine(paths.database_url)
    try:
        report = verify(make_session_factory(engine), LocalKeyFileProvider.load(paths.key_file))
    finally:
        engine.dispose()
    return AuditState(
        entries=report.entries,
        checkpoints=report.checkpoints,
        intact=report.intact,
        problem_count=report.problem_count,
        command=(
            f"PHD_SERVER_DATABASE_URL={paths.database_url} "
            f"PHD_SERVER_KEY_FILE={paths.key_file} phd audit verify"
        ),
    )
