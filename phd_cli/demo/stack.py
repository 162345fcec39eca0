"""The hospital side of the demo as one object: mosquitto, the server with its ingest worker,
one gateway; each started, killed and restarted on its own.

What it is for: ``phd demo``, the end-to-end fault tests and ``phd bench e2e`` all need the
same three children started in the same order with the same readiness checks (a mutual-TLS
handshake, ``GET /readyz``, the ingress socket accepting), and the fault tests and the bench
need to kill one (SIGKILL, as a crash) or stop it (SIGTERM) and bring it back on the same
ports, with the same files, while the rest keeps running. Preparation (PKI, broker config,
database, gateway config) happens once per run directory; a restart reuses it.

What it must never do: signal a process it did not start (only the supervisor's children), or
print a password, a key or a reading.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phd_cli.demo import ready, setup
from phd_cli.demo.procs import Child, Supervisor

if TYPE_CHECKING:
    from phd_cli.demo.staff_login import StaffCredentials

__all__ = ["PARTS", "Stack", "UplinkTuning"]

PARTS = ("broker", "server", "gateway")
_CHILD_NAMES = {"broker": "mosquitto", "server": "server", "gateway": "gateway"}


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkTuning:
    """The gateway's uplink timing (mobile_gateway.config ``[uplink]``) for a local run."""

    # Short waits: a local run lasts minutes, not weeks (the production defaults are 30 s
    # ack timeout and retries up to 5 minutes apart).
    ack_timeout: float = 10.0
    retry_base: float = 0.5
    retry_cap: float = 5.0
    reconnect_base: float = 0.5
    reconnect_cap: float = 5.0
    max_in_flight: int = 3  # as the gateway default: a deeper window queues batches at the worker
    batch_max_count: int = 64


def phd_argv(*args: str) -> list[str]:
    # The same interpreter and installation as this process, whatever PATH says.
    # -v: INFO logs in each child's log file (ids, counts and reasons only, never values).
    return [sys.executable, "-m", "phd_cli.main", "-v", *args]


class Stack:
    """mosquitto + server (one ingest worker) + one gateway, in one run directory.

    ``worker`` runs inside the server process (``phd server run --worker``; None: the API
    alone); each name in ``ingest_processes`` runs as its own ``phd server ingest`` process,
    as compose.yaml deploys them (started and stopped with the server).
    """

    def __init__(
        self,
        *,
        paths: setup.DemoPaths,
        ports: setup.Ports,
        mosquitto: str,
        supervisor: Supervisor,
        tuning: UplinkTuning | None = None,
        worker: str | None = "ingest-1",
        ingest_processes: tuple[str, ...] = (),
    ) -> None:
        from hospital_server.pki.layout import PkiLayout

        self.paths = paths
        self.ports = ports
        self.mosquitto = mosquitto
        self.supervisor = supervisor
        self.tuning = tuning or UplinkTuning()
        self.worker = worker
        self.ingest_processes = ingest_processes
        self.layout = PkiLayout(paths.pki)
        self.api = f"https://{setup.BROKER_HOST}:{ports.http}"
        self._broker_conf: Path | None = None
        self._gateway_configured = False
        self._trust: ssl.SSLContext | None = None
        self.admin: StaffCredentials | None = None

    @property
    def trust(self) -> ssl.SSLContext:
        """TLS trust for the server's API: the dev root only."""
        if self._trust is None:
            self._trust = ssl.create_default_context(cafile=str(self.layout.root_ca_cert))
        return self._trust

    # ------------------------------------------------------------------ preparation
    async def prepare_pki(self) -> bool:
        """The dev PKI (created if missing) and the gateway certificate; True if created."""
        return await asyncio.to_thread(setup.prepare_pki, self.paths)

    async def prepare_database(self) -> StaffCredentials:
        """Key file, schema at head, bootstrap admin; the admin's password and TOTP secret
        (kept in memory)."""
        self.admin = await asyncio.to_thread(setup.prepare_server_db, self.paths)
        return self.admin

    # ------------------------------------------------------------------ children
    def child(self, part: str) -> Child | None:
        name = _CHILD_NAMES[part]
        return next((c for c in self.supervisor.children if c.name == name), None)

    async def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        # fork/exec and opening the log file block: off the event loop.
        return await asyncio.to_thread(self.supervisor.start, name, argv, env=env, cwd=cwd)

    async def start_broker(self) -> Child:
        if self._broker_conf is None:
            self._broker_conf = await asyncio.to_thread(
                setup.prepare_broker, self.paths, self.ports.mqtt
            )
        broker = await self._spawn("mosquitto", [self.mosquitto, "-c", str(self._broker_conf)])
        service = ready.mtls_context(
            self.layout.ca_bundle, self.layout.server_cert, self.layout.server_key
        )
        await ready.wait_mtls(
            "127.0.0.1",
            self.ports.mqtt,
            service,
            server_hostname=setup.BROKER_HOST,
            child=broker,
        )
        return broker

    async def start_server(self) -> Child:
        if self.admin is None:
            await self.prepare_database()
        env = setup.server_env(self.paths, self.ports)
        argv = ["server", "run", "--host", "127.0.0.1", "--port", str(self.ports.http)]
        if self.worker is not None:
            argv += ["--worker", self.worker]
        server = await self._spawn("server", phd_argv(*argv), env=env, cwd=self.paths.run)
        await ready.wait_http_ok(f"{self.api}/readyz", child=server, verify=self.trust)
        for name in self.ingest_processes:
            health = self.paths.run / f"{name}-health.json"
            worker = await self._spawn(
                name,
                phd_argv("server", "ingest", "--worker", name, "--health-file", str(health)),
                env=env,
                cwd=self.paths.run,
            )
            await ready.wait_ingest_healthy(health, child=worker)
        return server

    def processes(self) -> dict[str, int]:
        """The running parts by name (broker, server, each ingest process, gateway): their
        process ids, which lead their process groups."""
        names = {v: k for k, v in _CHILD_NAMES.items()}
        return {names.get(c.name, c.name): c.pid for c in self.supervisor.children}

    async def start_gateway(self) -> Child:
        if not self._gateway_configured:
            await asyncio.to_thread(
                setup.prepare_gateway_config, self.paths, self.ports, tuning=self.tuning
            )
            self._gateway_configured = True
        gateway = await self._spawn(
            "gateway",
            phd_argv("gateway", "run", "--config", str(self.paths.gateway_config)),
            cwd=self.paths.run,
        )
        await ready.wait_unix_socket(self.paths.gateway_socket, child=gateway)
        return gateway

    async def start(self, part: str) -> Child:
        if part == "broker":
            return await self.start_broker()
        if part == "server":
            return await self.start_server()
        if part == "gateway":
            return await self.start_gateway()
        raise ValueError(f"unknown part {part!r}; one of {PARTS}")

    async def stop(self, part: str, sig: signal.Signals = signal.SIGKILL) -> int | None:
        """Signal one part's process group (SIGKILL: a crash) and wait until it is gone."""
        child = self.child(part)
        if child is None:
            raise ValueError(f"{part} is not running")
        if part == "server":  # its separate ingest processes go with it (and come back with it)
            for worker in [c for c in self.supervisor.children if c.name in self.ingest_processes]:
                await asyncio.to_thread(self.supervisor.stop_one, worker, sig)
        return await asyncio.to_thread(self.supervisor.stop_one, child, sig)

    async def restart(self, part: str, sig: signal.Signals = signal.SIGKILL) -> Child:
        """Stop one part with ``sig`` and start it again on the same ports and files."""
        await self.stop(part, sig)
        return await self.start(part)
