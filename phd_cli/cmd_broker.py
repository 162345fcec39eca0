"""``phd broker``: write the mosquitto configuration from the PKI, run a dev broker, and cut a
gateway off at run time. See docs/broker.md."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("broker", help="the hospital's MQTT broker (mosquitto): config, run")
    br = p.add_subparsers(dest="broker_command", metavar="BROKER_COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pki", type=Path, default=Path("certs/dev"), help="PKI directory")
    common.add_argument("--out", type=Path, default=Path("var/broker"), help="config directory")
    common.add_argument("--port", type=int, default=8883, help="TLS listener port")
    common.add_argument("--bind", default="127.0.0.1", help="listener address")
    common.add_argument("--user", help="user mosquitto drops to when started as root")

    cfg = br.add_parser("config", parents=[common], help="write mosquitto.conf + ACLs")
    cfg.add_argument(
        "--reset-acls",
        action="store_true",
        help="rewrite dynamic-security.json from the PKI (loses run-time changes)",
    )
    cfg.set_defaults(handler=_config)

    run = br.add_parser("run", parents=[common], help="dev: write the config and run mosquitto")
    run.set_defaults(handler=_run)

    off = br.add_parser(
        "disable-gateway", parents=[common], help="cut a gateway off now (live session too)"
    )
    off.add_argument("name", help="gateway name (certificate CN)")
    off.add_argument("--host", default="localhost", help="broker host name (certificate SAN)")
    off.set_defaults(handler=_disable)


def _write(args: argparse.Namespace, *, reset: bool = False) -> Any:
    from hospital_server.broker.config import write_broker_config
    from hospital_server.pki.layout import PkiLayout

    return write_broker_config(
        PkiLayout(args.pki),
        args.out,
        port=args.port,
        bind=args.bind,
        user=args.user,
        overwrite_dynsec=reset,
    )


def _config(args: argparse.Namespace) -> int:
    files = _write(args, reset=args.reset_acls)
    print(f"wrote {files.conf} and {files.dynsec}")
    print(f"run: mosquitto -c {files.conf}")
    return 0


def _run(args: argparse.Namespace) -> int:
    files = _write(args)
    os.execv("/usr/sbin/mosquitto", ["mosquitto", "-c", str(files.conf)])  # noqa: S606  # fixed binary


def _disable(args: argparse.Namespace) -> int:
    from hospital_server.broker.control import ControlSettings, disable_gateway
    from hospital_server.pki.layout import PkiLayout

    layout = PkiLayout(args.pki)
    disable_gateway(
        ControlSettings(
            host=args.host,
            port=args.port,
            ca_file=layout.ca_cert("service"),
            cert_file=layout.server_cert,
            key_file=layout.server_key,
        ),
        args.name,
    )
    print(f"gateway {args.name} disabled")
    return 0
