"""Readiness waits for the demo's children: a real handshake or request, never a sleep.

What it is for: mosquitto is ready when a full mutual-TLS handshake with a service identity
succeeds; the server when ``GET /readyz`` answers 200 (database and broker reachable); the
gateway when its ingress Unix socket accepts a connection. Each wait also watches the child
and fails at once, naming its log, if the child died.

What it must never do: send application data (the gateway ingress gets a connection and an
immediate close, no frame), or wait without a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from phd_cli.demo.procs import Child, DemoSetupError

__all__ = ["wait_http_ok", "wait_ingest_healthy", "wait_mtls", "wait_unix_socket"]

_STEP = 0.1


async def _until(
    what: str, probe: Callable[[], Awaitable[bool]], child: Child | None, within: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if child is not None:
            child.check()
        if await probe():
            return
        if loop.time() > deadline:
            hint = f"read its log: {child.log_path}" if child is not None else "check the logs"
            raise DemoSetupError(f"{what} was not ready within {within:.0f} s", hint)
        await asyncio.sleep(_STEP)


def mtls_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


async def wait_mtls(
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    *,
    server_hostname: str,
    child: Child | None,
    within: float = 15.0,
) -> None:
    async def probe() -> bool:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname),
                timeout=2.0,
            )
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        return True

    await _until(f"the broker on port {port}", probe, child, within)


async def wait_http_ok(
    url: str,
    *,
    child: Child | None,
    verify: ssl.SSLContext | bool = True,
    within: float = 30.0,
    what: str = "the server",
) -> None:
    async with httpx.AsyncClient(timeout=2.0, verify=verify) as client:

        async def probe() -> bool:
            try:
                response = await client.get(url)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        await _until(what, probe, child, within)


async def wait_unix_socket(path: Path, *, child: Child | None, within: float = 20.0) -> None:
    async def probe() -> bool:
        try:
            _reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    await _until("the gateway ingress", probe, child, within)


async def wait_ingest_healthy(path: Path, *, child: Child | None, within: float = 30.0) -> None:
    """Until ``phd server ingest --health-file path`` reports every worker connected and the
    database answering (hospital_server.ingest.health, what ``phd server ingest-health`` judges)."""
    from hospital_server.ingest.health import DEFAULT_MAX_AGE, HealthFileError, judge, read_health

    async def probe() -> bool:
        try:
            health = await asyncio.to_thread(read_health, path)
        except HealthFileError:
            return False  # not written yet
        return not judge(health, now=time.time(), max_age=DEFAULT_MAX_AGE)

    await _until(f"the ingest worker ({path.name})", probe, child, within)
