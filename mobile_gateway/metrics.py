"""Prometheus metrics of one gateway, in their own registry, served on a loopback port.

Public names (DESIGN.md section 7): ``phd_gateway_outbox_depth``,
``phd_gateway_acks_total{status}``. Labels carry statuses only, never ids or content.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    def __init__(self, depth: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.outbox_depth = Gauge(
            "phd_gateway_outbox_depth",
            "Envelopes the gateway still answers for (pending + in flight)",
            registry=self.registry,
        )
        if depth is not None:
            self.outbox_depth.set_function(depth)
        self.acks = Counter(
            "phd_gateway_acks",
            "Per-envelope results received from the hospital, by status",
            ["status"],
            registry=self.registry,
        )
        self.batches_sent = Counter(
            "phd_gateway_batches_sent", "Uplink batches published", registry=self.registry
        )
        self.ack_timeouts = Counter(
            "phd_gateway_ack_timeouts",
            "Batches re-queued because no ack came in time",
            registry=self.registry,
        )
        self.bad_acks = Counter(
            "phd_gateway_bad_acks", "Malformed or mismatched acks ignored", registry=self.registry
        )
        self.ingress = Counter(
            "phd_gateway_ingress",
            "Ingress requests by reply status",
            ["status"],
            registry=self.registry,
        )
        self.link_up = Gauge(
            "phd_gateway_link_up", "1 while the MQTT link is connected", registry=self.registry
        )

    def bind_depth(self, depth: Callable[[], float]) -> None:
        self.outbox_depth.set_function(depth)

    def serve(self, host: str, port: int) -> None:
        """Start the /metrics HTTP server (a daemon thread) on ``host:port``."""
        start_http_server(port, addr=host, registry=self.registry)
