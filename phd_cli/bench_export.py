"""``phd bench export``: rows/s of a pseudonymised research export, and its validator.

Sixteen enrolled devices with real certificates (as ``phd bench ingest`` builds them) send
3 readings per envelope through the ingest worker's code into SQLite; every patient consents
to AI research; then one export per date profile, timed end to end (cohort, decryption and
MAC check of every reading, pseudonyms, k-anonymity, CSV, signed manifest). The validator then
searches both files for every identifier it seeded (names, MRNs, internal patient and device
ids, credential kids) and prints how many kinds leaked: the target is 0.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from phd_cli.cmd_bench import BenchRow

PART = "export"


def run(console: Any, quick: bool) -> list[BenchRow]:
    from sqlmodel import select

    from hospital_server.context import ServerContext
    from hospital_server.ingest.runner import build_ingestor
    from hospital_server.keys import LocalKeyFileProvider
    from hospital_server.models import ConsentKind, Credential, Device, Patient, utcnow
    from hospital_server.patients import record_consent
    from hospital_server.pki.ca import init_pki
    from hospital_server.pki.layout import PkiLayout
    from hospital_server.research import DateProfile, create_project, leaks, run_export
    from phd_cli.bench_ingest import BATCH, _setup

    total = 512 if quick else 4096
    base = Path(tempfile.mkdtemp(prefix="phd-bench-export-"))
    rows: list[BenchRow] = []
    try:
        init_pki(PkiLayout(base / "pki"))
        LocalKeyFileProvider.create(base / "keys.json")
        console.print(f"export bench: sealing and ingesting {total} envelopes")
        envelopes, settings = _setup(base, f"sqlite:///{base / 'export.db'}", total)
        ctx = ServerContext.build(settings, broker_probe=lambda: False)
        try:
            ingestor = build_ingestor(ctx)
            for at in range(0, total, BATCH):
                with ctx.sessions() as s:
                    ingestor.process(s, "bench-gw", envelopes[at : at + BATCH])
            with ctx.sessions() as s:
                patients = list(s.exec(select(Patient.id)))
                for patient_id in patients:
                    record_consent(s, patient_id, ConsentKind.AI_RESEARCH, granted=True, actor="b")
                devices = list(s.exec(select(Device.id)))
                kids = list(s.exec(select(Credential.kid)))
                s.commit()
            truth = {
                "name": [f"Bench {n}" for n in range(len(patients))],
                "patient_id": patients,
                "device_id": devices,
                "kid": kids,
            }
            for profile in DateProfile:
                with ctx.sessions() as s:
                    project = create_project(
                        s,
                        ctx.key_provider,
                        name=f"bench {profile.value}",
                        purpose="bench",
                        approval_ref="BENCH-1",
                        date_profile=profile,
                        k=5,
                        expires_at=utcnow() + timedelta(days=30),
                        actor="bench",
                    ).id
                    s.commit()
                start = time.perf_counter()
                result = run_export(
                    ctx.sessions,
                    ctx.keys,
                    ctx.key_provider,
                    project,
                    out_dir=base / "out",
                    actor="bench",
                )
                seconds = time.perf_counter() - start
                files = result.csv_path.read_bytes() + result.manifest_path.read_bytes()
                leaked = leaks(files, truth)
                rows += [
                    BenchRow(PART, f"{profile.value}: rows exported", result.rows, "rows"),
                    BenchRow(
                        PART, f"{profile.value}: export rate", result.rows / seconds, "rows/s"
                    ),
                    BenchRow(
                        PART,
                        f"{profile.value}: identifier kinds found by the validator",
                        len(leaked),
                        "kinds",
                        target="0",
                        met=not leaked,
                    ),
                ]
        finally:
            ctx.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows
