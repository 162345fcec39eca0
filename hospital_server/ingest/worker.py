"""An ingest worker: take uplink batches from MQTT, process them, commit, ack, then PUBACK.

Per message (DESIGN.md section 4, "Gateway uplink")::

    topic phd/v1/gw/{gateway_id}/up  ->  gateway id (validated)
    payload -> UplinkBatch.decode    ->  malformed batch: quarantined whole, message acked
    Ingestor.prepare, then .commit   ->  one EnvelopeResult per envelope (IngestPipeline:
                                         batch N+1 is verified while batch N commits)
    publish UplinkAck to .../ack     ->  QoS 1, wait for the broker's PUBACK
    ack the inbound message          ->  only now may the broker forget it

A crash anywhere before the last step leaves the message with the broker; the redelivery is
answered from the database (duplicate), so nothing is stored twice. Several workers share the
load through the shared subscription. Logs carry gateway ids, counts and outcomes only.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from sqlalchemy import insert
from sqlmodel import select

from hospital_server import audit
from hospital_server.context import ServerContext
from hospital_server.gateways import GATEWAY_ID
from hospital_server.ingest.mqtt import InboundMessage, IngestMqtt, MqttError
from hospital_server.ingest.pipeline import IngestPipeline
from hospital_server.ingest.process import Ingestor
from hospital_server.models import Quarantine, utcnow
from phd_protocol import crypto
from phd_protocol.errors import RejectReason
from phd_protocol.wire import EnvelopeResult, UplinkAck, UplinkBatch, WireError

__all__ = ["IngestWorker", "WorkerStats", "gateway_from_topic"]

log = logging.getLogger(__name__)

_TOPIC = re.compile(r"^phd/v1/gw/([^/]+)/up$")


def gateway_from_topic(topic: str) -> str | None:
    match = _TOPIC.match(topic)
    if match is None or not GATEWAY_ID.match(match.group(1)):
        return None
    return match.group(1)


@dataclass
class WorkerStats:
    batches: int = 0
    envelopes: int = 0
    malformed_batches: int = 0


@dataclass(frozen=True, slots=True)
class _Pending:
    """What the answer to one inbound message needs once its batch is committed."""

    message: InboundMessage
    gateway_id: str
    batch_id: bytes


class IngestWorker:
    def __init__(self, ctx: ServerContext, ingestor: Ingestor, mqtt: IngestMqtt) -> None:
        self.ctx = ctx
        self.ingestor = ingestor
        self.mqtt = mqtt
        self.stats = WorkerStats()
        self.stop = threading.Event()
        self._pipeline: IngestPipeline[_Pending] | None = None

    def run(self) -> None:
        """Handle messages until :attr:`stop` is set or the connection drops.

        Batches go through an :class:`IngestPipeline`: the next batch is verified while the
        previous one commits; each is answered (ack, then PUBACK) after its own commit.
        """
        self._pipeline = IngestPipeline(self.ctx.sessions, self.ingestor, self._answer)
        try:
            while not self.stop.is_set():
                message = self.mqtt.messages.get()
                if message is None:
                    if self.mqtt.disconnected.is_set() or self.stop.is_set():
                        break
                    continue
                self.handle(message)
        finally:
            pipeline, self._pipeline = self._pipeline, None
            if pipeline is not None:
                pipeline.close()  # commits what was verified; unanswered ones are redelivered

    def handle(self, message: InboundMessage) -> None:
        gateway_id = gateway_from_topic(message.topic)
        if gateway_id is None:
            # The broker's ACLs make this impossible; drop it rather than loop on it.
            log.warning("message on an unexpected topic; dropped")
            self.mqtt.ack(message)
            return
        try:
            batch = UplinkBatch.decode(message.payload)
        except WireError as exc:
            if self._pipeline is not None:
                self._pipeline.flush()  # earlier messages are acknowledged first, in order
            self._quarantine_batch(gateway_id, message.payload, exc.rule)
            self.mqtt.ack(message)
            return
        pending = _Pending(message, gateway_id, batch.id)
        if self._pipeline is None:  # called outside run(): one batch at a time
            with self.ctx.sessions() as session:
                self._answer(pending, self.ingestor.process(session, gateway_id, batch.envelopes))
            return
        self._pipeline.submit(pending, gateway_id, batch.envelopes)

    def _answer(self, pending: _Pending, results: list[EnvelopeResult]) -> None:
        """After the commit: publish the ack, wait for the broker's PUBACK, then PUBACK ours."""
        ack = UplinkAck(id=pending.batch_id, results=tuple(results))
        try:
            self.mqtt.publish_ack(pending.gateway_id, ack.encode())
            self.mqtt.ack(pending.message)
        except MqttError:
            # Not acked to the broker: it will redeliver, and we answer "duplicate" then.
            log.warning(
                "ack to gateway %s not confirmed; leaving the batch for redelivery",
                pending.gateway_id,
            )
            return
        self.stats.batches += 1
        self.stats.envelopes += len(results)
        self.ctx.metrics.batches.labels(result="processed").inc()

    def _quarantine_batch(self, gateway_id: str, payload: bytes, rule: str) -> None:
        """A batch we cannot even split into envelopes is kept whole for review."""
        reason = RejectReason.TOO_LARGE if rule == "too_large" else RejectReason.MALFORMED
        self.stats.malformed_batches += 1
        self.ctx.metrics.batches.labels(result="malformed").inc()
        self.ctx.metrics.rejected.labels(reason=reason.value).inc()
        digest = crypto.sha256(payload).hex()
        now = utcnow()
        with self.ctx.sessions() as session:
            known = session.exec(select(Quarantine.id).where(Quarantine.digest == digest)).first()
            if known is None:  # a redelivered malformed batch is kept and audited once
                session.execute(
                    insert(Quarantine).values(
                        digest=digest,
                        reason=reason.value,
                        gateway_id=gateway_id,
                        size=len(payload),
                        sealed=payload,
                        received_at=now,
                    )
                )
                audit.record(
                    session,
                    "ingest.rejected",
                    actor="ingest",
                    gateway=gateway_id,
                    reason=reason.value,
                    scope="batch",
                )
                session.commit()
        log.info("malformed batch from gateway %s quarantined (%s)", gateway_id, rule)
