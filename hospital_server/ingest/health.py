"""The ingest workers' health file: written by the running pool, judged by a probe.

An ingest process has no HTTP port, so an orchestrator (compose, Kubernetes, systemd) cannot
ask it how it is. With ``phd server ingest --status-file PATH`` the pool rewrites PATH every
few seconds (atomically: a reader never sees half a file) with what a liveness/readiness probe
needs, and ``phd server ingest-health PATH`` judges it:

- the file is fresh (written within ``max_age`` seconds: the process and its writer live);
- every worker holds a broker session (connected, consuming its shared subscription);
- the database answered a trivial query at the last write.

What it holds: worker names, booleans, counts and a time; never anything about a patient.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hospital_server.pki.store import PUBLIC_MODE, write_atomic

__all__ = [
    "DEFAULT_MAX_AGE",
    "HealthFileError",
    "HealthWriter",
    "PoolHealth",
    "judge",
    "read_health",
    "write_health",
]

FORMAT = "phd-ingest-health/1"
# Oldest acceptable file by default: three of the pool's 5-second rewrites.
DEFAULT_MAX_AGE = 15.0
_MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class PoolHealth:
    at: float  # Unix time of the snapshot
    database: bool  # a trivial query succeeded
    workers: dict[str, bool]  # name -> holds a broker session
    batches: int  # batches answered since start, all workers

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "at": self.at,
            "database": self.database,
            "workers": dict(sorted(self.workers.items())),
            "batches": self.batches,
        }


def write_health(path: Path, health: PoolHealth) -> None:
    """Replace ``path`` atomically (write a sibling, fsync, rename)."""
    data = json.dumps(health.to_json(), separators=(",", ":")).encode()
    write_atomic(path, data, mode=PUBLIC_MODE)


class HealthFileError(ValueError):
    """The file is missing, too big or not a health file of this format."""


def read_health(path: Path) -> PoolHealth:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise HealthFileError(f"cannot read the health file ({exc.strerror})") from None
    if len(data) > _MAX_FILE_BYTES:
        raise HealthFileError("the health file is too big")
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise HealthFileError(f"not a {FORMAT} file")
        workers = doc["workers"]
        if not isinstance(workers, dict) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in workers.items()
        ):
            raise HealthFileError("workers must map names to booleans")
        at, database, batches = doc["at"], doc["database"], doc["batches"]
        if not isinstance(at, int | float) or not isinstance(database, bool):
            raise HealthFileError("at must be a number and database a boolean")
        if not isinstance(batches, int) or isinstance(batches, bool):
            raise HealthFileError("batches must be an integer")
    except (ValueError, KeyError) as exc:
        if isinstance(exc, HealthFileError):
            raise
        raise HealthFileError(f"not a {FORMAT} file") from None
    return PoolHealth(at=float(at), database=database, workers=workers, batches=batches)


def judge(health: PoolHealth, *, now: float, max_age: float) -> list[str]:
    """Why the pool is not healthy; empty when it is."""
    problems: list[str] = []
    age = now - health.at
    if age > max_age:
        problems.append(f"the health file is {age:.0f} s old (limit {max_age:.0f} s)")
    if not health.workers:
        problems.append("no ingest worker is running")
    down = sorted(name for name, up in health.workers.items() if not up)
    if down:
        problems.append(f"not connected to the broker: {', '.join(down)}")
    if not health.database:
        problems.append("the database did not answer")
    return problems


class HealthWriter:
    """Writes ``snapshot()`` to ``path`` every ``interval`` seconds until ``stop`` is set."""

    def __init__(
        self,
        path: Path,
        snapshot: Callable[[], PoolHealth],
        stop: threading.Event,
        *,
        interval: float = 5.0,
    ) -> None:
        self.path = path
        self._snapshot = snapshot
        self._stop = stop
        self._interval = interval
        self.thread = threading.Thread(target=self._run, name="ingest-health", daemon=True)

    def start(self) -> None:
        self.write()  # at once: a probe need not wait a whole interval after start
        self.thread.start()

    def write(self) -> None:
        write_health(self.path, self._snapshot())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            # A full disk or a removed directory: the file ages, and the probe says so.
            with contextlib.suppress(OSError):
                self.write()
