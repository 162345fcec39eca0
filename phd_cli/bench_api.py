"""``phd bench api``: what a clinician's read costs, through the real application.

One run builds a SQLite database the way production fills it: enrolled devices (real
certificates from a fresh PKI) whose sealed envelopes (three readings each) went through the
ingest worker's own code. A clinician on every patient's care team logs in at the token
endpoint (password + TOTP), then reads, one request after another:

- a page of 100 readings as JSON (``/api/v1/patients/{id}/observations``);
- a page of 100 readings as a FHIR searchset Bundle (``/fhir/Observation?patient=...``);
- one Observation by id (``/fhir/Observation/{id}``).

Every read goes the whole way: bearer token verified (ES256) and the user re-read, the
care-team decision, the envelopes decrypted once per request, every reading checked against
its row's content MAC, the audit entry committed (fsync) before the answer, the body
rendered with exact decimals. Figures: requests/s, p50/p99 latency in ms, and microseconds
per reading returned. The application is called in process (ASGI), so TLS and the HTTP server
are not in the figures; login is timed once and is slow by design (scrypt).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from phd_cli.cmd_bench import BenchRow, percentile

PART = "api"
PAGE = 100
BATCH = 64


def _store(base: Path, total: int) -> tuple[Any, list[str]]:
    """Settings of a database holding ``total`` ingested envelopes; the patients' ids."""
    from sqlmodel import select

    from hospital_server.context import ServerContext
    from hospital_server.ingest.runner import build_ingestor
    from hospital_server.keys import LocalKeyFileProvider
    from hospital_server.models import Patient
    from hospital_server.pki.ca import init_pki
    from hospital_server.pki.layout import PkiLayout
    from phd_cli.bench_ingest import _setup

    init_pki(PkiLayout(base / "pki"))
    LocalKeyFileProvider.create(base / "keys.json")
    envelopes, settings = _setup(base, f"sqlite:///{base / 'api.db'}", total)
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:
        ingestor = build_ingestor(ctx)
        for at in range(0, len(envelopes), BATCH):
            with ctx.sessions() as session:
                ingestor.process(session, "bench-gw", envelopes[at : at + BATCH])
        with ctx.sessions() as session:
            patients = [p.id for p in session.exec(select(Patient))]
    finally:
        ctx.close()
    return settings, patients


def _clinician(settings: Any, patients: list[str]) -> tuple[str, str, bytes]:
    """A clinician on every patient's care team: (username, password, TOTP secret)."""
    import secrets

    from hospital_server.access import add_to_care_team
    from hospital_server.auth.totp import new_secret
    from hospital_server.context import ServerContext
    from hospital_server.staff import create_staff_user, provision_totp

    username, password, secret = "bench-clinician", secrets.token_urlsafe(18), new_secret()
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:
        with ctx.sessions() as session:
            user = create_staff_user(session, username, password, role="clinician", actor="bench")
            provision_totp(session, ctx.key_provider, user, actor="bench", secret=secret)
            for patient_id in patients:
                add_to_care_team(session, patient_id=patient_id, user_id=user.id, actor="bench")
            session.commit()
    finally:
        ctx.close()
    return username, password, secret


async def _timed(
    call: Callable[[], Awaitable[int]], seconds: float, *, at_least: int = 20
) -> tuple[list[float], int]:
    """Latencies (ms) of ``call`` repeated for about ``seconds``; and readings returned."""
    latencies: list[float] = []
    readings = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(latencies) < at_least:
        start = time.perf_counter()
        readings += await call()
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies, readings


async def _measure(app: Any, patients: list[str], login: Any, seconds: float) -> list[BenchRow]:
    import httpx

    rows: list[BenchRow] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench", auth=login
    ) as client:
        start = time.perf_counter()
        first = await client.get(f"/api/v1/patients/{patients[0]}", timeout=60)
        first.raise_for_status()
        rows.append(
            BenchRow(
                PART,
                "login (password + TOTP, scrypt) + first read",
                (time.perf_counter() - start) * 1000,
                "ms",
            )
        )
        turn = iter(range(1 << 30))

        def patient() -> str:
            return patients[next(turn) % len(patients)]

        async def json_page() -> int:
            response = await client.get(
                f"/api/v1/patients/{patient()}/observations", params={"limit": PAGE}
            )
            response.raise_for_status()
            return len(response.json()["items"])

        async def fhir_page() -> int:
            response = await client.get(
                "/fhir/Observation", params={"patient": patient(), "_count": PAGE}
            )
            response.raise_for_status()
            return len(response.json()["entry"])

        bundle = (await client.get("/fhir/Observation", params={"patient": patients[0]})).json()
        ids = [e["resource"]["id"] for e in bundle["entry"]]
        one_id = iter(range(1 << 30))

        async def fhir_one() -> int:
            response = await client.get(f"/fhir/Observation/{ids[next(one_id) % len(ids)]}")
            response.raise_for_status()
            return 1

        for label, call in (
            (f"JSON page of {PAGE} readings", json_page),
            (f"FHIR Bundle of {PAGE} readings", fhir_page),
            ("FHIR Observation by id", fhir_one),
        ):
            latencies, readings = await _timed(call, seconds)
            total_s = sum(latencies) / 1000
            rows += [
                BenchRow(
                    PART, f"{label}: requests/s (one client)", len(latencies) / total_s, "req/s"
                ),
                BenchRow(PART, f"{label}: p50", statistics.median(latencies), "ms"),
                BenchRow(PART, f"{label}: p99", percentile(latencies, 99), "ms"),
                BenchRow(PART, f"{label}: per reading", total_s / readings * 1e6, "µs"),
            ]
    return rows


def run(console: Any, quick: bool) -> list[BenchRow]:
    from hospital_server.app import create_app
    from hospital_server.context import ServerContext
    from phd_cli.demo.staff_login import StaffCredentials, StaffLogin

    total, seconds = (512, 2.0) if quick else (2048, 8.0)
    base = Path(tempfile.mkdtemp(prefix="phd-bench-api-"))
    try:
        console.print(f"api bench: ingesting {total} envelopes ({3 * total} readings)")
        settings, patients = _store(base, total)
        username, password, secret = _clinician(settings, patients)
        login = StaffLogin(
            StaffCredentials(username=username, password=password, totp_secret=secret)
        )
        ctx = ServerContext.build(settings, broker_probe=lambda: False)
        try:
            app = create_app(settings, context=ctx)
            console.print(f"api bench: reading as a clinician for {seconds:.0f} s per request type")
            return asyncio.run(_measure(app, patients, login, seconds))
        finally:
            ctx.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
