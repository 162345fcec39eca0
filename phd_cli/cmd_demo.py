"""``phd demo``: run the whole path (PHD -> agent -> gateway -> broker -> hospital) locally.

Creates the dev PKI when missing, starts mosquitto, the server (SQLite, one ingest worker) and
one gateway as child processes on free loopback ports, enrolls six virtual PHDs to synthetic
patients through the real API, runs the agent with a live view, then prints a summary.
``--exit`` prints the summary as JSON and exits 0 only if every reading that left a virtual
device was committed exactly once (1 otherwise, 2 when the demo could not start). Output
carries device ids and counts only.
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
