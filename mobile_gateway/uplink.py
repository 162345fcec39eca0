"""The uplink loop: outbox -> batches on ``phd/v1/gw/{id}/up``; acks on ``.../ack`` -> outbox.

What it is for: keep the gateway's promise across outages. It connects forever (pure backoff
with jitter between attempts), sends due outbox entries in bounded batches at QoS 1, and lets
only the hospital's ack settle an entry. A PUBACK means the broker has the message and nothing
more; a batch whose ack does not come within ``ack_timeout`` goes back to pending with backoff.
Must never read, log or alter an envelope.

Link state machine::

    state          event         next state
    ------------   -----------   ------------
    disconnected   connect       connecting
    connecting     connected     connected     (subscribed to the ack topic, then sending)
    connecting     failed        backoff
    connected      lost          backoff       (in-flight batches go back to pending)
    backoff        retry         connecting
    any            stop          stopped
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mobile_gateway.backoff import Backoff
from mobile_gateway.errors import MqttError, OutboxError
from mobile_gateway.metrics import GatewayMetrics
from mobile_gateway.mqtt import MqttConnection
from mobile_gateway.outbox import EntryEvent, Settlement
from mobile_gateway.store import AsyncOutbox
from phd_protocol.wire import AckStatus, EnvelopeResult, UplinkAck, UplinkBatch, WireError

__all__ = ["LINK_TRANSITIONS", "LinkState", "Uplink", "UplinkSettings", "ack_topic", "up_topic"]

log = logging.getLogger(__name__)


class LinkState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


LINK_TRANSITIONS: dict[tuple[LinkState, str], LinkState] = {
    (LinkState.DISCONNECTED, "connect"): LinkState.CONNECTING,
    (LinkState.CONNECTING, "connected"): LinkState.CONNECTED,
    (LinkState.CONNECTING, "failed"): LinkState.BACKOFF,
    (LinkState.CONNECTED, "lost"): LinkState.BACKOFF,
    (LinkState.BACKOFF, "retry"): LinkState.CONNECTING,
}


def up_topic(gateway_id: str) -> str:
    return f"phd/v1/gw/{gateway_id}/up"


def ack_topic(gateway_id: str) -> str:
    return f"phd/v1/gw/{gateway_id}/ack"


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkSettings:
    gateway_id: str
    batch_max_count: int
    batch_max_bytes: int
    max_in_flight: int = 3  # see GatewayConfig.max_in_flight
    ack_timeout: float = 30.0
    retry: Backoff = field(default_factory=lambda: Backoff(base=2.0, cap=300.0))
    reconnect: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    idle_poll: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_in_flight <= 64:
            raise ValueError("max_in_flight must be 1..64")
        if self.ack_timeout <= 0 or self.idle_poll <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(slots=True)
class _Batch:
    entry_ids: tuple[int, ...]
    deadline: float
    attempt: int


Connector = Callable[[], Awaitable[MqttConnection]]

_RECENT_BATCHES = 256  # expired batches whose late ack we still honour


class Uplink:
    def __init__(
        self,
        settings: UplinkSettings,
        outbox: AsyncOutbox,
        connect: Connector,
        metrics: GatewayMetrics,
        *,
        sample: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._s = settings
        self._outbox = outbox
        self._connect = connect
        self._metrics = metrics
        self._sample = sample
        self._clock = clock
        self.state = LinkState.DISCONNECTED
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._outstanding: dict[bytes, _Batch] = {}
        self._recent: OrderedDict[bytes, _Batch] = OrderedDict()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._publishing: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    # ----------------------------------------------------------------- control
    def wake(self) -> None:
        """New work in the outbox (called by ingress after a commit)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def _move(self, event: str) -> None:
        if event == "stop":
            nxt = LinkState.STOPPED
        else:
            nxt = LINK_TRANSITIONS[(self.state, event)]
        self.state = nxt
        self._metrics.link_up.set(1 if nxt is LinkState.CONNECTED else 0)
        if nxt is LinkState.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        with contextlib.suppress(OutboxError):
            await self._outbox.set_meta({"link_state": nxt.value, "link_since": _now_text()})

    # ----------------------------------------------------------------- main loop
    async def run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                if self.state is LinkState.BACKOFF:
                    await self._move("retry")
                else:
                    await self._move("connect")
                try:
                    conn = await self._connect()
                except MqttError as exc:
                    attempt += 1
                    log.warning("uplink connect failed: %s (attempt %d)", exc.reason, attempt)
                    await self._move("failed")
                    await self._sleep(self._s.reconnect.delay(attempt, self._sample()))
                    continue
                try:
                    try:
                        await conn.subscribe(ack_topic(self._s.gateway_id), qos=1)
                    except MqttError as exc:
                        attempt += 1
                        log.warning("ack subscription refused: %s", exc)
                        await self._move("failed")
                        await self._sleep(self._s.reconnect.delay(attempt, self._sample()))
                        continue
                    attempt = 0
                    await self._move("connected")
                    reason = await self._session(conn)
                    log.info("uplink session ended: %s", reason)
                finally:
                    await conn.close()
                    await self._requeue_outstanding()
                if self.state is LinkState.CONNECTED:
                    await self._move("lost")
                    attempt = 1
                    await self._sleep(self._s.reconnect.delay(attempt, self._sample()))
        finally:
            await self._move("stop")

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
        # races with the inner wait finishing, which would hang shutdown.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _session(self, conn: MqttConnection) -> str:
        tasks: set[asyncio.Task[Any]] = {
            asyncio.create_task(self._send_loop(conn), name="uplink-send"),
            asyncio.create_task(self._ack_loop(conn), name="uplink-acks"),
            asyncio.create_task(self._timeout_loop(), name="uplink-timeouts"),
            asyncio.create_task(self._stop.wait(), name="uplink-stop"),
        }
        closed = conn.closed
        waitables: set[asyncio.Future[Any]] = {*tasks, closed}
        try:
            done, _ = await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pending = tasks | self._publishing
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if closed in done:
            return closed.result().reason
        for finished in done:
            if finished is closed or finished.cancelled():
                continue
            exc = finished.exception()
            if isinstance(exc, MqttError):
                return exc.reason
            if exc is not None:
                raise exc
        return "stopped"

    # ----------------------------------------------------------------- sending
    async def _send_loop(self, conn: MqttConnection) -> None:
        topic = up_topic(self._s.gateway_id)
        while True:
            await self._slots.acquire()
            # Cleared before the claim: a commit that lands after it sets the event again,
            # so no wake-up is lost between "nothing due" and the wait below.
            self._wake.clear()
            try:
                batch = await self._claim()
            except BaseException:
                self._slots.release()
                raise
            if batch is None:
                self._slots.release()
                due = await self._outbox.next_due()
                wait = self._s.idle_poll
                if due is not None:
                    wait = max(0.0, min(wait, due - time.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            wire, record = batch
            self._outstanding[wire.id] = record
            # The PUBACK is awaited aside, so up to max_in_flight batches are on the wire.
            task = asyncio.create_task(self._publish(conn, topic, wire), name="uplink-publish")
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def _publish(self, conn: MqttConnection, topic: str, wire: UplinkBatch) -> None:
        try:
            await conn.publish(topic, wire.encode(), qos=1, ack_wait=self._s.ack_timeout)
        except MqttError as exc:
            if exc.code is None:
                # Link trouble: conn.closed ends the session and requeues; a lost PUBACK
                # is left to the ack timeout.
                return
            # Refused by the broker (e.g. 135 not authorized): keep the entries, back off.
            log.warning("batch refused by broker: reason code %d", exc.code)
            record = self._outstanding.pop(wire.id, None)
            if record is not None:
                await self._expire(wire.id, record)

    async def _claim(self) -> tuple[UplinkBatch, _Batch] | None:
        batch_id = UplinkBatch.new([b"\x00"]).id  # a fresh random 16-byte id
        claim = asyncio.ensure_future(
            self._outbox.claim(
                batch_id=batch_id.hex(),
                max_count=self._s.batch_max_count,
                max_bytes=self._s.batch_max_bytes,
            )
        )
        try:
            claimed = await asyncio.shield(claim)
        except asyncio.CancelledError:
            # The session ended while the worker thread was marking entries in flight: the
            # claim still commits, so put those entries back, or they would sit in flight
            # until the next restart.
            with contextlib.suppress(OutboxError):
                orphans = await claim
                await self._outbox.settle(
                    Settlement(entry_id=e.entry_id, event=EntryEvent.TIMEOUT) for e in orphans
                )
            raise
        if not claimed:
            return None
        wire = UplinkBatch(id=batch_id, envelopes=tuple(e.envelope for e in claimed))
        record = _Batch(
            entry_ids=tuple(e.entry_id for e in claimed),
            deadline=self._clock() + self._s.ack_timeout,
            attempt=max(e.attempts for e in claimed),
        )
        self._metrics.batches_sent.inc()
        return wire, record

    # ----------------------------------------------------------------- acks
    async def _ack_loop(self, conn: MqttConnection) -> None:
        while True:
            msg = await conn.next_message()
            try:
                ack = UplinkAck.decode(msg.payload)
            except WireError as exc:
                self._metrics.bad_acks.inc()
                log.warning("ignoring malformed ack: %s", exc.rule)
                continue
            record = self._outstanding.pop(ack.id, None)
            if record is not None:
                self._slots.release()
            else:
                record = self._recent.pop(ack.id, None)
            if record is None:
                continue  # an ack from before a restart: the re-sent copy gets its own ack
            if len(ack.results) != len(record.entry_ids):
                self._metrics.bad_acks.inc()
                log.warning(
                    "ack answers %d of %d envelopes", len(ack.results), len(record.entry_ids)
                )
                await self._requeue(record)
                continue
            await self._apply(record, ack.results)
            self._wake.set()

    async def _apply(self, record: _Batch, results: tuple[EnvelopeResult, ...]) -> None:
        delay = self._s.retry.delay(max(record.attempt, 1), self._sample())
        settlements = []
        for entry_id, result in zip(record.entry_ids, results, strict=True):
            self._metrics.acks.labels(status=result.status.value).inc()
            if result.status is AckStatus.STORED:
                settlements.append(Settlement(entry_id=entry_id, event=EntryEvent.STORED))
            elif result.status is AckStatus.DUPLICATE:
                settlements.append(Settlement(entry_id=entry_id, event=EntryEvent.DUPLICATE))
            elif result.status is AckStatus.REJECTED and result.permanent:
                settlements.append(
                    Settlement(
                        entry_id=entry_id,
                        event=EntryEvent.REJECTED_PERMANENT,
                        reason=str(result.reason),
                    )
                )
            else:
                settlements.append(
                    Settlement(entry_id=entry_id, event=EntryEvent.RETRY, delay=delay)
                )
        await self._outbox.settle(settlements, {"last_ack_at": _now_text()})

    # ----------------------------------------------------------------- timeouts
    async def _timeout_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._s.ack_timeout / 4))
            now = self._clock()
            expired = [bid for bid, b in self._outstanding.items() if b.deadline <= now]
            for bid in expired:
                self._metrics.ack_timeouts.inc()
                await self._expire(bid, self._outstanding.pop(bid))

    async def _expire(self, batch_id: bytes, record: _Batch) -> None:
        self._slots.release()
        self._recent[batch_id] = record
        while len(self._recent) > _RECENT_BATCHES:
            self._recent.popitem(last=False)
        await self._requeue(record)

    async def _requeue(self, record: _Batch) -> None:
        delay = self._s.retry.delay(max(record.attempt, 1), self._sample())
        await self._outbox.settle(
            Settlement(entry_id=i, event=EntryEvent.TIMEOUT, delay=delay) for i in record.entry_ids
        )

    async def _requeue_outstanding(self) -> None:
        # The link is gone: nothing in flight can be acked on this session any more. Entries
        # are due again at once (the hospital dedups); late acks still count via _recent.
        while self._outstanding:
            bid, record = self._outstanding.popitem()
            self._slots.release()
            self._recent[bid] = record
            with contextlib.suppress(OutboxError):
                await self._outbox.settle(
                    Settlement(entry_id=i, event=EntryEvent.TIMEOUT) for i in record.entry_ids
                )


def _now_text() -> str:
    return f"{time.time():.3f}"
