"""Entry point of the ``phd`` console script: argument parsing, logging set-up, dispatch."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

# Sub-command modules, in the order `phd --help` lists them. Each must import nothing heavy at
# module level (see phd_cli/__init__.py).
COMMAND_MODULES: tuple[str, ...] = (
    "phd_cli.cmd_decode",
    "phd_cli.cmd_pki",
    "phd_cli.cmd_envelope",
    "phd_cli.cmd_agent",
    "phd_cli.cmd_gateway",
    "phd_cli.cmd_broker",
    "phd_cli.cmd_server",
    "phd_cli.cmd_audit",
    "phd_cli.cmd_export",
    "phd_cli.cmd_demo",
    "phd_cli.cmd_bench",
)

# Third-party top-level module -> the extra that installs it.
EXTRA_FOR_MODULE: dict[str, str] = {
    "bleak": "agent",
    "bumble": "agent",
    "httpx": "agent",
    "paho": "gateway",
    "prometheus_client": "gateway",
    "fastapi": "server",
    "uvicorn": "server",
    "sqlmodel": "server",
    "sqlalchemy": "server",
    "alembic": "server",
    "jwt": "server",
    "pydantic_settings": "server",
    "psycopg": "server",
    "qrcode": "server",
}

Handler = Callable[[argparse.Namespace], int]

err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phd",
        description="Secure telemetry from Bluetooth personal health devices to a hospital.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # this command is not built yet in this checkout
                continue
            raise
        module.add_parser(sub)
    return parser


def install_hint(exc: ModuleNotFoundError) -> str | None:
    """Name the extra that provides a missing third-party module, if we know it."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_FOR_MODULE.get(top)
    if extra is None:
        return None
    return (
        f"this command needs the '{extra}' extra (missing module '{top}'): "
        f"pip install 'phd-telemetry[{extra}]'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except ModuleNotFoundError as exc:
        hint = install_hint(exc)
        if hint is None:
            raise
        err_console.print(f"[red]error:[/red] {hint}")
        return 3
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
