"""The one paho adapter of the ingest workers: MQTT v5 over mutual TLS, manual acks.

What it does: connect with the worker's client certificate, subscribe to the shared
subscription ``$share/<group>/phd/v1/gw/+/up`` (QoS 1), hand each message to the worker
through a bounded queue, publish acks (QoS 1, waiting for the broker's PUBACK), and acknowledge
an inbound message to the broker only when the worker says so (``manual_ack``): a worker that
dies between its database commit and its ack leaves the message unacknowledged, so the broker
redelivers it and ingest answers ``duplicate``. ``Receive Maximum`` bounds how many
unacknowledged messages the broker sends us.

Callbacks only enqueue (paho's network thread never touches the database). paho and ssl errors
are translated here into :class:`MqttError` with a short code; nothing else imports paho.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["InboundMessage", "IngestMqtt", "MqttError", "MqttSettings", "ingest_tls_context"]

UP_FILTER = "phd/v1/gw/+/up"


class MqttError(Exception):
    """Connection, subscription or publication failed; ``code`` is a short stable string."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    host: str
    port: int
    client_id: str  # forced to the certificate CN by the broker (use_username_as_clientid)
    ssl_context: ssl.SSLContext
    share_group: str = "ingest"
    receive_maximum: int = 32
    keepalive: int = 30
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int


def ingest_tls_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+, the broker verified against our CA bundle, the worker's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    return ctx


def _set_nodelay(sock: Any) -> None:
    """Turn Nagle's algorithm off (paho does not). The worker's exchanges are small packets
    that wait for small answers (ack PUBLISH -> PUBACK, inbound batch -> our PUBACK); with
    Nagle a small write waits for the broker's delayed ACK of the previous one (up to about
    40 ms on Linux), and batches are answered one after another, so the waits add up.
    Measured in ``phd bench e2e`` (docs/gateway.md "Uplink window and latency")."""
    if sock is None:
        return
    with contextlib.suppress(OSError):  # not a TCP socket: nothing to tune
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _code(rc: ReasonCode | int | Any) -> int:
    return int(rc.value) if isinstance(rc, ReasonCode) else int(rc)


class IngestMqtt:
    """Blocking client for one worker; the worker thread calls every method."""

    def __init__(self, settings: MqttSettings) -> None:
        self._s = settings
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        self._client.tls_set_context(settings.ssl_context)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self.messages: queue.Queue[InboundMessage | None] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._connect_code = -1
        self._suback_codes: list[int] = []
        self.disconnected = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call] # unannotated upstream
        props.ReceiveMaximum = self._s.receive_maximum
        # A persistent session: if this worker dies with unacknowledged messages, the same
        # identity reconnecting gets them again (the broker's QoS 1 promise).
        props.SessionExpiryInterval = 3600
        try:
            rc = self._client.connect(
                self._s.host,
                self._s.port,
                self._s.keepalive,
                clean_start=False,
                properties=props,
            )
        except ssl.SSLError as exc:
            raise MqttError(f"tls_refused:{exc.reason or 'handshake'}") from exc
        except OSError as exc:
            raise MqttError(f"unreachable:{type(exc).__name__}") from exc
        if rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"connect_failed:{paho.error_string(rc)}")
        _set_nodelay(self._client.socket())
        self._client.loop_start()
        if not self._connected.wait(self._s.timeout) or self._connect_code != 0:
            self.close()
            raise MqttError(f"connack:{self._connect_code}")
        topic = f"$share/{self._s.share_group}/{UP_FILTER}"
        rc, _mid = self._client.subscribe(topic, qos=1)
        if rc != paho.MQTT_ERR_SUCCESS or not self._subscribed.wait(self._s.timeout):
            self.close()
            raise MqttError("subscribe_failed")
        if not self._suback_codes or any(c >= 0x80 for c in self._suback_codes):
            self.close()
            raise MqttError(f"subscribe_refused:{self._suback_codes}")

    def close(self) -> None:
        """Clean DISCONNECT; unacknowledged messages stay with the broker for redelivery."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self.messages.put(None)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (what a crash looks like to the broker)."""
        sock = self._client.socket()
        self._client.loop_stop()
        if sock is not None:
            sock.close()
        self.messages.put(None)

    # ------------------------------------------------------------------ traffic

    def publish_ack(self, gateway_id: str, payload: bytes) -> None:
        """Publish to ``phd/v1/gw/{gateway_id}/ack`` at QoS 1 and wait for the PUBACK."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call] # unannotated upstream
        props.ContentType = "application/cbor"
        info = self._client.publish(f"phd/v1/gw/{gateway_id}/ack", payload, 1, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish_failed:{paho.error_string(info.rc)}")
        try:
            info.wait_for_publish(self._s.timeout)
        except (RuntimeError, ValueError) as exc:
            raise MqttError("publish_failed:connection") from exc
        if not info.is_published():
            raise MqttError("publish_timeout")

    def ack(self, message: InboundMessage) -> None:
        """Tell the broker the message is done with (only after the ack was published)."""
        rc = self._client.ack(message.mid, message.qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"ack_failed:{paho.error_string(rc)}")

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, _c: paho.Client, _u: object, _f: Any, rc: Any, _p: Any) -> None:
        self._connect_code = _code(rc)
        self._connected.set()

    def _on_subscribe(self, _c: paho.Client, _u: object, _mid: int, codes: Any, _p: Any) -> None:
        self._suback_codes = [_code(c) for c in codes]
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        # The broker sends at most receive_maximum unacknowledged messages: the queue is
        # bounded by the protocol, so this never blocks the network thread for long.
        self.messages.put(InboundMessage(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: Any, _rc: Any, _p: Any) -> None:
        self.disconnected.set()
        self.messages.put(None)
