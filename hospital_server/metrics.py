"""Prometheus metrics of the server (DESIGN.md section 7 names; stable, never renamed).

Each :class:`ServerMetrics` owns its registry, so tests and several apps in one process do not
share counters. Labels are outcome and reason codes only: never ids, never values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from phd_protocol.errors import RejectReason

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seal-to-commit latency spans a direct path (tens of ms) and a gateway that was offline for
# hours; buckets reach a day.
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)
# A batch's write (phase 2 and the commit): milliseconds normally, seconds when the disk or a
# lock stalls it.
_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.envelopes = Counter(
            "phd_ingest_envelopes",
            "Envelopes processed by ingest, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "phd_ingest_rejected",
            "Envelopes rejected by ingest, by public reason code",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "phd_ingest_seconds",
            "Seconds from sealing on the agent to commit at the hospital",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.write = Histogram(
            "phd_ingest_write_seconds",
            "Seconds per uplink batch to write and commit its rows (after verification)",
            buckets=_WRITE_BUCKETS,
            registry=self.registry,
        )
        self.batches = Counter(
            "phd_ingest_batches",
            "Uplink batches processed, by result",
            ["result"],
            registry=self.registry,
        )
        self.auth_refused = Counter(
            "phd_auth_refused",
            "Bearer tokens refused, by reason (each one; the audit log folds anonymous floods)",
            ["reason"],
            registry=self.registry,
        )
        self.audit_checkpoints = Counter(
            "phd_audit_checkpoints",
            "Audit checkpoint rounds of this server, by result (signed, nothing_new, failed)",
            ["result"],
            registry=self.registry,
        )
        # Present every label from the start so dashboards and alerts see zeros, not gaps.
        for result in ("signed", "nothing_new", "failed"):
            self.audit_checkpoints.labels(result=result)
        for outcome in ("stored", "duplicate", "rejected", "retry_later"):
            self.envelopes.labels(outcome=outcome)
        for reason in RejectReason:
            self.rejected.labels(reason=reason.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
