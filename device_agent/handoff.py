"""Hands spooled envelopes to the gateway's local ingress (a Unix socket, phd_protocol.ingress).

The rule that keeps readings from being lost: an envelope leaves the agent's spool only after
the gateway answered ``accepted`` (status 0), which it sends after committing the envelope to
its durable outbox. ``busy`` leaves everything spooled for the next attempt; ``too_large`` and
``malformed`` move that one envelope to the spool's ``rejected/`` directory (kept, counted,
reported) and reconnect, because the gateway closes the stream after them. If the gateway is
unreachable the spool simply grows; :meth:`Handoff.deliver` is called again later.

This module never opens an envelope and never logs anything but counts and sequence numbers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from device_agent.errors import HandoffError, SpoolError
from device_agent.spool import Spool, SpooledEnvelope
from phd_protocol.ingress import (
    IngressError,
    IngressReply,
    IngressStatus,
    ReplyReader,
    encode_request,
)

__all__ = ["DeliveryReport", "Handoff"]

logger = logging.getLogger(__name__)

_REPLY_TIMEOUT = 30.0  # the gateway fsyncs before answering; allow for a slow disk


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    accepted: int
    rejected: int
    remaining: int
    busy: bool
    reachable: bool


class Handoff:
    def __init__(self, socket_path: Path, spool: Spool) -> None:
        self.socket_path = socket_path
        self.spool = spool
        self._lock = asyncio.Lock()

    async def deliver(self) -> DeliveryReport:
        """Send every spooled envelope, oldest first, until done, refused or unreachable."""
        async with self._lock:
            accepted = rejected = 0
            busy = False
            reachable = True
            pending = await asyncio.to_thread(self.spool.pending)
            while pending and not busy:
                try:
                    done, bad, busy, pending = await self._session(pending)
                except HandoffError as exc:
                    logger.info("gateway ingress unavailable (%s); %d spooled", exc, len(pending))
                    reachable = False
                    break
                accepted += done
                rejected += bad
                if done == 0 and bad == 0:
                    break
            remaining = len(await asyncio.to_thread(self.spool.pending))
            return DeliveryReport(accepted, rejected, remaining, busy, reachable)

    async def _session(
        self, pending: list[SpooledEnvelope]
    ) -> tuple[int, int, bool, list[SpooledEnvelope]]:
        """One connection: returns (accepted, rejected, busy, still pending)."""
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            raise HandoffError(f"cannot connect ({exc.strerror or type(exc).__name__})") from exc
        replies = ReplyReader()
        accepted = rejected = 0
        try:
            for index, item in enumerate(pending):
                try:
                    data = await asyncio.to_thread(item.read)
                except (SpoolError, OSError):
                    # A damaged file must not block the queue behind it: set it aside.
                    await asyncio.to_thread(self.spool.reject, item, "unreadable")
                    rejected += 1
                    continue
                try:
                    frame = encode_request(data)
                except IngressError as exc:  # cannot even be framed: keep it for review
                    await asyncio.to_thread(self.spool.reject, item, exc.status.name.lower())
                    rejected += 1
                    continue
                writer.write(frame)
                await writer.drain()
                reply = await self._read_reply(reader, replies)
                if reply.status is IngressStatus.ACCEPTED:
                    await asyncio.to_thread(self.spool.remove, item)
                    accepted += 1
                    continue
                if reply.status is IngressStatus.BUSY:
                    return accepted, rejected, True, pending[index:]
                # too_large / malformed: final for this envelope; the gateway closes the stream.
                logger.warning(
                    "gateway refused envelope seq %d of %s: %s",
                    item.seq,
                    item.device_id,
                    reply.status.name.lower(),
                )
                await asyncio.to_thread(self.spool.reject, item, reply.status.name.lower())
                return accepted, rejected + 1, False, pending[index + 1 :]
            return accepted, rejected, False, []
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise HandoffError(f"connection lost ({type(exc).__name__})") from exc
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                logger.debug("ingress socket closed uncleanly", exc_info=True)

    @staticmethod
    async def _read_reply(reader: asyncio.StreamReader, replies: ReplyReader) -> IngressReply:
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), _REPLY_TIMEOUT)
            if not chunk:
                raise HandoffError("gateway closed the connection before replying")
            try:
                got = replies.feed(chunk)
            except IngressError as exc:
                raise HandoffError(f"unreadable reply ({exc.status.name.lower()})") from exc
            if got:
                return got[0]
