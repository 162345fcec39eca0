"""``phd bench ingest``: envelopes/s committed by ingest, next to the crypto ceiling.

One run measures, on the same sealed envelopes (3 observations each: a blood pressure compound,
a pulse rate and a body temperature, plus the raw characteristic value, sealed by 16 enrolled
devices with real certificates from a fresh PKI):

- crypto ceiling: open + verify alone (framing, HPKE, COSE, signature, policy), one core;
- one worker: uplink batches of 64 exactly as the MQTT worker runs them (through
  ``IngestPipeline``: batch N+1 verified while batch N commits), committed, per database, the
  best of three runs (each on a fresh database, each with the ceiling measured again; the
  ceiling is the best of all its passes), so both sides of the ratio are their
  least-disturbed figure; and the same worker with batches strictly one after another (one
  run, for comparison);
- two workers: two processes sharing the batches on the same database (what a shared
  subscription does), wall-clock envelopes/s, best of three runs alternating with the
  one-worker runs.

Also printed, without a target: the worker's CPU seconds per envelope (its process, all
threads) next to the ceiling's, i.e. the same comparison per CPU second rather than per wall
second, which does not move with what the worker waits for or with a busy second core.

Databases: SQLite (WAL, synchronous=FULL) and a local PostgreSQL 15 with its default
durability (fsync and synchronous_commit on). Target: one worker at >= 60% of the ceiling, and
two workers faster than one. MQTT is left out: its ceiling is ``phd bench gateway``'s; this
isolates verification + storage. Every worker starts from a fresh database copy.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from phd_cli.cmd_bench import BenchRow

PART = "ingest"
RATIO_TARGET = 0.60
BATCH = 64
DEVICES = 16


def _observations(device_id: str, i: int) -> list[dict[str, Any]]:
    from phd_protocol import mdc
    from phd_protocol.observation import Component, Observation, TimeSource

    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    common: dict[str, Any] = {"device": device_id, "time": at, "time_source": TimeSource.DEVICE}
    return [
        Observation.create(
            mdc_code=mdc.PRESS_BLD_NONINV.code,
            value=None,
            components=(
                Component(mdc_code=mdc.PRESS_BLD_NONINV_SYS.code, value=Decimal(110 + i % 40)),
                Component(mdc_code=mdc.PRESS_BLD_NONINV_DIA.code, value=Decimal(70 + i % 20)),
            ),
            unit="mm[Hg]",
            unit_mdc=mdc.DIM_MMHG.code,
            **common,
        ).to_wire(),
        Observation.create(
            mdc_code=mdc.PULS_RATE_NON_INV.code,
            value=Decimal(60 + i % 30),
            unit="/min",
            unit_mdc=mdc.DIM_BEAT_PER_MIN.code,
            **common,
        ).to_wire(),
        Observation.create(
            mdc_code=mdc.TEMP_BODY.code,
            value=Decimal("36.6"),
            unit="Cel",
            unit_mdc=mdc.DIM_DEGC.code,
            **common,
        ).to_wire(),
    ]


def _setup(root: Path, url: str, envelopes: int) -> tuple[list[bytes], Any]:
    """Migrate ``url``, enroll DEVICES devices, seal ``envelopes`` envelopes. Returns them."""
    from hospital_server.context import ServerContext
    from hospital_server.devices import register_device
    from hospital_server.enrollment import EnrollmentService
    from hospital_server.ingest.keyring import load_keyring
    from hospital_server.migrations import upgrade
    from hospital_server.models import ConsentKind, PatientCreate
    from hospital_server.patients import create_patient, record_consent
    from hospital_server.pki.layout import PkiLayout
    from hospital_server.settings import Settings
    from phd_protocol import crypto
    from phd_protocol.enrollment import EnrollmentRequest, PhdInfo
    from phd_protocol.envelope import DeviceSigner, RawRecord, seal
    from phd_protocol.pki import build_device_csr, certificate_kid, load_certificate

    settings = Settings(
        profile="dev",
        database_url=url,  # type: ignore[arg-type] # pydantic converts str to SecretStr
        key_file=root / "keys.json",
        pki_dir=root / "pki",
    )
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    upgrade(ctx.engine)
    layout = PkiLayout(root / "pki")
    service = EnrollmentService(layout=layout, keys=ctx.keys, pepper=ctx.code_pepper)
    signers = []
    for n in range(DEVICES):
        with ctx.sessions() as s:
            p = create_patient(
                s, ctx.keys, PatientCreate(name=f"Bench {n}", mrn=f"B-{n}"), actor="bench"
            )
            record_consent(s, p.id, ConsentKind.COLLECTION, granted=True, actor="bench")
            reg = register_device(
                s,
                p.id,
                "multi",
                actor="bench",
                ttl=timedelta(minutes=5),
                pepper=ctx.code_pepper,
                max_attempts=5,
            )
            s.commit()
        key = crypto.generate_signing_key()
        with ctx.sessions() as s:
            resp = service.enroll(
                s, EnrollmentRequest(code=reg.code, csr_pem=build_device_csr(key), phd=PhdInfo())
            )
        cert = load_certificate(resp.certificate_pem)
        signers.append(
            DeviceSigner(device_id=str(resp.device_id), kid=certificate_kid(cert), key=key)
        )
    recipient = load_keyring(layout).keys[0].recipient
    now_ms = int(time.time() * 1000)
    sealed = []
    for i in range(envelopes):
        signer = signers[i % DEVICES]
        sealed.append(
            seal(
                signer=signer,
                recipient=recipient,
                seq=i // DEVICES + 1,
                observations=_observations(signer.device_id, i),
                raw=[RawRecord(uuid="2A35", t=now_ms, b=bytes.fromhex("1e780050005a00"))],
                clock=lambda: now_ms,
            )
        )
    ctx.close()
    return sealed, settings


def _worker(
    settings: Any, batches: Sequence[Sequence[bytes]], barrier: Any, out: Any, overlap: bool
) -> None:
    """One ingest worker process: build its context, wait for the start, process, report.

    ``overlap``: as IngestWorker runs (through IngestPipeline, batch N+1 verified while N
    commits); otherwise Ingestor.process one batch after the other.
    """
    from hospital_server.context import ServerContext
    from hospital_server.ingest.pipeline import IngestPipeline
    from hospital_server.ingest.runner import build_ingestor
    from phd_protocol.wire import AckStatus, EnvelopeResult

    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    ingestor = build_ingestor(ctx)
    with ctx.sessions() as s:  # warm the connection pool and caches outside the timing
        s.connection()
    stored = [0]

    def count(_token: None, results: list[EnvelopeResult]) -> None:
        stored[0] += sum(1 for r in results if r.status is AckStatus.STORED)

    barrier.wait()
    start, cpu_start = time.perf_counter(), time.process_time()
    if overlap:
        pipeline: IngestPipeline[None] = IngestPipeline(ctx.sessions, ingestor, count)
        for batch in batches:
            pipeline.submit(None, "bench-gw", batch)
        pipeline.close()
    else:
        for batch in batches:
            with ctx.sessions() as s:
                count(None, ingestor.process(s, "bench-gw", list(batch)))
    out.put((stored[0], time.perf_counter() - start, time.process_time() - cpu_start))
    ctx.close()


def _run_workers(
    settings: Any, batches: list[list[bytes]], workers: int, *, overlap: bool = True
) -> tuple[int, float, float]:
    """Envelopes stored, wall seconds, and CPU seconds of the worker processes (all their
    threads; not the database server's)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    out = ctx.Queue()
    shares = [batches[i::workers] for i in range(workers)]
    procs = [
        ctx.Process(target=_worker, args=(settings, share, barrier, out, overlap))
        for share in shares
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join(30)
    return sum(r[0] for r in results), wall, sum(r[2] for r in results)


def _crypto_ceiling(settings: Any, envelopes: list[bytes]) -> float:
    """Envelopes/s for open + verify alone (credential records prepared as ingest caches)."""
    from sqlmodel import select

    from hospital_server.context import ServerContext
    from hospital_server.ingest.keyring import load_keyring
    from hospital_server.models import Credential
    from hospital_server.pki.layout import PkiLayout
    from hospital_server.security import certificate_der_to_pem
    from phd_protocol.pki import load_certificate
    from phd_protocol.policy import credential_from_certificate, open_and_verify

    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    with ctx.sessions() as s:
        creds = list(s.exec(select(Credential)))
    records = {
        bytes.fromhex(c.kid): credential_from_certificate(
            load_certificate(certificate_der_to_pem(c.cert_der))
        )
        for c in creds
    }
    ctx.close()
    ring = load_keyring(PkiLayout(settings.pki_dir))
    now = datetime.now(UTC)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for envelope in envelopes:
            open_and_verify(envelope, keyring=ring, credentials=records.get, received_at=now)
        best = max(best, len(envelopes) / (time.perf_counter() - start))
    return best


def run(console: Any, quick: bool) -> list[BenchRow]:
    from hospital_server.keys import LocalKeyFileProvider
    from hospital_server.pki.ca import init_pki
    from hospital_server.pki.layout import PkiLayout
    from phd_cli.pg_local import start_postgres, stop_postgres

    total = 1024 if quick else 4096
    repeats = 1 if quick else 3
    rows: list[BenchRow] = []
    base = Path(tempfile.mkdtemp(prefix="phd-bench-ingest-"))
    pg = start_postgres(durable=True)
    try:
        init_pki(PkiLayout(base / "pki"))
        LocalKeyFileProvider.create(base / "keys.json")
        for backend in ("sqlite", "postgresql"):
            results: dict[str, float] = {}
            cpu_us = 0.0  # one worker's CPU per envelope, in its best run
            ceiling = 0.0
            runs = [("serial", 1, False)] + [("1", 1, True), ("2", 2, True)] * repeats
            for n, (mode, workers, overlap) in enumerate(runs):
                label = f"{backend}-{mode}-{n}"
                if backend == "sqlite":
                    url = f"sqlite:///{base / label}.db"
                else:
                    pg.admin(f'CREATE DATABASE "{label}"')
                    url = pg.url(label)
                console.print(f"ingest bench: preparing {total} envelopes on {label}")
                envelopes, settings = _setup(base, url, total)
                if mode == "1":
                    ceiling = max(ceiling, _crypto_ceiling(settings, envelopes))
                batches = [envelopes[i : i + BATCH] for i in range(0, total, BATCH)]
                stored, wall, cpu = _run_workers(settings, batches, workers, overlap=overlap)
                if stored != total:
                    console.print(f"[red]{label}: stored {stored} of {total}[/red]")
                # Each configuration: the best of its runs, as the ceiling is the best of its
                # passes (every side takes its least-disturbed figure on a shared machine);
                # one and two workers alternate, so a slow spell hits both.
                if mode == "1" and stored / wall > results.get(mode, 0.0):
                    cpu_us = cpu / max(stored, 1) * 1e6
                results[mode] = max(results.get(mode, 0.0), stored / wall)
            one, two = results["1"], results["2"]
            rows += [
                BenchRow(PART, f"{backend} crypto ceiling (open+verify, 1 core)", ceiling, "env/s"),
                BenchRow(
                    PART,
                    f"{backend} 1 worker, batches one after another",
                    results["serial"],
                    "env/s",
                ),
                BenchRow(PART, f"{backend} 1 worker committed (3 obs/env)", one, "env/s"),
                BenchRow(
                    PART,
                    f"{backend} 1 worker / ceiling",
                    one / ceiling,
                    "ratio",
                    target=f">= {RATIO_TARGET}",
                    met=one / ceiling >= RATIO_TARGET,
                ),
                # The same comparison per CPU second instead of per wall second: what the
                # worker costs, whatever it waited for (the database, the other core).
                BenchRow(PART, f"{backend} crypto ceiling per envelope", 1e6 / ceiling, "µs"),
                BenchRow(PART, f"{backend} 1 worker CPU per envelope", cpu_us, "µs"),
                BenchRow(
                    PART,
                    f"{backend} ceiling / worker CPU per envelope",
                    (1e6 / ceiling) / cpu_us if cpu_us else 0.0,
                    "ratio",
                ),
                BenchRow(PART, f"{backend} 2 workers committed", two, "env/s"),
                BenchRow(
                    PART,
                    f"{backend} 2 workers / 1 worker",
                    two / one,
                    "ratio",
                    target="> 1",
                    met=two > one,
                ),
            ]
    finally:
        stop_postgres(pg)
        shutil.rmtree(base, ignore_errors=True)
    return rows
