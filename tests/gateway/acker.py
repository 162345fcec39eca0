"""A test-only hospital stand-in: consumes uplink batches as an ingest worker and acks them.

It authenticates with a real ingest-worker certificate on the shared subscription, exactly as
the hospital's ingest does, records every envelope it "stores" (dedup by content, like ingest's
(device, seq) idempotency), and answers each batch with a policy-chosen result per envelope.
The real ingest lives in hospital_server/ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any

from hospital_server.pki.layout import PkiLayout
from mobile_gateway.mqtt import Message, MqttConnection, MqttSettings
from phd_protocol.wire import EnvelopeResult, UplinkAck, UplinkBatch

Policy = Callable[[bytes, int], EnvelopeResult | None]  # (envelope, times seen) -> result


def ingest_context(layout: PkiLayout, worker: str = "ingest-1") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cafile=str(layout.ca_cert("service")))
    ctx.load_cert_chain(
        str(layout.ingest_worker_cert(worker)), str(layout.ingest_worker_key(worker))
    )
    return ctx


class Acker:
    def __init__(
        self, layout: PkiLayout, host: str, port: int, policy: Policy | None = None
    ) -> None:
        self.settings = MqttSettings(
            host=host, port=port, client_id="ingest-1", ssl_context=ingest_context(layout)
        )
        self.policy = policy
        self.stored: list[bytes] = []
        self.seen: Counter[bytes] = Counter()
        self.batches = 0
        self.content_types: set[str | None] = set()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.errors: list[str] = []

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:  # reconnect across broker restarts
            try:
                conn = await MqttConnection.connect(self.settings)
            except Exception as exc:  # noqa: BLE001  # broker down: retry shortly
                self.errors.append(repr(exc))
                await asyncio.sleep(0.2)
                continue
            try:
                await conn.subscribe("$share/ingest/phd/v1/gw/+/up", qos=1)
                self.ready.set()
                while True:
                    get = asyncio.create_task(conn.next_message())
                    waitables: set[asyncio.Future[Any]] = {get, conn.closed}
                    done, _ = await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        break
                    await self._answer(conn, get.result())
            except Exception as exc:  # noqa: BLE001  # link lost mid-answer: reconnect
                self.errors.append(repr(exc))
                await asyncio.sleep(0.1)
            finally:
                await conn.close()

    async def _answer(self, conn: MqttConnection, msg: Message) -> None:
        batch = UplinkBatch.decode(msg.payload)
        self.batches += 1
        self.content_types.add(msg.content_type)
        results = []
        for env in batch.envelopes:
            self.seen[env] += 1
            chosen = self.policy(env, self.seen[env]) if self.policy else None
            if chosen is None:
                chosen = (
                    EnvelopeResult.duplicate() if env in self.stored else EnvelopeResult.stored()
                )
                if env not in self.stored:
                    self.stored.append(env)
            results.append(chosen)
        gateway = msg.topic.split("/")[3]
        ack = UplinkAck(id=batch.id, results=tuple(results))
        await conn.publish(f"phd/v1/gw/{gateway}/ack", ack.encode(), qos=1)
