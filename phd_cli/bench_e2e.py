"""``phd bench e2e``: the whole pipeline under load, next to its two ceilings, in one run.

What it measures, on one fresh stack laid out as compose.yaml deploys it (``phd_cli.demo.stack``:
mosquitto with mutual TLS and the dynamic-security ACLs, ``phd server run`` serving the API,
two ``phd server ingest`` worker processes on a shared subscription, one SQLite database,
``phd gateway run``), in this order:

1. transport ceiling: a paho publisher (the gateway's certificate) to a paho subscriber (the
   ingest worker's certificate, ``$share/ingest/...``) through the same broker, same TLS,
   QoS 1, each message the size of a full uplink batch of real envelopes; measured before the
   server starts, so nothing else consumes the topic;
2. enrollment of many load devices through the real API (one-time codes, CSRs, the agent's
   enrollment client), so every envelope is sealed with a real enrolled device credential;
3. maximum rate: pre-sealed envelopes (three thermometer readings each) fed as fast as the
   gateway's ingress socket takes them (closed loop, several connections); end-to-end rate =
   envelopes committed per second in the database (middle 60 % of the commits, so start-up
   and drain do not count), in three passes of fresh envelopes, the best counting as the
   crypto ceiling's best pass does (each pass is printed, and the median pass's ratio too);
   CPU seconds of every child per 1,000 readings over all passes (from /proc), and the
   bench's own (the feeder, outside the system's total), their resident memory;
4. latency at half that rate (and a tenth, for context): open loop, envelope i is due at
   t0 + i/rate and sealed with exactly that time as its ``ts``, so every latency includes any
   lateness of the feeder itself. Seal-to-commit ends when the row is visible in the database
   (new rows polled every 10 ms); the stages are split as seal -> the gateway's "durably
   stored" reply, and seal -> ``received_at`` (when the worker took the batch);
5. crypto ceiling: open + verify (HPKE, COSE, signature, certificate standing) per envelope,
   one core, on the same envelopes; three passes before the maximum rate and three after,
   the best counts. The system runs on every core of the machine (two ingest processes, as
   deployed), the crypto ceiling on one: the ratio says how much of one core's verification
   rate the whole deployed path delivers.

Targets (issue 8): end-to-end envelopes/s >= 50 % of the lower ceiling; p99 < 250 ms at half of
the maximum rate. Everything measured is printed, misses included. This module must never
print a key, a password or a reading; its run directory (``var/bench/``) is left for reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from phd_cli.cmd_bench import BenchRow, percentile
from phd_cli.demo import setup
from phd_cli.demo.procs import Supervisor, free_port, require_binary
from phd_cli.demo.stack import Stack, UplinkTuning
from phd_cli.demo.staff_login import StaffLogin
from phd_cli.procstat import group_cpu_seconds, group_rss_mib

__all__ = ["run"]

PART = "e2e"
READINGS_PER_ENVELOPE = 3
BATCH = 64  # envelopes per uplink message at saturation (the gateway's batch_max_count)
RATIO_TARGET = 0.5
P99_TARGET_MS = 250.0
FEED_CONNECTIONS = 8
INGEST_WORKERS = ("ingest-1", "ingest-2")  # as compose.yaml: two worker processes
OPEN_LOOP_CONNECTIONS = 32


@dataclass(frozen=True, slots=True)
class Sizes:
    devices: int
    max_envelopes: int  # per maximum-rate pass
    max_passes: int
    half_seconds: float
    mqtt_messages: int


def _sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes(
            devices=8, max_envelopes=600, max_passes=2, half_seconds=6.0, mqtt_messages=200
        )
    return Sizes(
        devices=32, max_envelopes=6000, max_passes=3, half_seconds=20.0, mqtt_messages=1000
    )


# --------------------------------------------------------------------------- envelopes
@dataclass
class LoadDevice:
    device_id: str
    signer: Any  # phd_protocol.envelope.DeviceSigner
    recipient: Any  # phd_protocol.envelope.RecipientKey
    credential: Any  # device_agent.store.Credential
    readings_made: int = 0


def _readings(device: LoadDevice, count: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """Three thermometer values with distinct device-clock seconds (distinct content ids)."""
    from device_agent.ble import Reading
    from device_agent.sealer import observations_for
    from device_agent.virtual import firmware as fw
    from device_agent.virtual.firmware import Sample
    from phd_protocol.envelope import RawRecord

    wire: list[dict[str, Any]] = []
    raw: list[Any] = []
    base = datetime(2026, 1, 1, 8, 0)  # noqa: DTZ001 - a device clock carries no zone
    now = datetime.now(UTC)
    for _ in range(count):
        device.readings_made += 1
        stamp = base + timedelta(seconds=device.readings_made)
        celsius = Decimal(360 + device.readings_made % 30) / 10  # 36.0 .. 38.9 degC
        data = fw.temperature(celsius=Sample(celsius, -1), when=stamp, site=6)
        reading = Reading(0x2A1C, data, now)
        observations = observations_for(reading, device_id=device.device_id, clock_offset=None)
        wire.extend(o.to_wire() for o in observations)
        raw.append(RawRecord(uuid="2A1C", t=int(now.timestamp() * 1000), b=data))
    return wire, raw


def _seal(device: LoadDevice, ts_ms: int) -> tuple[str, int, bytes]:
    from phd_protocol.envelope import seal

    wire, raw = _readings(device, READINGS_PER_ENVELOPE)
    seq = device.credential.next_seq()
    envelope = seal(
        signer=device.signer,
        recipient=device.recipient,
        seq=seq,
        observations=wire,
        raw=raw,
        phd={"model": "bench"},
        clock=lambda: ts_ms,
    )
    return device.device_id, seq, envelope


def _seal_all(devices: list[LoadDevice], count: int, ts_ms: int) -> list[tuple[str, int, bytes]]:
    """``count`` envelopes sealed at ``ts_ms``, the devices taking turns."""
    return [_seal(devices[i % len(devices)], ts_ms) for i in range(count)]


def _sample_batch_payload() -> bytes:
    """A full uplink batch of envelopes the size the load devices seal (throwaway keys)."""
    from phd_protocol import crypto
    from phd_protocol.envelope import DeviceSigner, RecipientKey
    from phd_protocol.wire import UplinkBatch

    hpke = crypto.generate_hpke_key()
    device = LoadDevice(
        device_id=str(uuid.uuid4()),
        signer=DeviceSigner(
            device_id=str(uuid.uuid4()),
            kid=crypto.sha256(b"bench"),
            key=crypto.generate_signing_key(),
        ),
        recipient=RecipientKey.from_raw(crypto.sha256(b"r")[:16], crypto.x25519_public_raw(hpke)),
        credential=None,
    )
    device.device_id = device.signer.device_id

    class _Seq:
        n = 0

        def next_seq(self) -> int:
            self.n += 1
            return self.n

    device.credential = _Seq()
    envelopes = [_seal(device, int(time.time() * 1000))[2] for _ in range(BATCH)]
    return UplinkBatch.new(envelopes).encode()


# --------------------------------------------------------------------------- MQTT ceiling
def _mqtt_ceiling(stack: Stack, payload: bytes, messages: int) -> float:
    """Messages/s from a paho publisher to a paho subscriber through the stack's broker."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    layout = stack.layout
    done = threading.Event()
    received = 0
    first_sent = 0.0
    last_received = 0.0

    def client(name: str, chain: Path, key: Path) -> Any:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(layout.ca_bundle), certfile=str(chain), keyfile=str(key))
        return c

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal received, last_received
        received += 1
        last_received = time.perf_counter()
        if received >= messages:
            done.set()

    subscribed = threading.Event()
    worker = INGEST_WORKERS[0]  # the ceiling runs before the workers start
    sub = client(worker, layout.ingest_worker_chain(worker), layout.ingest_worker_key(worker))
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect(setup.BROKER_HOST, stack.ports.mqtt, keepalive=30)
    sub.loop_start()
    pub = client(
        setup.GATEWAY_ID,
        layout.gateway_chain(setup.GATEWAY_ID),
        layout.gateway_key(setup.GATEWAY_ID),
    )
    pub.max_inflight_messages_set(stack.tuning.max_in_flight * 4)
    pub.connect(setup.BROKER_HOST, stack.ports.mqtt, keepalive=30)
    pub.loop_start()
    try:
        sub.subscribe("$share/ingest/phd/v1/gw/+/up", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the ceiling subscriber was not subscribed within 10 s")
        topic = f"phd/v1/gw/{setup.GATEWAY_ID}/up"
        first_sent = time.perf_counter()
        # Pipelined as the gateway does (several QoS 1 messages in flight), not one round
        # trip per message.
        infos = [pub.publish(topic, payload, qos=1) for _ in range(messages)]
        for info in infos:
            info.wait_for_publish(60)
        if not done.wait(60):
            raise RuntimeError(f"only {received} of {messages} ceiling messages arrived")
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    return messages / (last_received - first_sent)


# --------------------------------------------------------------------------- enrollment
async def _enroll(stack: Stack, count: int, home: Path) -> list[LoadDevice]:
    """``count`` devices, each for its own synthetic patient, through the real API."""
    from device_agent.enroll import EnrollClient
    from device_agent.sealer import Sealer
    from device_agent.store import AgentHome, PhdInfo

    assert stack.admin is not None
    root_pem = await asyncio.to_thread(stack.layout.root_ca_cert.read_bytes)
    enroll = EnrollClient(stack.api, pinned_root_pem=root_pem)
    agent_home = AgentHome(home)
    tag = secrets.token_hex(3)
    devices: list[LoadDevice] = []
    async with httpx.AsyncClient(
        base_url=stack.api,
        auth=StaffLogin(stack.admin),
        verify=stack.trust,
        timeout=30.0,
    ) as api:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await api.post(path, json=body)
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

        for i in range(count):
            patient = await post(
                "/api/v1/patients", {"name": f"Bench Patient {i}", "mrn": f"BENCH-{tag}-{i:04d}"}
            )
            pid = patient["id"]
            await post(f"/api/v1/patients/{pid}/consents", {"kind": "collection", "granted": True})
            registered = await post(f"/api/v1/patients/{pid}/devices", {"kind": "thermometer"})
            address = f"B0:00:00:00:{i // 256:02X}:{i % 256:02X}"
            credential = await enroll.enroll(
                code=str(registered["enrollment_code"]),
                phd=PhdInfo(address=address, kind="thermometer", model="bench"),
                home=agent_home,
            )
            sealer = await asyncio.to_thread(Sealer, credential)
            devices.append(
                LoadDevice(
                    device_id=credential.device_id,
                    signer=sealer.signer,
                    recipient=sealer.recipient,
                    credential=credential,
                )
            )
    return devices


# --------------------------------------------------------------------------- feeding
class _Ingress:
    """One connection to the gateway's ingress socket (phd_protocol.ingress framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: Path) -> _Ingress:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send(self, envelope: bytes) -> bool:
        """True when the gateway stored it durably; False when busy (try again)."""
        from phd_protocol.ingress import IngressStatus, decode_reply, encode_request

        self.writer.write(encode_request(envelope))
        await self.writer.drain()
        head = await self.reader.readexactly(3)
        body = await self.reader.readexactly(int.from_bytes(head[1:3], "big"))
        reply = decode_reply(head + body)
        if reply.status is IngressStatus.BUSY:
            return False
        if not reply.accepted:
            raise RuntimeError(f"the gateway refused a bench envelope: {reply.reason}")
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def _send_until_accepted(conn: _Ingress, envelope: bytes) -> None:
    for _ in range(1200):  # a busy outbox (back pressure) for at most a minute
        if await conn.send(envelope):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the gateway stayed busy for a minute")


async def _feed_closed_loop(socket: Path, envelopes: list[bytes]) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for envelope in envelopes:
        queue.put_nowait(envelope)

    async def worker() -> None:
        conn = await _Ingress.open(socket)
        try:
            while not queue.empty():
                await _send_until_accepted(conn, queue.get_nowait())
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(FEED_CONNECTIONS)))


async def _feed_open_loop(
    socket: Path, schedule: list[tuple[float, bytes]]
) -> tuple[float, list[float]]:
    """Send each envelope at its due wall-clock time. Returns the worst lateness (seconds)
    and, per envelope, when the gateway's "durably stored" reply arrived (epoch seconds)."""
    pool: asyncio.Queue[_Ingress] = asyncio.Queue()
    for _ in range(OPEN_LOOP_CONNECTIONS):
        pool.put_nowait(await _Ingress.open(socket))
    worst = 0.0
    accepted = [0.0] * len(schedule)

    async def one(index: int, envelope: bytes) -> None:
        conn = await pool.get()
        try:
            await _send_until_accepted(conn, envelope)
            accepted[index] = time.time()
        finally:
            pool.put_nowait(conn)

    tasks: list[asyncio.Task[None]] = []
    for index, (due, envelope) in enumerate(schedule):
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        worst = max(worst, time.time() - due)
        tasks.append(asyncio.create_task(one(index, envelope)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()
    return worst, accepted


# --------------------------------------------------------------------------- database
# Envelope rows are read by rowid from a mark taken before the feed: SQLite has one writer at
# a time, so rows become visible in rowid order, and each poll reads only the new ones (a
# full scan every poll grew with the database and took CPU from the system under test).
def _read_only(database: Path) -> sqlite3.Connection:
    """A read-only connection to the hospital database (never writes beside the workers)."""
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10.0)


def _last_rowid(database: Path) -> int:
    db = _read_only(database)
    try:
        row = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM ingested_envelope").fetchone()
    finally:
        db.close()
    return int(row[0])


def _commits_after(
    database: Path, after: int, wanted: set[tuple[str, int]]
) -> tuple[int, list[tuple[float, float]]]:
    """The last rowid read, and (sealed, received) epoch seconds of the wanted (device, seq)
    rows past ``after``."""
    db = _read_only(database)
    try:
        rows = db.execute(
            "SELECT rowid, device_id, seq, sealed_at, received_at FROM ingested_envelope"
            " WHERE rowid > ? ORDER BY rowid",
            (after,),
        ).fetchall()
    finally:
        db.close()
    out = [
        (_epoch(sealed), _epoch(received))
        for _rowid, device_id, seq, sealed, received in rows
        if (str(device_id), int(seq)) in wanted
    ]
    return (int(rows[-1][0]) if rows else after), out


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class _CommitWatcher:
    """Notes when each envelope row first becomes visible (committed), polling new rows by
    rowid every ``POLL`` seconds in a thread: commit time to within the poll interval."""

    POLL = 0.01

    def __init__(self, database: Path) -> None:
        self.database = database
        self.seen: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-watcher", daemon=True)
        self.start_rowid = self._last = _last_rowid(database)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        db = _read_only(self.database)
        try:
            while not self._stop.wait(self.POLL):
                rows = db.execute(
                    "SELECT rowid, device_id, seq FROM ingested_envelope WHERE rowid > ?",
                    (self._last,),
                ).fetchall()
                now = time.time()
                for rowid, device_id, seq in rows:
                    self.seen.setdefault((str(device_id), int(seq)), now)
                    self._last = max(self._last, int(rowid))
        finally:
            db.close()


async def _wait_committed(
    database: Path, after: int, wanted: set[tuple[str, int]], stack: Stack, within: float
) -> list[tuple[float, float]]:
    """(sealed, received) of the wanted rows stored past rowid ``after``, once all are there
    or ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    found: list[tuple[float, float]] = []
    while True:
        stack.supervisor.check()
        after, rows = await asyncio.to_thread(_commits_after, database, after, wanted)
        found += rows
        if len(found) >= len(wanted) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- /proc
def _per_process(measure: Callable[[int], float], pids: dict[str, int]) -> dict[str, float]:
    """``measure`` of each named process group (reads /proc: off the event loop)."""
    return {name: measure(pid) for name, pid in pids.items()}


# --------------------------------------------------------------------------- the run
def _crypto_ceiling(stack: Stack, devices: list[LoadDevice], envelopes: list[bytes]) -> float:
    """Envelopes/s for open + verify alone, one core (credentials loaded once, as ingest)."""
    from hospital_server.ingest.keyring import load_keyring
    from phd_protocol.pki import certificate_kid, load_certificate
    from phd_protocol.policy import credential_from_certificate, open_and_verify

    records = {}
    for device in devices:
        cert = load_certificate(device.credential.cert_path.read_bytes())
        records[certificate_kid(cert)] = credential_from_certificate(cert)
    ring = load_keyring(stack.layout)
    now = datetime.now(UTC)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for envelope in envelopes:
            open_and_verify(envelope, keyring=ring, credentials=records.get, received_at=now)
        best = max(best, len(envelopes) / (time.perf_counter() - started))
    return best


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    rate: float
    sent: int
    committed: int
    p50: float  # ms, seal (= due time) to commit
    p99: float
    late: float  # the feeder's worst lateness, seconds
    ingress_p50: float  # ms, due time -> the gateway's outbox holds it durably
    ingress_p99: float
    worker_p50: float  # ms, due time -> received_at (the worker took the batch)
    worker_p99: float


async def _latency(
    stack: Stack, devices: list[LoadDevice], rate: float, seconds: float
) -> LatencyPoint:
    """Open loop at ``rate``: envelope i is due at t0 + i/rate and sealed with that time."""
    count = max(10, int(rate * seconds))
    t0 = time.time() + 2.0 + count * 0.001  # sealing takes well under 1 ms per envelope
    dues = [t0 + i / rate for i in range(count)]
    sealed = await asyncio.to_thread(
        lambda: [_seal(devices[i % len(devices)], int(due * 1000)) for i, due in enumerate(dues)]
    )
    # Sealing overrunning t0 only makes the first envelopes late, and lateness is counted.
    timed = [(due, e) for due, (_d, _s, e) in zip(dues, sealed, strict=True)]
    watcher = await asyncio.to_thread(_CommitWatcher, stack.paths.database)
    watcher.start()
    try:
        late, accepted = await _feed_open_loop(stack.paths.gateway_socket, timed)
        wanted = {(d, s) for d, s, _e in sealed}
        commits = await _wait_committed(
            stack.paths.database, watcher.start_rowid, wanted, stack, within=120
        )
        await asyncio.sleep(2 * _CommitWatcher.POLL)
    finally:
        await asyncio.to_thread(watcher.stop)
    due_of = {(d, s): due for due, (d, s, _e) in zip(dues, sealed, strict=True)}
    latencies = [(seen - due_of[key]) * 1000 for key, seen in watcher.seen.items() if key in due_of]
    to_worker = [(c - s) * 1000 for s, c in commits]
    ingress = [(a - due) * 1000 for due, a in zip(dues, accepted, strict=True)]
    nan = float("nan")
    return LatencyPoint(
        rate=rate,
        sent=count,
        committed=len(commits),
        p50=statistics.median(latencies) if latencies else nan,
        p99=percentile(latencies, 99) if latencies else nan,
        late=late,
        ingress_p50=statistics.median(ingress),
        ingress_p99=percentile(ingress, 99),
        worker_p50=statistics.median(to_worker) if to_worker else nan,
        worker_p99=percentile(to_worker, 99) if to_worker else nan,
    )


def _middle_rate(commits: list[tuple[float, float]]) -> float:
    """Commits per second over the middle 60 % of the commit times."""
    times = sorted(c for _s, c in commits)
    if len(times) < 10:
        return 0.0
    lo, hi = int(len(times) * 0.2), int(len(times) * 0.8)
    span = times[hi] - times[lo]
    return (hi - lo) / span if span > 0 else 0.0


def _stack() -> Stack:
    """A fresh run directory and the stack's parts, before the event loop starts (the checks
    and directories are blocking calls)."""
    mosquitto = require_binary("/usr/sbin/mosquitto", package="mosquitto")
    base = Path("var/bench")
    paths = setup.new_run_dir(base, base / "pki")
    ports = setup.Ports(mqtt=free_port(), http=free_port(), gateway_metrics=free_port())
    return Stack(
        paths=paths,
        ports=ports,
        mosquitto=mosquitto,
        supervisor=Supervisor(paths.logs),
        # The gateway's default window (mobile_gateway.config: 3 batches awaiting the ack).
        tuning=UplinkTuning(ack_timeout=30.0, max_in_flight=3, batch_max_count=BATCH),
        worker=None,  # the API process ingests nothing, as in compose.yaml
        ingest_processes=INGEST_WORKERS,
    )


async def _bench(console: Any, quick: bool, stack: Stack) -> list[BenchRow]:
    sizes = _sizes(quick)
    paths, supervisor = stack.paths, stack.supervisor
    rows: list[BenchRow] = []
    try:
        console.print(f"run directory {paths.run}")
        await stack.prepare_pki()
        await stack.start_broker()

        payload = await asyncio.to_thread(_sample_batch_payload)
        mqtt_msgs = await asyncio.to_thread(_mqtt_ceiling, stack, payload, sizes.mqtt_messages)
        mqtt_env = mqtt_msgs * BATCH
        console.print(
            f"MQTT ceiling: {mqtt_msgs:,.0f} msg/s of {len(payload):,} bytes "
            f"= {mqtt_env:,.0f} env/s"
        )

        await stack.prepare_database()
        await stack.start_server()
        await stack.start_gateway()
        devices = await _enroll(stack, sizes.devices, paths.agent_home)
        console.print(f"{len(devices)} load devices enrolled through the API")

        # ---- maximum rate (closed loop), in passes of fresh envelopes
        pids = stack.processes()
        cpu_by = dict.fromkeys(pids, 0.0)
        feeder_cpu = 0.0
        passes: list[float] = []
        fed_total = committed_total = 0
        crypto_early = 0.0
        for number in range(1, sizes.max_passes + 1):
            now_ms = int(time.time() * 1000)
            sealed = await asyncio.to_thread(_seal_all, devices, sizes.max_envelopes, now_ms)
            wanted = {(d, s) for d, s, _e in sealed}
            if number == 1:
                # The crypto ceiling is measured here (pipeline idle) and again after the
                # maximum rate; the best pass counts. Three passes in a row can all land in one
                # of this shared machine's slow spells (one run gave 2,074 env/s against 3,100
                # in the next ones, which flattered the ratio).
                sample = [e for _d, _s, e in sealed[: min(1000, len(sealed))]]
                crypto_early = await asyncio.to_thread(_crypto_ceiling, stack, devices, sample)
            mark = await asyncio.to_thread(_last_rowid, paths.database)
            cpu_before = await asyncio.to_thread(_per_process, group_cpu_seconds, pids)
            own_before = time.process_time()
            started = time.time()
            await _feed_closed_loop(paths.gateway_socket, [e for _d, _s, e in sealed])
            fed = time.time() - started
            commits = await _wait_committed(paths.database, mark, wanted, stack, within=300)
            feeder_cpu += time.process_time() - own_before
            cpu_after = await asyncio.to_thread(_per_process, group_cpu_seconds, pids)
            used = {k: cpu_after[k] - cpu_before[k] for k in pids}
            for k in pids:
                cpu_by[k] += used[k]
            fed_total += len(wanted)
            committed_total += len(commits)
            passes.append(_middle_rate(commits))
            per_env = ", ".join(
                f"{k} {v / max(len(commits), 1) * 1e6:,.0f}" for k, v in used.items() if v
            )
            console.print(
                f"max rate, pass {number} of {sizes.max_passes}: {len(commits)} of "
                f"{len(wanted)} committed; fed in {fed:.1f} s; {passes[-1]:,.0f} env/s committed; "
                f"CPU µs per envelope: {per_env}"
            )
        cpu = sum(cpu_by.values())
        rss = await asyncio.to_thread(_per_process, group_rss_mib, pids)
        max_rate = max(passes)

        # ---- crypto ceiling again (the pipeline is idle now)
        crypto_env = max(
            crypto_early, await asyncio.to_thread(_crypto_ceiling, stack, devices, sample)
        )

        # ---- latency at half the maximum rate (open loop), and at a tenth for context
        half = await _latency(stack, devices, max(1.0, max_rate / 2), sizes.half_seconds)
        low = await _latency(stack, devices, max(1.0, max_rate / 10), sizes.half_seconds)
        for name, point in (("half", half), ("tenth", low)):
            console.print(
                f"{name} of max: {point.rate:,.0f} env/s for {sizes.half_seconds:.0f} s: "
                f"{point.committed} of {point.sent} committed; p50 {point.p50:.0f} ms, "
                f"p99 {point.p99:.0f} ms; to the gateway outbox p50 {point.ingress_p50:.0f} / "
                f"p99 {point.ingress_p99:.0f} ms; to the worker (received_at) p50 "
                f"{point.worker_p50:.0f} / p99 {point.worker_p99:.0f} ms; "
                f"feeder worst lateness {point.late * 1000:.0f} ms"
            )
    finally:
        await asyncio.to_thread(supervisor.stop_all)

    lower = min(crypto_env, mqtt_env)
    readings = committed_total * READINGS_PER_ENVELOPE
    rows += [
        BenchRow(PART, "end-to-end envelopes/s (max, committed)", max_rate, "env/s"),
        *(
            BenchRow(PART, f"end-to-end envelopes/s, max-rate pass {n}", rate, "env/s")
            for n, rate in enumerate(passes, 1)
        ),
        BenchRow(
            PART,
            "committed at max rate",
            committed_total / fed_total,
            "fraction",
            "= 1",
            committed_total == fed_total,
        ),
        BenchRow(
            PART,
            "end-to-end readings/s (max, committed)",
            max_rate * READINGS_PER_ENVELOPE,
            "readings/s",
        ),
        BenchRow(PART, "crypto ceiling (open+verify, 1 core)", crypto_env, "env/s"),
        BenchRow(PART, f"MQTT ceiling ({len(payload) // 1024} KiB batches)", mqtt_msgs, "msg/s"),
        BenchRow(PART, f"MQTT ceiling x {BATCH} env/batch", mqtt_env, "env/s"),
        BenchRow(
            PART,
            "end-to-end / lower ceiling",
            max_rate / lower if lower else 0.0,
            "ratio",
            f">= {RATIO_TARGET}",
            lower > 0 and max_rate / lower >= RATIO_TARGET,
        ),
        BenchRow(
            PART,
            "end-to-end / lower ceiling, median pass",
            statistics.median(passes) / lower if lower else 0.0,
            "ratio",
        ),
        BenchRow(PART, "seal-to-commit p50 at half max rate", half.p50, "ms"),
        BenchRow(
            PART,
            "seal-to-commit p99 at half max rate",
            half.p99,
            "ms",
            f"< {P99_TARGET_MS:.0f}",
            half.p99 < P99_TARGET_MS and half.committed == half.sent,
        ),
        BenchRow(
            PART,
            "committed at half max rate",
            half.committed / half.sent,
            "fraction",
            "= 1",
            half.committed == half.sent,
        ),
        BenchRow(PART, "seal-to-outbox p99 at half max rate", half.ingress_p99, "ms"),
        BenchRow(PART, "seal-to-worker p99 at half max rate", half.worker_p99, "ms"),
        BenchRow(PART, "seal-to-commit p50 at a tenth of max rate", low.p50, "ms"),
        BenchRow(PART, "seal-to-commit p99 at a tenth of max rate", low.p99, "ms"),
        BenchRow(
            PART,
            "CPU s per 1,000 readings (all processes)",
            cpu / (readings / 1000) if readings else float("nan"),
            "s",
        ),
    ]
    rows += [
        BenchRow(PART, f"CPU s per 1,000 readings, {k}", v / (readings / 1000), "s")
        for k, v in cpu_by.items()
        if readings
    ]
    if readings:  # the bench's own feeding and polling: on this machine, not in the total
        rows.append(
            BenchRow(
                PART, "CPU s per 1,000 readings, bench feeder", feeder_cpu / (readings / 1000), "s"
            )
        )
    rows += [BenchRow(PART, f"resident memory {k}", v, "MiB") for k, v in rss.items()]
    return rows


def run(console: Any, quick: bool) -> list[BenchRow]:
    return asyncio.run(_bench(console, quick, _stack()))
