"""Wires one gateway together and runs it until SIGTERM/SIGINT (or :meth:`Gateway.stop`).

Start order: outbox (recovers in-flight entries), metrics, uplink, then ingress, so nothing is
accepted before it can be stored. Stop order is the reverse of what could lose data: stop
accepting (requests already being stored get their reply), stop the uplink (DISCONNECT sent,
in-flight batches back to pending), then checkpoint and close the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from mobile_gateway.backoff import Backoff
from mobile_gateway.config import GatewayConfig
from mobile_gateway.errors import ConfigError, OutboxError
from mobile_gateway.ingress import IngressServer
from mobile_gateway.metrics import GatewayMetrics
from mobile_gateway.mqtt import MqttConnection, MqttSettings
from mobile_gateway.store import AsyncOutbox
from mobile_gateway.tls import certificate_cn, client_context
from mobile_gateway.uplink import Uplink, UplinkSettings

__all__ = ["Gateway", "loop_factory", "run_gateway"]

log = logging.getLogger(__name__)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``gateway.event_loop``: None means asyncio's own.

    uvloop (libuv) runs the same code with less CPU per ingress request and outbox hand-off,
    where nearly all of the gateway's own time goes (docs/gateway.md); it is optional, as it
    is not built for every platform a gateway may run on.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 -- optional: only where it is built
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "gateway.event_loop", "uvloop is not installed: pip install uvloop, or use asyncio"
            ) from None
        return None
    return uvloop.new_event_loop


def run_gateway(config: GatewayConfig) -> None:
    """Run one gateway in this thread, on the configured event loop, until SIGTERM/SIGINT."""
    with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
        runner.run(Gateway(config).run())


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.uplink: Uplink | None = None
        self.outbox: AsyncOutbox | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        cfg = self.config
        ssl_context = await asyncio.to_thread(
            client_context, ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file
        )
        cn = await asyncio.to_thread(certificate_cn, cfg.cert_file)
        if cfg.gateway_id is not None and cfg.gateway_id != cn:
            raise ConfigError("gateway.id", "differs from the certificate CN the broker uses")
        gateway_id = cn
        outbox = await AsyncOutbox.open(
            cfg.outbox_path, max_entries=cfg.outbox_max_entries, max_bytes=cfg.outbox_max_bytes
        )
        self.outbox = outbox
        # Lets `phd gateway status` tell a running gateway from a stale "connected".
        await outbox.set_meta({"pid": str(os.getpid()), "started_at": f"{time.time():.3f}"})
        metrics = GatewayMetrics(depth=lambda: outbox.depth)
        if cfg.metrics_port:
            await asyncio.to_thread(metrics.serve, cfg.metrics_host, cfg.metrics_port)
        mqtt_settings = MqttSettings(
            host=cfg.broker_host,
            port=cfg.broker_port,
            client_id=gateway_id,
            ssl_context=ssl_context,
            keepalive=cfg.keepalive,
        )
        uplink = Uplink(
            UplinkSettings(
                gateway_id=gateway_id,
                batch_max_count=cfg.batch_max_count,
                batch_max_bytes=cfg.batch_max_bytes,
                max_in_flight=cfg.max_in_flight,
                ack_timeout=cfg.ack_timeout,
                retry=Backoff(base=cfg.retry_base, cap=cfg.retry_cap),
                reconnect=Backoff(base=cfg.reconnect_base, cap=cfg.reconnect_cap),
            ),
            outbox,
            lambda: MqttConnection.connect(mqtt_settings),
            metrics,
        )
        self.uplink = uplink
        ingress = IngressServer(
            cfg.socket_path,
            outbox,
            metrics,
            mode=cfg.socket_mode,
            max_connections=cfg.max_connections,
            on_accepted=uplink.wake,
        )
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        uplink_task = asyncio.create_task(uplink.run(), name="uplink")
        try:
            await ingress.start()
            log.info("gateway %s ready", gateway_id)
            self.ready.set()
            stop_task = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stop_task, uplink_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
        finally:
            log.info("gateway stopping")
            await ingress.stop()
            uplink.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await uplink_task
            with contextlib.suppress(OutboxError):
                await outbox.set_meta({"pid": ""})  # a clean stop: not running any more
            await outbox.close()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
