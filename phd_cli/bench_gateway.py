"""``phd bench gateway``: envelopes/s relayed by a real gateway next to raw paho, and memory.

Everything runs on this machine, in a temporary directory, in one run:

- a fresh PKI and a mosquitto started with the production config (``phd broker config``);
- **raw**: one paho client publishes 300-byte messages at QoS 1 to its own up topic while an
  ingest-identity subscriber in the same process receives them on the shared subscription:
  the transport ceiling for one message per envelope (API-FACTS.md: about 2,500 msg/s);
- **relayed**: a real ``phd gateway run`` process; agents push 300-byte envelopes through the
  Unix socket (each waits for "accepted", i.e. the outbox commit); an acker with the ingest
  identity answers every batch "stored"; the clock stops when the gateway's outbox is empty,
  i.e. every envelope went ingress -> outbox (fsync) -> MQTT -> hospital ack -> done;
- **memory**: resident set size of a gateway process holding 100,000 envelopes (connected,
  nobody acking), read from /proc.

Targets: relayed >= 70% of raw; RSS < 60 MB with 100,000 queued.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from phd_cli.cmd_bench import BenchRow
from phd_cli.procstat import status_kib

PART = "gateway"
ENVELOPE_SIZE = 300
RATIO_TARGET = 0.70
RSS_TARGET_MB = 60.0
QUEUED = 100_000
AGENTS = 16
RAW_WINDOW = 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    from mobile_gateway.tls import client_context

    return client_context(ca_file=ca, cert_file=cert, key_file=key)


class _Env:
    """PKI + running mosquitto in a temporary directory."""

    def __init__(self, root: Path) -> None:
        from hospital_server.broker.config import write_broker_config
        from hospital_server.pki.ca import init_pki, issue_gateway
        from hospital_server.pki.layout import PkiLayout

        self.layout = PkiLayout(root / "pki")
        init_pki(self.layout)
        issue_gateway(self.layout, "gw-bench")
        issue_gateway(self.layout, "gw-raw")
        self.port = _free_port()
        self.files = write_broker_config(self.layout, root / "broker", port=self.port)
        self.proc = subprocess.Popen(  # noqa: S603  # fixed binary, generated config
            ["/usr/sbin/mosquitto", "-c", str(self.files.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait()

    def _wait(self) -> None:
        ctx = self.ingest_ctx()
        deadline = time.monotonic() + 10
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                    ctx.wrap_socket(raw, server_hostname="localhost"),
                ):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def ingest_ctx(self) -> ssl.SSLContext:
        return _context(
            self.layout.ca_cert("service"),
            self.layout.ingest_worker_cert(),
            self.layout.ingest_worker_key(),
        )

    def gateway_ctx(self, name: str) -> ssl.SSLContext:
        return _context(
            self.layout.ca_cert("service"),
            self.layout.gateway_chain(name),
            self.layout.gateway_key(name),
        )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --------------------------------------------------------------------------- raw paho
def _raw_rate(env: _Env, n: int) -> float:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    received = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(*_: Any) -> None:
        nonlocal received
        received += 1
        if received == n:
            done.set()

    def client(ctx: ssl.SSLContext) -> Any:
        c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        c.tls_set_context(ctx)
        return c

    sub = client(env.ingest_ctx())
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect("localhost", env.port)
    sub.loop_start()
    sub.subscribe("$share/ingest/phd/v1/gw/+/up", qos=1)
    subscribed.wait(10)
    pub = client(env.gateway_ctx("gw-raw"))
    pub.connect("localhost", env.port)
    pub.loop_start()
    payload = b"\xa5" * ENVELOPE_SIZE
    start = time.perf_counter()
    for published in range(n):
        # Stay within mosquitto's per-client queue (max_queued_messages, default 1000): a
        # publisher far ahead of its consumer would have messages dropped, not measured.
        while published - received >= RAW_WINDOW:
            time.sleep(0.0002)
        pub.publish("phd/v1/gw/gw-raw/up", payload, qos=1)
    if not done.wait(120):
        raise RuntimeError(f"raw: only {received} of {n} messages arrived")
    elapsed = time.perf_counter() - start
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return received / elapsed


# --------------------------------------------------------------------------- the gateway
def _start_gateway(env: _Env, root: Path, *, ack_timeout: float) -> tuple[Any, Path, Path]:
    sock = root / "gw" / "ingress.sock"
    outbox = root / "gw" / "outbox.db"
    argv = [
        sys.executable, "-m", "phd_cli.main", "gateway", "run",
        "--pki", str(env.layout.root), "--name", "gw-bench",
        "--broker-host", "localhost", "--broker-port", str(env.port),
        "--socket", str(sock), "--outbox", str(outbox), "--metrics-port", "0",
        "--ack-timeout", str(ack_timeout),
    ]  # fmt: skip
    proc = subprocess.Popen(argv)  # noqa: S603  # our own CLI
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)
    return proc, sock, outbox


async def _agents(sock: Path, total: int, agents: int) -> int:
    from phd_protocol.ingress import ReplyReader, encode_request

    accepted = 0

    async def agent(k: int, count: int) -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_unix_connection(str(sock))
        parser = ReplyReader()
        for i in range(count):
            body = f"{k:04d}-{i:08d}".encode()
            writer.write(encode_request(body + b"\x00" * (ENVELOPE_SIZE - len(body))))
            await writer.drain()
            replies: list[Any] = []
            while not replies:
                replies = parser.feed(await reader.read(64))
            accepted += replies[0].accepted
        writer.close()
        await writer.wait_closed()

    per = total // agents
    await asyncio.gather(*(agent(k, per) for k in range(agents)))
    return accepted


async def _acker(env: _Env, stop: asyncio.Event) -> None:
    from mobile_gateway.mqtt import MqttConnection, MqttSettings
    from phd_protocol.wire import EnvelopeResult, UplinkAck, UplinkBatch

    conn = await MqttConnection.connect(
        MqttSettings(host="localhost", port=env.port, client_id="", ssl_context=env.ingest_ctx())
    )
    await conn.subscribe("$share/ingest/phd/v1/gw/+/up")
    stored = EnvelopeResult.stored()
    pending: set[asyncio.Task[int]] = set()
    try:
        while not stop.is_set():
            try:
                async with asyncio.timeout(0.2):
                    msg = await conn.next_message()
            except TimeoutError:
                continue
            batch = UplinkBatch.decode(msg.payload)
            ack = UplinkAck(id=batch.id, results=(stored,) * len(batch.envelopes))
            gw = msg.topic.split("/")[3]
            # Acks go out concurrently, as a pool of ingest workers would send them.
            task = asyncio.create_task(conn.publish(f"phd/v1/gw/{gw}/ack", ack.encode()))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        await asyncio.gather(*pending, return_exceptions=True)
        await conn.close()


async def _relay(env: _Env, sock: Path, outbox: Path, n: int) -> tuple[float, int]:
    from mobile_gateway.status import read_status

    stop = asyncio.Event()
    acker = asyncio.create_task(_acker(env, stop))
    await asyncio.sleep(0.3)
    start = time.perf_counter()
    accepted = await _agents(sock, n, AGENTS)
    while True:
        status = await asyncio.to_thread(read_status, outbox)
        if status.depth == 0 and status.done_total >= accepted:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - start
    stop.set()
    await acker
    return accepted / elapsed, accepted


def _rss_mb(pid: int) -> float:
    kib = status_kib(pid, "VmRSS")
    if kib is None:
        raise RuntimeError("no VmRSS")
    return kib / 1024


def _stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(console: Any, quick: bool) -> list[BenchRow]:
    n = 3_000 if quick else 20_000
    queued = 20_000 if quick else QUEUED
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="phd-bench-gw-") as tmp:
        root = Path(tmp)
        env = _Env(root)
        try:
            console.print(f"raw paho: {n} x {ENVELOPE_SIZE} B at QoS 1 through mosquitto (mTLS)")
            raw = _raw_rate(env, n)
            console.print(f"gateway relay: {n} envelopes from {AGENTS} agents, acked end to end")
            proc, sock, outbox = _start_gateway(env, root / "relay", ack_timeout=30)
            try:
                relayed, _ = asyncio.run(_relay(env, sock, outbox, n))
            finally:
                _stop(proc)
            console.print(f"memory: gateway holding {queued:,} envelopes (nobody acking)")
            proc, sock, _ = _start_gateway(env, root / "mem", ack_timeout=3600)
            try:
                asyncio.run(_agents(sock, queued, AGENTS))
                rss = _rss_mb(proc.pid)
            finally:
                _stop(proc)
        finally:
            env.close()
    ratio = relayed / raw
    rows += [
        BenchRow(part=PART, metric="raw paho publish (1 msg/envelope)", value=raw, unit="msg/s"),
        BenchRow(part=PART, metric="relayed end to end (acked)", value=relayed, unit="env/s"),
        BenchRow(
            part=PART,
            metric="relayed / raw",
            value=ratio,
            unit="x",
            target=f">= {RATIO_TARGET}",
            met=ratio >= RATIO_TARGET,
        ),
        BenchRow(
            part=PART,
            metric=f"gateway RSS, {queued:,} queued",
            value=rss,
            unit="MB",
            target=f"< {RSS_TARGET_MB:g}" + ("" if queued == QUEUED else " (at 100,000)"),
            met=rss < RSS_TARGET_MB if queued == QUEUED else None,
        ),
    ]
    return rows
