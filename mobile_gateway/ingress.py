"""The local ingress: agents hand sealed envelopes to the gateway over a Unix socket.

Framing and reply codes are phd_protocol.ingress. Rules this server keeps:
- "accepted" (status 0) is written only after the envelope's outbox transaction committed;
- when the outbox is full it answers "busy" and stores nothing; it never drops what it took;
- sizes are bounded before anything is buffered (64 KiB per envelope, bounded connections,
  an idle timeout per request); after a framing error it answers once and closes;
- the socket file is created with the configured mode (0600 or 0660) inside a directory the
  operator controls.
It never looks inside an envelope and never logs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Counter

from mobile_gateway.errors import OutboxError, OutboxFullError
from mobile_gateway.metrics import GatewayMetrics
from mobile_gateway.store import AsyncOutbox
from phd_protocol.ingress import (
    HEADER_SIZE,
    IngressError,
    IngressReply,
    IngressStatus,
    encode_reply,
    parse_request_length,
)

__all__ = ["IngressServer"]

log = logging.getLogger(__name__)


class IngressServer:
    def __init__(
        self,
        path: Path,
        outbox: AsyncOutbox,
        metrics: GatewayMetrics,
        *,
        mode: int = 0o660,
        max_connections: int = 64,
        idle_timeout: float = 60.0,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        if mode & 0o007:
            raise ValueError("the ingress socket must not be accessible to others (o+rwx)")
        self._path = path
        self._outbox = outbox
        self._metrics = metrics
        self._mode = mode
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._on_accepted = on_accepted
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections = 0
        self._counters: dict[IngressStatus, Counter] = {}  # metric children, looked up once

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare_path)
        self._server = await asyncio.start_unix_server(self._handle, path=str(self._path))
        await asyncio.to_thread(self._path.chmod, self._mode)

    def _prepare_path(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        if self._path.exists() or self._path.is_symlink():
            # Only ever replace a stale socket, never a regular file someone pointed us at.
            if not stat.S_ISSOCK(self._path.lstat().st_mode):
                raise OSError(f"{self._path.name} exists and is not a socket")
            self._path.unlink()

    async def stop(self) -> None:
        """Stop accepting; let requests already being stored finish and get their reply."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio always runs handlers in a task
        self._handlers.add(task)
        self._connections += 1
        try:
            if self._connections > self._max_connections:
                await self._reply(writer, IngressStatus.BUSY, "too_many_connections")
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the agent went away or stalled; anything it was told "accepted" is stored
        finally:
            self._connections -= 1
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            # One deadline per request (header and body): the idle timeout bounds how long a
            # request may take to arrive, whatever it is split into.
            async with asyncio.timeout(self._idle_timeout):
                try:
                    header = await reader.readexactly(HEADER_SIZE)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        await self._reply(writer, IngressStatus.MALFORMED, "truncated_header")
                    return
                try:
                    length = parse_request_length(header)
                except IngressError as exc:
                    reason = "too_large" if exc.status is IngressStatus.TOO_LARGE else "bad_length"
                    await self._reply(writer, exc.status, reason)
                    return
                envelope = await reader.readexactly(length)
            # Shielded: once submitted, the envelope is committed even if this handler is
            # cancelled (shutdown); the agent then gets no reply and sends it again, and the
            # hospital deduplicates.
            try:
                await asyncio.shield(self._outbox.submit(envelope))
            except OutboxFullError:
                status, reason = IngressStatus.BUSY, "outbox_full"
            except OutboxError:
                log.exception("outbox write failed")
                status, reason = IngressStatus.BUSY, "outbox_unavailable"
            else:
                self._on_accepted()
                status, reason = IngressStatus.ACCEPTED, "stored"
            await self._reply(writer, status, reason)

    async def _reply(
        self, writer: asyncio.StreamWriter, status: IngressStatus, reason: str
    ) -> None:
        counter = self._counters.get(status)
        if counter is None:
            counter = self._counters[status] = self._metrics.ingress.labels(
                status=status.name.lower()
            )
        counter.inc()
        writer.write(encode_reply(IngressReply(status=status, reason=reason)))
        await writer.drain()
