"""``phd gateway``: run the edge gateway, or report its status from its outbox.

``run`` takes a TOML config (see mobile_gateway.config) or, for development, ``--pki`` and
``--name`` to take the gateway's certificate, key and the pinned service CA from a PKI
directory. ``status`` reads the outbox read-only: depth, oldest pending age, link state, last
ack, dead letters (ids and reasons only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("gateway", help="the edge gateway: local ingress, outbox, MQTT uplink")
    gw = p.add_subparsers(dest="gateway_command", metavar="GATEWAY_COMMAND", required=True)

    run = gw.add_parser("run", help="run the gateway until SIGTERM")
    run.add_argument("--config", type=Path, help="TOML settings file")
    run.add_argument("--pki", type=Path, help="dev: PKI directory with gateways/NAME.*")
    run.add_argument("--name", help="dev: the gateway name (certificate CN) in --pki")
    run.add_argument("--broker-host", help="broker host (must match its certificate)")
    run.add_argument("--broker-port", type=int)
    run.add_argument("--socket", type=Path, dest="socket_path", help="ingress Unix socket path")
    run.add_argument("--outbox", type=Path, dest="outbox_path", help="outbox SQLite file")
    run.add_argument("--metrics-port", type=int, help="loopback /metrics port (0: off)")
    run.add_argument("--ack-timeout", type=float, help="seconds to wait for a hospital ack")
    run.add_argument("--retry-base", type=float, help="first retry delay, seconds")
    run.add_argument("--reconnect-base", type=float, help="first reconnect delay, seconds")
    run.add_argument("--reconnect-cap", type=float, help="longest reconnect delay, seconds")
    run.set_defaults(handler=_run)

    status = gw.add_parser("status", help="outbox depth, oldest pending, link state, last ack")
    status.add_argument("--config", type=Path, help="TOML settings file (for the outbox path)")
    status.add_argument("--outbox", type=Path, dest="outbox_path", help="outbox SQLite file")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)


def _config(args: argparse.Namespace) -> Any:
    from mobile_gateway.config import GatewayConfig, load_config

    overrides = {
        "broker_host": args.broker_host,
        "broker_port": args.broker_port,
        "socket_path": args.socket_path,
        "outbox_path": args.outbox_path,
        "metrics_port": args.metrics_port,
        "ack_timeout": args.ack_timeout,
        "retry_base": args.retry_base,
        "reconnect_base": args.reconnect_base,
        "reconnect_cap": args.reconnect_cap,
    }
    if args.config is not None:
        return load_config(args.config, **overrides)
    if args.pki is None or args.name is None:
        raise SystemExit("phd gateway run: give --config FILE, or --pki DIR and --name NAME")
    from hospital_server.pki.layout import PkiLayout

    layout = PkiLayout(args.pki)
    values = {k: v for k, v in overrides.items() if v is not None}
    values.setdefault("broker_host", "localhost")
    values.setdefault("socket_path", Path(f"/tmp/phd-gateway-{args.name}/ingress.sock"))  # noqa: S108  # dev default only
    values.setdefault("outbox_path", Path(f"var/gateway-{args.name}/outbox.db"))
    return GatewayConfig(
        ca_file=layout.ca_cert("service"),
        cert_file=layout.gateway_chain(args.name),
        key_file=layout.gateway_key(args.name),
        **values,
    )


def _run(args: argparse.Namespace) -> int:
    from mobile_gateway.app import run_gateway
    from mobile_gateway.errors import ConfigError

    try:
        run_gateway(_config(args))
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    return 0


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mobile_gateway.config import load_config
    from mobile_gateway.errors import GatewayError
    from mobile_gateway.status import read_status

    console = Console()
    path = args.outbox_path
    if path is None and args.config is not None:
        path = load_config(args.config).outbox_path
    if path is None:
        console.print("[red]error:[/red] give --outbox FILE or --config FILE")
        return 2
    try:
        st = read_status(path)
    except GatewayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    data = {
        "depth": st.depth,
        "pending": st.pending,
        "in_flight": st.in_flight,
        "dead": st.dead,
        "bytes_queued": st.bytes_queued,
        "oldest_pending_age_s": st.oldest_pending_age,
        "done_total": st.done_total,
        "running": st.running,
        "link_state": st.link_state if st.running else f"{st.link_state} (not running)",
        "last_ack_age_s": st.last_ack_age,
        "dead_letters": [
            {"id": d.entry_id, "reason": d.reason, "attempts": d.attempts} for d in st.dead_letters
        ],
    }
    if args.json:
        console.print_json(json.dumps(data))
    else:
        for key, value in data.items():
            console.print(f"{key:>22}: {value}")
    return 0
