"""``phd demo``: run the whole path (PHD -> agent -> gateway -> broker -> hospital) locally.

Creates the dev PKI when missing, starts mosquitto, the server (SQLite, one ingest worker) and
one gateway as child processes on free loopback ports, enrolls six virtual PHDs to synthetic
patients through the real API, runs the agent with a live view, then prints a summary.
``--exit`` prints the summary as JSON and exits 0 only if every reading that left a virtual
device was committed exactly once (1 otherwise, 2 when the demo could not start). Output
carries device ids and counts only.

``phd demo enroll-virtual`` is the enrollment step on its own, for compose.yaml's devices
service: it registers the six virtual PHDs (seed 1, as ``phd agent run --virtual``) to
synthetic patients through a running server's API and enrolls them into an agent home; it
does nothing when the home already holds six credentials.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _positive(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 86_400.0:
        raise argparse.ArgumentTypeError("must be between 1 and 86400 seconds")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("not a TCP port")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline locally with six virtual PHDs")
    p.add_argument(
        "--duration", type=_positive, default=60.0, help="seconds to run the agent (default 60)"
    )
    p.add_argument(
        "--exit",
        dest="exit_after",
        action="store_true",
        help="print the summary as JSON and exit (0 only if every reading was committed once)",
    )
    p.add_argument(
        "--dir", type=Path, default=Path("var/demo"), help="where run directories go (var/demo)"
    )
    p.add_argument(
        "--pki", type=Path, default=Path("certs/dev"), help="dev PKI directory (certs/dev)"
    )
    p.add_argument("--mqtt-port", type=_port, default=None, help="broker port (default: free)")
    p.add_argument("--http-port", type=_port, default=None, help="API port (default: free)")
    p.add_argument(
        "--mosquitto", default="/usr/sbin/mosquitto", help="mosquitto binary (2.0 or newer)"
    )
    p.add_argument(
        "--poll", type=_positive, default=10.0, help="seconds between agent sessions per PHD"
    )
    p.set_defaults(handler=_demo)

    sub_demo = p.add_subparsers(dest="demo_command", metavar="DEMO_COMMAND", required=False)
    ev = sub_demo.add_parser(
        "enroll-virtual",
        help="register and enroll the six virtual PHDs with a running server (compose)",
    )
    ev.add_argument("--server", required=True, help="server URL (https://server:8443)")
    ev.add_argument("--root", type=Path, required=True, help="hospital root certificate (PEM)")
    ev.add_argument("--home", type=Path, required=True, help="agent home directory")
    ev.add_argument("--admin-user", default="admin", help="staff admin user name")
    ev.add_argument(
        "--admin-password-env",
        required=True,
        metavar="VAR",
        help="environment variable holding the admin password",
    )
    ev.add_argument(
        "--admin-totp-secret-env",
        required=True,
        metavar="VAR",
        help="environment variable holding the admin's base32 TOTP secret (the second factor)",
    )
    ev.set_defaults(handler=_enroll_virtual)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from phd_cli.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        duration=args.duration,
        exit_after=args.exit_after,
        base_dir=args.dir,
        pki_dir=args.pki,
        mqtt_port=args.mqtt_port,
        http_port=args.http_port,
        mosquitto=args.mosquitto,
        poll=args.poll,
    )
    return run_demo(options, Console())


def _enroll_virtual(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from rich.console import Console

    from hospital_server.auth.totp import parse_base32
    from phd_cli.demo.fleet import enroll_virtual
    from phd_cli.demo.procs import DemoSetupError
    from phd_cli.demo.staff_login import StaffCredentials

    console = Console()
    password = os.environ.get(args.admin_password_env, "")
    if not password:
        console.print(f"[red]error:[/red] ${args.admin_password_env} is empty or not set")
        return 2
    try:
        secret = parse_base32(os.environ.get(args.admin_totp_secret_env, ""))
    except ValueError as exc:
        console.print(f"[red]error:[/red] ${args.admin_totp_secret_env}: {exc}")
        return 2
    admin = StaffCredentials(username=args.admin_user, password=password, totp_secret=secret)
    try:
        enrolled = asyncio.run(
            enroll_virtual(
                server_url=args.server,
                root=args.root,
                home=args.home,
                admin=admin,
            )
        )
    except DemoSetupError as exc:
        console.print(f"[red]error:[/red] {exc}\n[bold]next:[/bold] {exc.hint}")
        return 2
    if not enrolled:
        console.print(f"agent home {args.home} already holds the six credentials")
    for phd in enrolled:
        console.print(f"enrolled {phd.kind}: device id {phd.device_id}")
    return 0
