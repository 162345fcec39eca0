"""Run ingest workers in threads, each with its own MQTT identity, reconnecting with backoff.

``phd server ingest`` and ``phd server run`` use :func:`start_workers`; each worker keeps one
persistent MQTT session (its certificate CN is its client id), so messages it had not
acknowledged when a connection dropped come back to it on reconnect. Backoff is a pure
function of the attempt number. Logs name workers and error codes only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hospital_server.context import ServerContext
from hospital_server.db import check_database
from hospital_server.ingest.health import HealthWriter, PoolHealth
from hospital_server.ingest.keyring import load_keyring
from hospital_server.ingest.mqtt import IngestMqtt, MqttError, MqttSettings, ingest_tls_context
from hospital_server.ingest.process import Ingestor, IngestPolicy
from hospital_server.ingest.worker import IngestWorker
from phd_protocol.policy import VerificationPolicy

__all__ = ["WorkerPool", "backoff_seconds", "build_ingestor", "start_workers"]

log = logging.getLogger(__name__)


def backoff_seconds(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff without jitter (workers have distinct identities, no herd)."""
    return float(min(cap, base * (2 ** min(attempt, 16))))


def build_ingestor(ctx: ServerContext) -> Ingestor:
    policy = IngestPolicy(
        max_envelope_bytes=ctx.settings.max_envelope_bytes,
        verification=VerificationPolicy(
            max_age=ctx.settings.max_envelope_age, max_future=ctx.settings.clock_skew_future
        ),
    )
    return Ingestor(
        keyring=load_keyring(ctx.pki), keys=ctx.keys, metrics=ctx.metrics, policy=policy
    )


@dataclass
class WorkerPool:
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    workers: dict[str, IngestWorker] = field(default_factory=dict)
    health: HealthWriter | None = None
    names: tuple[str, ...] = ()

    def subscribed(self) -> bool:
        """Whether every worker of the pool holds a subscribed broker session now."""
        return bool(self.names) and all(self.connected(name) for name in self.names)

    def connected(self, name: str) -> bool:
        """Whether worker ``name`` holds a broker session now."""
        worker = self.workers.get(name)
        return (
            worker is not None
            and not worker.stop.is_set()
            and not worker.mqtt.disconnected.is_set()
        )

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for worker in list(self.workers.values()):
            worker.stop.set()
            worker.mqtt.close()
        for thread in self.threads:
            thread.join(timeout)
        if self.health is not None:
            self.health.thread.join(timeout)
            # A stopped pool is unhealthy at once, not only once the file has aged.
            self.health.path.unlink(missing_ok=True)


def _serve(ctx: ServerContext, ingestor: Ingestor, name: str, pool: WorkerPool) -> None:
    layout = ctx.pki
    attempt = 0
    while not pool.stop.is_set():
        mqtt = IngestMqtt(
            MqttSettings(
                host=ctx.settings.mqtt_host,
                port=ctx.settings.mqtt_port,
                client_id=name,
                share_group=ctx.settings.mqtt_share_group,
                ssl_context=ingest_tls_context(
                    layout.ca_bundle,
                    layout.ingest_worker_cert(name),
                    layout.ingest_worker_key(name),
                ),
            )
        )
        try:
            mqtt.connect()
        except MqttError as exc:
            delay = backoff_seconds(attempt)
            attempt += 1
            log.warning(
                "worker %s: broker connection failed (%s); retry in %.1fs", name, exc.code, delay
            )
            pool.stop.wait(delay)
            continue
        attempt = 0
        worker = IngestWorker(ctx, ingestor, mqtt)
        pool.workers[name] = worker
        # Registered before this check: a shutdown that began while we were connecting either
        # sees this worker (and closes it) or is seen here; either way nothing hangs.
        if pool.stop.is_set():
            mqtt.close()
            break
        log.info("worker %s consuming", name)
        worker.run()
        mqtt.close()


def start_workers(
    ctx: ServerContext,
    names: Sequence[str],
    *,
    health_file: Path | None = None,
    health_interval: float = 5.0,
) -> WorkerPool:
    """Start one thread per worker name; with ``health_file``, also keep that file current
    (:mod:`hospital_server.ingest.health`)."""
    ingestor = build_ingestor(ctx)
    pool = WorkerPool(names=tuple(names))
    for name in names:
        thread = threading.Thread(
            target=_serve, args=(ctx, ingestor, name, pool), name=f"ingest-{name}", daemon=True
        )
        thread.start()
        pool.threads.append(thread)
    if health_file is not None:

        def snapshot() -> PoolHealth:
            return PoolHealth(
                at=time.time(),
                database=check_database(ctx.engine),
                workers={name: pool.connected(name) for name in names},
                batches=sum(w.stats.batches for w in list(pool.workers.values())),
            )

        pool.health = HealthWriter(health_file, snapshot, pool.stop, interval=health_interval)
        pool.health.start()
    return pool
