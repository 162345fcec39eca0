"""The whole gateway against a real mosquitto and a test acker: nothing accepted is lost."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mobile_gateway.app import Gateway
from mobile_gateway.config import GatewayConfig
from mobile_gateway.mqtt import MqttConnection, MqttSettings
from mobile_gateway.status import read_status
from phd_protocol.errors import RejectReason
from phd_protocol.ingress import (
    IngressReply,
    IngressStatus,
    ReplyReader,
    encode_request,
)
from phd_protocol.wire import EnvelopeResult
from tests.gateway.acker import Acker, Policy, ingest_context
from tests.mosquitto_fixtures import MosquittoBroker, free_port

pytestmark = pytest.mark.integration


def gw_config(broker: MosquittoBroker, tmp: Path, **kw: object) -> GatewayConfig:
    layout = broker.layout
    values: dict[str, object] = {
        "broker_host": broker.host,
        "broker_port": broker.port,
        "ca_file": layout.ca_cert("service"),
        "cert_file": layout.gateway_chain("gw-1"),
        "key_file": layout.gateway_key("gw-1"),
        "socket_path": tmp / "run" / "ingress.sock",
        "outbox_path": tmp / "outbox.db",
        "metrics_port": 0,
        "ack_timeout": 1.0,
        "retry_base": 0.05,
        "retry_cap": 0.2,
        "reconnect_base": 0.05,
        "reconnect_cap": 0.3,
    }
    values.update(kw)
    return GatewayConfig(**values)  # type: ignore[arg-type]  # test-built kwargs


async def send(path: Path, envelopes: list[bytes]) -> list[IngressReply]:
    """An agent: one request at a time, each waiting for its reply. Stops at a dead link."""
    replies: list[IngressReply] = []
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return replies
    parser = ReplyReader()
    try:
        for index, env in enumerate(envelopes):
            writer.write(encode_request(env))
            await writer.drain()
            while len(replies) <= index:
                chunk = await reader.read(4096)
                if not chunk:
                    return replies
                replies += parser.feed(chunk)
    except ConnectionError:
        return replies
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return replies


async def wait_socket(path: Path, within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while True:
            try:
                _, writer = await asyncio.open_unix_connection(str(path))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


@contextlib.asynccontextmanager
async def running(config: GatewayConfig) -> AsyncIterator[Gateway]:
    gw = Gateway(config)
    task = asyncio.create_task(gw.run(handle_signals=False))
    ready = asyncio.create_task(gw.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield gw
    finally:
        gw.stop()
        await task


@contextlib.asynccontextmanager
async def acking(broker: MosquittoBroker, policy: Policy | None = None) -> AsyncIterator[Acker]:
    acker = Acker(broker.layout, broker.host, broker.port, policy)
    await acker.start()
    try:
        yield acker
    finally:
        await acker.stop()


async def until(cond: Callable[[], object], within: float = 20.0) -> None:
    # Polling on purpose: the conditions span the acker, the outbox and the link, which share
    # no event; 50 ms keeps the tests quick without busy-waiting.
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def envs(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i:05d}".encode() * 3 for i in range(n)]


async def test_relay_end_to_end(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config = gw_config(mosquitto, tmp_path)
    async with acking(mosquitto) as acker, running(config) as gw:
        mode = (await asyncio.to_thread(config.socket_path.stat)).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660
        batches = [envs(f"c{c}", 100) for c in range(4)]
        replies = await asyncio.wait_for(
            asyncio.gather(*(send(config.socket_path, b) for b in batches)), 20
        )
        assert all(r.status is IngressStatus.ACCEPTED for rs in replies for r in rs)
        assert sum(len(rs) for rs in replies) == 400
        sent = [e for b in batches for e in b]
        try:
            await until(
                lambda: len(acker.stored) == 400 and gw.outbox is not None and gw.outbox.depth == 0
            )
        except TimeoutError:
            assert gw.outbox is not None
            assert gw.uplink is not None
            pytest.fail(f"{len(acker.stored)} {gw.outbox.depth} {gw.uplink.state} {acker.errors}")
        assert sorted(acker.stored) == sorted(sent)
        assert acker.content_types == {"application/cbor"}
    status = await asyncio.to_thread(read_status, config.outbox_path)
    assert (status.depth, status.done_total, status.link_state) == (0, 400, "stopped")
    assert status.last_ack_age is not None


async def test_acks_decide_retry_and_dead_letter(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    def policy(env: bytes, seen: int) -> EnvelopeResult | None:
        if env.startswith(b"bad"):
            return EnvelopeResult.rejected(RejectReason.BAD_SIGNATURE, permanent=True)
        if env.startswith(b"later") and seen < 3:
            return EnvelopeResult.retry_later()
        if env.startswith(b"transient") and seen < 2:
            return EnvelopeResult.rejected(RejectReason.DECRYPT_FAILED, permanent=False)
        return None

    config = gw_config(mosquitto, tmp_path)
    async with acking(mosquitto, policy) as acker, running(config) as gw:
        replies = await send(config.socket_path, [b"bad-1", b"later-1", b"ok-1", b"transient-1"])
        assert [r.status for r in replies] == [IngressStatus.ACCEPTED] * 4
        await until(
            lambda: len(acker.stored) == 3 and gw.outbox is not None and gw.outbox.depth == 0
        )
        assert acker.seen[b"later-1"] == 3
        assert acker.seen[b"transient-1"] == 2
        assert acker.seen[b"ok-1"] == 1  # settled entries are never re-sent
    status = await asyncio.to_thread(read_status, config.outbox_path)
    assert status.dead == 1
    assert [d.reason for d in status.dead_letters] == ["bad_signature"]


async def test_missing_ack_is_retried_after_timeout(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    config = gw_config(mosquitto, tmp_path, ack_timeout=0.5)
    async with running(config) as gw:
        await send(config.socket_path, [b"lonely"])
        await asyncio.sleep(1.0)  # published, PUBACKed, never acked
        assert gw.outbox is not None
        assert gw.outbox.depth == 1  # a PUBACK deletes nothing
        async with acking(mosquitto) as acker:
            await until(lambda: gw.outbox is not None and gw.outbox.depth == 0)
        assert acker.stored == [b"lonely"]


async def test_broker_restart_during_stream(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config = gw_config(mosquitto, tmp_path)
    async with acking(mosquitto) as acker, running(config) as gw:
        first = envs("a", 150)
        sender = asyncio.create_task(send(config.socket_path, first))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(mosquitto.restart)
        accepted = [e for e, r in zip(first, await sender, strict=False) if r.accepted]
        second = envs("b", 150)
        accepted += [
            e
            for e, r in zip(second, await send(config.socket_path, second), strict=True)
            if r.accepted
        ]
        assert len(accepted) == 300  # ingress never depends on the link
        await until(
            lambda: (
                set(acker.stored) == set(accepted)
                and gw.outbox is not None
                and gw.outbox.depth == 0
            ),
            30,
        )


async def test_back_pressure_and_framing_errors(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    # No broker reachable: everything queues; a full outbox answers busy, never drops.
    config = gw_config(mosquitto, tmp_path, broker_port=free_port(), outbox_max_entries=5)
    async with running(config) as gw:
        replies = await send(config.socket_path, envs("x", 7))
        assert [r.status for r in replies] == [IngressStatus.ACCEPTED] * 5 + [
            IngressStatus.BUSY
        ] * 2
        assert replies[-1].reason == "outbox_full"
        reader, writer = await asyncio.open_unix_connection(str(config.socket_path))
        writer.write((70_000).to_bytes(4, "big"))
        await writer.drain()
        data = await reader.read(100)
        assert ReplyReader().feed(data)[0].status is IngressStatus.TOO_LARGE
        assert await reader.read(100) == b""  # closed after a framing error
        writer.close()
        assert gw.outbox is not None
        assert gw.outbox.depth == 5


async def test_kill_9_during_stream_then_restart_loses_nothing(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    layout = mosquitto.layout
    sock = tmp_path / "run" / "ingress.sock"
    argv = [
        sys.executable, "-m", "phd_cli.main", "gateway", "run",
        "--pki", str(layout.root), "--name", "gw-1",
        "--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port),
        "--socket", str(sock), "--outbox", str(tmp_path / "outbox.db"),
        "--metrics-port", "0", "--ack-timeout", "1", "--retry-base", "0.05",
        "--reconnect-base", "0.05", "--reconnect-cap", "0.3",
    ]  # fmt: skip

    async def start() -> asyncio.subprocess.Process:
        await asyncio.to_thread(sock.unlink, missing_ok=True)  # a killed gateway leaves it
        proc = await asyncio.create_subprocess_exec(*argv)
        await wait_socket(sock)
        return proc

    accepted: list[bytes] = []
    sent = envs("k", 2200)
    async with acking(mosquitto) as acker:
        proc = await start()
        stream = asyncio.create_task(send(sock, sent[:2000]))
        await until(lambda: len(acker.stored) >= 20, 20)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        replies = await stream
        accepted += [e for e, r in zip(sent, replies, strict=False) if r.accepted]
        assert len(accepted) < 2000  # the kill really interrupted the stream
        proc = await start()
        replies = await send(sock, sent[2000:])
        accepted += [e for e, r in zip(sent[2000:], replies, strict=True) if r.accepted]
        await until(lambda: set(accepted) <= set(acker.stored), 30)
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    # Graceful stop: nothing left in flight, link closed, the status says it is not running.
    status = await asyncio.to_thread(read_status, tmp_path / "outbox.db")
    assert (status.in_flight, status.link_state, status.running) == (0, "stopped", False)
    # Every accepted envelope is done or still pending (acked by the hospital but the SIGTERM
    # came before the ack: re-sent at next start, answered "duplicate"). Envelopes committed
    # just before the kill whose reply the agent never saw are kept too, hence >=.
    assert status.done_total + status.pending >= len(set(accepted))
    assert set(acker.stored) <= set(sent)  # nothing invented, nothing altered
    assert len(acker.stored) == len(set(acker.stored))


async def fetch_metrics(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    body = await reader.read()
    writer.close()
    await writer.wait_closed()
    return body.decode()


async def test_metrics_and_status_command(
    mosquitto: MosquittoBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = gw_config(mosquitto, tmp_path, metrics_port=port)
    async with running(config) as gw, acking(mosquitto):
        await send(config.socket_path, envs("m", 5))
        await until(lambda: gw.outbox is not None and gw.outbox.depth == 0)
        text = await fetch_metrics(port)
        assert 'phd_gateway_acks_total{status="stored"} 5.0' in text
        assert "phd_gateway_outbox_depth 0.0" in text
        assert "phd_gateway_link_up 1.0" in text
    main = (await asyncio.to_thread(importlib.import_module, "phd_cli.main")).main  # rich stats cwd
    rc = await asyncio.to_thread(
        main, ["gateway", "status", "--outbox", str(config.outbox_path), "--json"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert '"done_total": 5' in out
    assert '"link_state": "stopped (not running)"' in out


async def test_mqtt_connection_turns_nagle_off(mosquitto: MosquittoBroker) -> None:
    # Regression: with Nagle on (paho's default) each small PUBLISH waited for the peer's
    # delayed ACK of the previous packet, about 40 ms per uplink round trip.
    conn = await MqttConnection.connect(
        MqttSettings(
            host=mosquitto.host,
            port=mosquitto.port,
            client_id="ingest-1",
            ssl_context=ingest_context(mosquitto.layout),
        )
    )
    try:
        sock = conn._client.socket()  # the adapter exposes no socket: tested from outside
        assert isinstance(sock, socket.socket)  # an ssl.SSLSocket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert await conn.publish("phd/v1/gw/gw-1/ack", b"\xa0") < 0x80  # still a working link
    finally:
        await conn.close()
