"""``phd agent``: enroll PHDs, scan, run the long-running agent, show its state.

``--virtual`` starts the six virtual PHDs (device_agent.virtual, on bumble) in this process
and hands bleak the bumble backend; everything else is the agent's unchanged code path. The
agent's home directory (credentials, spool) defaults to ``$PHD_AGENT_HOME`` or
``~/.local/share/phd-agent``; see docs/agent.md. Nothing here prints readings or keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device_agent.ble import BleBackends


# How long a session waits for the next value. A PHD sends the values of one session about a
# second apart at most (one per device-clock second; the virtual PHDs pace themselves the
# same way), so 2.5 s ends a session soon after its last value and never between two.
SESSION_IDLE = 2.5


def _idle(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 600.0:
        raise argparse.ArgumentTypeError("must be between 0.1 and 600 seconds")
    return value


def default_home() -> Path:
    env = os.environ.get("PHD_AGENT_HOME")
    return Path(env) if env else Path.home() / ".local" / "share" / "phd-agent"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="the device agent: enroll PHDs, scan, run, status")
    agent = p.add_subparsers(dest="agent_command", metavar="AGENT_COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, default=None, help="agent home directory")
    common.add_argument(
        "--virtual",
        action="store_true",
        help="start the six virtual PHDs (bumble) in this process and use them",
    )
    common.add_argument("--virtual-seed", type=int, default=1, help="seed of the virtual PHDs")
    common.add_argument(
        "--virtual-records", type=int, default=20, help="stored records on the virtual meter"
    )
    common.add_argument(
        "--virtual-record-interval",
        type=float,
        default=0.0,
        help="seconds between stored records sent by the virtual meter (slow transfers)",
    )

    scan = agent.add_parser("scan", parents=[common], help="list PHDs advertising health services")
    scan.add_argument("--duration", type=float, default=5.0, help="seconds to scan (default 5)")
    scan.set_defaults(handler=_scan)

    enroll = agent.add_parser(
        "enroll", parents=[common], help="create a device credential with a one-time code"
    )
    enroll.add_argument("--server", required=True, help="hospital server URL (https://...)")
    enroll.add_argument("--code", required=True, help="one-time enrollment code from the clinic")
    enroll.add_argument(
        "--root", type=Path, required=True, help="the hospital root certificate to pin (PEM)"
    )
    which = enroll.add_mutually_exclusive_group(required=True)
    which.add_argument("--address", help="BLE address of the PHD to enroll")
    which.add_argument(
        "--kind",
        choices=[
            "blood_pressure",
            "glucose",
            "thermometer",
            "weight",
            "heart_rate",
            "pulse_oximeter",
        ],
        help="enroll the first PHD found of this kind",
    )
    enroll.set_defaults(handler=_enroll)

    run = agent.add_parser("run", parents=[common], help="read enrolled PHDs, seal, hand off")
    run.add_argument("--gateway", type=Path, required=True, help="gateway ingress Unix socket")
    run.add_argument("--once", action="store_true", help="one session per PHD, deliver, exit")
    run.add_argument("--poll", type=float, default=30.0, help="seconds between sessions")
    run.add_argument("--batch-max", type=int, default=64, help="readings per envelope")
    run.add_argument(
        "--session-idle",
        type=_idle,
        default=SESSION_IDLE,
        help="end a session after this many seconds without a value (default %(default)s; "
        "must exceed the PHDs' gap between two values)",
    )
    run.add_argument(
        "--allow-unencrypted",
        action="store_true",
        help="accept PHDs that cannot pair (readings are flagged); off by default",
    )
    run.add_argument("--renew-server", help="server URL for automatic credential renewal")
    run.set_defaults(handler=_run)

    status = agent.add_parser("status", parents=[common], help="credentials and spool state")
    status.set_defaults(handler=_status)


@contextlib.asynccontextmanager
async def _backends(args: argparse.Namespace) -> AsyncIterator[BleBackends]:
    from device_agent.ble import BleBackends

    if not args.virtual:
        yield BleBackends()
        return
    from device_agent.virtual.bleak_backend import bleak_backends
    from device_agent.virtual.phds import start_fleet
    from device_agent.virtual.radio import VirtualRadio

    radio = VirtualRadio()
    # Live values at the devices' default pacing (LIVE_INTERVAL: one per device-clock
    # second at most, as a real PHD), the same as `phd demo`.
    fleet = await start_fleet(
        radio,
        seed=args.virtual_seed,
        live_count=3,
        glucose_records=args.virtual_records,
        record_interval=args.virtual_record_interval,
    )
    client, scanner = bleak_backends(radio)
    try:
        yield BleBackends(client=client, scanner=scanner)
    finally:
        for phd in fleet:
            await phd.stop()
        await radio.close()


def _home(args: argparse.Namespace) -> Path:
    return args.home if args.home is not None else default_home()


def _scan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from device_agent.ble import scan

    async def go() -> int:
        async with _backends(args) as backends:
            found = await scan(backends, duration=args.duration)
        table = Table(title=f"{len(found)} PHD(s)")
        for col in ("address", "name", "services", "rssi"):
            table.add_column(col)
        for d in found:
            table.add_row(d.address, d.name or "", ", ".join(d.kinds), str(d.rssi))
        Console().print(table)
        return 0

    return asyncio.run(go())


def _enroll(args: argparse.Namespace) -> int:
    from rich.console import Console

    from device_agent.ble import PhdLink, SecurityPolicy, scan
    from device_agent.enroll import EnrollClient
    from device_agent.errors import AgentError
    from device_agent.store import AgentHome, PhdInfo

    console = Console()

    async def go() -> int:
        root = await asyncio.to_thread(args.root.read_bytes)
        async with _backends(args) as backends:
            address = args.address
            kind = args.kind or ""
            if address is None:
                found = [d for d in await scan(backends, duration=2.0) if args.kind in d.kinds]
                if not found:
                    console.print(f"[red]error:[/red] no {args.kind} PHD is advertising")
                    return 1
                address = found[0].address
            link = await PhdLink.open(address, backends, SecurityPolicy())
            try:
                info = await link.device_information()
                kind = kind or ",".join(link.kinds())
            finally:
                await link.close()
        phd = PhdInfo(address=address, kind=kind, **info)
        client = EnrollClient(args.server, pinned_root_pem=root)
        credential = await client.enroll(code=args.code, phd=phd, home=AgentHome(_home(args)))
        console.print(f"enrolled: device id {credential.device_id} ({kind})")
        return 0

    try:
        return asyncio.run(go())
    except AgentError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


def _run(args: argparse.Namespace) -> int:
    import logging

    from rich.console import Console

    from device_agent.agent import Agent, AgentConfig
    from device_agent.ble import SecurityPolicy
    from device_agent.errors import AgentError
    from device_agent.store import AgentHome

    console = Console(stderr=True)
    home = _home(args)
    config = AgentConfig(
        home=home,
        gateway_socket=args.gateway,
        policy=SecurityPolicy(require_encryption=not args.allow_unencrypted),
        poll_interval=args.poll,
        batch_max=args.batch_max,
        session_idle=args.session_idle,
    )

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with _backends(args) as backends:
            agent = Agent(config, backends)
            if args.renew_server:
                await _renew_due(agent, args.renew_server)
            await agent.run(stop, once=args.once)
            for report in agent.reports:
                logging.getLogger("phd.agent").info(
                    "session %s: %d readings, %d envelopes, error=%s",
                    report.device_id,
                    report.readings,
                    report.envelopes,
                    report.error,
                )
        return 0

    try:
        with AgentHome(home).instance_lock():
            return asyncio.run(go())
    except AgentError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


async def _renew_due(agent: Any, server: str) -> None:
    from device_agent.enroll import EnrollClient, needs_renewal

    for credential in await asyncio.to_thread(agent.home.credentials):
        cert = await asyncio.to_thread(credential.cert_path.read_bytes)
        if needs_renewal(cert, now=datetime.now(UTC)):
            root = await asyncio.to_thread(credential.root_path.read_bytes)
            await EnrollClient(server, pinned_root_pem=root).renew(credential)


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from device_agent.spool import Spool
    from device_agent.store import AgentHome
    from phd_protocol.pki import load_certificate

    home = AgentHome(_home(args))
    console = Console()
    table = Table(title=f"agent home {home.root}")
    for col in ("device id", "kind", "address", "seq reserved", "RACP cursor", "cert expires"):
        table.add_column(col)
    for credential in home.credentials():
        cert = load_certificate(credential.cert_path.read_bytes())
        table.add_row(
            credential.device_id,
            credential.phd.kind,
            credential.phd.address,
            str(credential.seq_reserved),
            "-" if credential.racp_next is None else str(credential.racp_next),
            cert.not_valid_after_utc.date().isoformat(),
        )
    console.print(table)
    spool = Spool(home.spool_dir)
    rejected = len(list(spool.rejected_dir.glob("*.env"))) if spool.rejected_dir.is_dir() else 0
    console.print(f"spool: {spool.depth()} envelope(s) waiting, {rejected} rejected")
    return 0
