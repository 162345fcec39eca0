"""paho-mqtt adapter: one MQTT v5 connection over mutual TLS, bridged into asyncio.

The only module of mobile_gateway that imports paho. The bridge follows aiomqtt: paho's
network loop runs in its own thread (``loop_start``); its callbacks never do work, they only
settle asyncio futures or feed a bounded queue through ``loop.call_soon_threadsafe``. Blocking
paho calls (connect with its TLS handshake, publish, subscribe, disconnect) run in a worker
thread so the event loop never waits on a paho lock. paho's exceptions and return codes are
translated into :class:`~mobile_gateway.errors.MqttError` here and nowhere else.

One object = one connection. There is no automatic reconnect in here: the uplink owns the
link state machine and the backoff (mobile_gateway.uplink), so it always knows whether the
link is up. Must never log payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mobile_gateway.errors import MqttError

__all__ = ["CBOR_CONTENT_TYPE", "Message", "MqttConnection", "MqttSettings"]

log = logging.getLogger(__name__)

CBOR_CONTENT_TYPE = "application/cbor"
NOT_AUTHORIZED = 135  # MQTT v5 reason code 0x87


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    ssl_context: ssl.SSLContext
    keepalive: int = 30
    connect_timeout: float = 10.0
    queue_size: int = 1024


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    content_type: str | None = None


def _code(rc: ReasonCode | int | Any) -> int:
    return int(rc.value) if isinstance(rc, ReasonCode) else int(rc)


class _Client(paho.Client):
    def _ssl_wrap_socket(self, tcp_sock: Any) -> ssl.SSLSocket:
        # paho 2.2 leaks the TLS socket when the handshake fails (a refused or rogue peer):
        # same steps as upstream, but the socket is closed on failure. Hostname checking is
        # done by our context (check_hostname is on), so match_hostname is not needed.
        ctx = self._ssl_context
        if ctx is None:  # tls_set_context() is always called before connect()
            raise MqttError("tls_not_configured")
        _set_nodelay(tcp_sock)
        sock = ctx.wrap_socket(tcp_sock, server_hostname=self._host, do_handshake_on_connect=False)
        try:
            sock.settimeout(self._connect_timeout)
            sock.do_handshake()
        except BaseException:
            sock.close()
            raise
        return sock


class MqttConnection:
    """An established MQTT v5 session. Create with :meth:`connect`."""

    def __init__(self, settings: MqttSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self._client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        self._client.tls_set_context(settings.ssl_context)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._connected: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[MqttError] = loop.create_future()
        self._messages: asyncio.Queue[Message] = asyncio.Queue(settings.queue_size)
        self.dropped_messages = 0
        # mid -> future, and results that arrived before their future was registered (paho
        # may handle the PUBACK in its thread before publish() has returned the mid to us).
        # Both are touched only on the event loop thread.
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._early: dict[int, int] = {}
        self._started = False

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    async def connect(cls, settings: MqttSettings) -> MqttConnection:
        """Open TCP + TLS, send CONNECT and wait for a successful CONNACK."""
        loop = asyncio.get_running_loop()
        conn = cls(settings, loop)
        try:
            async with asyncio.timeout(settings.connect_timeout):
                await conn._open()
        except TimeoutError as exc:
            await conn.close()
            raise MqttError("connect_timeout") from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _open(self) -> None:
        try:
            rc = await asyncio.to_thread(
                self._client.connect,
                self._settings.host,
                self._settings.port,
                self._settings.keepalive,
                clean_start=True,
            )
        except ssl.SSLError as exc:
            raise MqttError(f"tls_refused:{exc.reason or 'handshake'}") from exc
        except OSError as exc:
            raise MqttError(f"unreachable:{type(exc).__name__}") from exc
        if rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"connect_failed:{paho.error_string(rc)}")
        # paho's own network thread (loop_forever without reconnect: it ends with the
        # connection). With that thread registered, publish() only queues and wakes it; a
        # loop we drove ourselves would let publish() write to the TLS socket from the
        # calling thread while the loop thread reads it, and OpenSSL sockets are not safe
        # for that (seen as "connection lost" under load).
        # loop_start() builds paho's wake-up socket pair with a blocking accept().
        await asyncio.to_thread(self._client.loop_start)
        self._started = True
        await asyncio.shield(self._connected)

    async def close(self) -> None:
        """Send DISCONNECT (if connected), stop paho's thread, fail pending waiters."""
        if self._started:
            if not self.closed.done():
                with contextlib.suppress(Exception):  # best effort: the link may be gone
                    await asyncio.to_thread(self._client.disconnect)
            await asyncio.to_thread(self._client.loop_stop)
        # Also close what a failed connect() left open (socket and wake-up socket pair).
        await asyncio.to_thread(self._client._reset_sockets)
        self._settle_closed(MqttError("closed"))

    # ----------------------------------------------------------------- operations
    async def subscribe(self, topic: str, *, qos: int = 1, ack_wait: float = 10.0) -> int:
        """Subscribe and wait for SUBACK; raises MqttError("subscribe_refused", code)."""
        fut = self._loop.create_future()
        rc, mid = await asyncio.to_thread(self._client.subscribe, topic, qos)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe_failed:{paho.error_string(rc)}")
        code = await self._await_mid(mid, fut, ack_wait)
        if code >= 0x80:
            raise MqttError("subscribe_refused", code=code)
        return code

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        content_type: str | None = CBOR_CONTENT_TYPE,
        ack_wait: float = 10.0,
    ) -> int:
        """Publish and (QoS 1) wait for PUBACK; returns its reason code.

        Raises MqttError("publish_refused", code) for a reason code >= 0x80, e.g. 135 (not
        authorized) when the ACL forbids the topic. A PUBACK says the broker took the message,
        nothing more: the outbox ignores it (the hospital's ack decides).
        """
        # paho's Properties constructor is unannotated upstream.
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if content_type is not None:
            props.ContentType = content_type
        fut = self._loop.create_future()
        info = await asyncio.to_thread(
            functools.partial(
                self._client.publish, topic, payload, qos=qos, retain=False, properties=props
            )
        )
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish_failed:{paho.error_string(info.rc)}")
        if qos == 0:
            return 0
        code = await self._await_mid(info.mid, fut, ack_wait)
        if code >= 0x80:
            raise MqttError("publish_refused", code=code)
        return code

    async def next_message(self) -> Message:
        """The next message on a subscribed topic (bounded queue)."""
        return await self._messages.get()

    # ----------------------------------------------------------------- future plumbing
    async def _await_mid(self, mid: int, fut: asyncio.Future[int], wait_s: float) -> int:
        # Runs on the event loop, like _settle_mid: no lock is needed between them.
        early = self._early.pop(mid, None)
        if early is not None:
            return early
        self._waiters[mid] = fut
        waitables: set[asyncio.Future[Any]] = {fut, self.closed}
        done, _ = await asyncio.wait(waitables, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        self._waiters.pop(mid, None)
        if fut in done:
            return fut.result()
        if self.closed in done:
            raise self.closed.result()
        raise MqttError("ack_timeout")

    def _settle_mid(self, mid: int, code: int) -> None:  # event loop thread
        fut = self._waiters.pop(mid, None)
        if fut is None:
            # paho handled the PUBACK/SUBACK before publish()/subscribe() returned the mid.
            self._early[mid] = code
        elif not fut.done():
            fut.set_result(code)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(functools.partial(fn, *args))

    def _settle_closed(self, err: MqttError) -> None:  # event loop thread
        if not self.closed.done():
            self.closed.set_result(err)
        if not self._connected.done():
            self._connected.set_exception(err)
            self._connected.exception()  # mark retrieved: connect() may not be waiting

    def _deliver(self, msg: Message) -> None:  # event loop thread
        try:
            self._messages.put_nowait(msg)
        except asyncio.QueueFull:
            # Dropping an ack is safe: the batch times out and is re-sent; the hospital
            # answers "duplicate". Blocking paho's thread would stall keepalives instead.
            self.dropped_messages += 1

    # ----------------------------------------------------------------- paho callbacks
    # These run in paho's thread: they only hand results to the event loop.
    def _on_connect(
        self, _c: paho.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        code = _code(rc)
        if code == 0:
            self._call(_set_result, self._connected, None)
        else:
            self._call(self._settle_closed, MqttError("connect_refused", code=code))

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        self._call(self._settle_closed, MqttError("disconnected", code=_code(rc)))

    def _on_publish(
        self, _c: paho.Client, _u: object, mid: int, rc: ReasonCode, _p: object
    ) -> None:
        self._call(self._settle_mid, mid, _code(rc))

    def _on_subscribe(
        self, _c: paho.Client, _u: object, mid: int, rcs: list[ReasonCode], _p: object
    ) -> None:
        self._call(self._settle_mid, mid, max((_code(r) for r in rcs), default=0x80))

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        props = msg.properties
        content_type = getattr(props, "ContentType", None) if props is not None else None
        message = Message(topic=msg.topic, payload=bytes(msg.payload), content_type=content_type)
        self._call(self._deliver, message)


def _set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off (paho does not): every MQTT exchange here is a small packet
    awaiting a small answer (PUBLISH -> PUBACK, batch -> hospital ack), and Nagle holds a
    small write while an earlier one is unacknowledged, i.e. until the peer's delayed ACK
    (up to about 40 ms on Linux). Measured by ``phd bench e2e``: most of the seal-to-commit
    latency at low rates (docs/gateway.md "Uplink window and latency")."""
    with contextlib.suppress(OSError):  # not TCP (a test double): nothing to tune
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
