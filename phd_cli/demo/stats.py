"""What the demo shows and judges: counts per device from each part, and the verdict.

What it is for: :func:`collect` takes one snapshot from what each part exposes — each virtual
PHD's count of values sent and of the observations they carry, the agent's session reports and
spool, the gateway's outbox status (``mobile_gateway.status.read_status``, read-only), and the
server database (SQLite opened read-only: envelopes, observations and quarantine rows per
device). :func:`verdict` decides "every reading that left a virtual device was committed
exactly once", end to end: the observations the devices sent are the distinct observations
stored for them, the agent decoded every value it read, every envelope the agent sealed is
stored once at the hospital (distinct (device, seq) = rows = sealed), no duplicate
observation, nothing rejected, quarantined, dead-lettered or still queued, and the agent read
at least every value the devices sent (its count also has the glucose context and
intermediate cuff pressure notifications, which ``sent`` leaves out).

What it must never do: read a value column (only ids and counts; the values are encrypted
anyway), or write to any database.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device_agent.agent import Agent
    from phd_cli.demo.fleet import Fleet

__all__ = [
    "DeviceCounts",
    "GatewayCounts",
    "IngestCounts",
    "Snapshot",
    "collect",
    "parse_server_metrics",
    "settled",
    "stored_once",
    "verdict",
]


@dataclass(slots=True)
class DeviceCounts:
    device_id: str
    kind: str
    sent: int = 0  # measurement values the virtual PHD notified/indicated
    emitted_observations: int = 0  # observations those values (and cuff pressures) carry
    read: int = 0  # values the agent received (sessions finished)
    undecodable: int = 0  # values the agent read but could not decode
    sealed: int = 0  # envelopes sealed by the agent (sessions finished)
    spooled: int = 0  # envelopes still in the agent's spool
    refused: int = 0  # envelopes the gateway refused (moved to the spool's rejected/)
    relayed: int = 0  # envelopes the gateway durably accepted: sealed - spooled - refused
    committed: int = 0  # distinct (device, seq) envelopes stored at the hospital
    envelope_rows: int = 0
    sealed_observations: int = 0  # observations the committed envelopes carried
    observations: int = 0  # observation rows stored
    distinct_observations: int = 0  # distinct content ids among them
    rejected: int = 0  # quarantined at the hospital, by device id


@dataclass(slots=True)
class GatewayCounts:
    queued: int = 0
    in_flight: int = 0
    relayed: int = 0  # acknowledged end to end by the hospital
    dead: int = 0
    link: str = "unknown"


@dataclass(slots=True)
class IngestCounts:
    """The server's own ingest metrics (``GET /metrics``), as a cross-check of the database."""

    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    retry_later: int = 0
    latency_count: int = 0
    latency_mean_s: float | None = None  # sealing on the agent -> commit at the hospital
    latency_p99_le_s: float | None = None  # upper bound of the bucket holding the 99th pct


@dataclass(slots=True)
class Snapshot:
    devices: list[DeviceCounts] = field(default_factory=list)
    gateway: GatewayCounts = field(default_factory=GatewayCounts)
    ingest: IngestCounts = field(default_factory=IngestCounts)
    quarantined_unattributed: int = 0  # rejected envelopes no device id could be read for

    def totals(self) -> dict[str, int]:
        keys = (
            "sent",
            "emitted_observations",
            "read",
            "undecodable",
            "sealed",
            "relayed",
            "committed",
            "sealed_observations",
            "observations",
            "rejected",
        )
        return {k: sum(getattr(d, k) for d in self.devices) for k in keys}

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": [asdict(d) for d in self.devices],
            "gateway": asdict(self.gateway),
            "server_ingest": asdict(self.ingest),
            "quarantined_unattributed": self.quarantined_unattributed,
            "totals": self.totals(),
        }


def _spool_counts(spool_dir: Path) -> dict[str, int]:
    """Envelope files per device id in one spool directory (its ``rejected/`` for refusals)."""
    counts: dict[str, int] = {}
    if not spool_dir.is_dir():
        return counts
    for path in spool_dir.glob("*.env"):  # <device_id>.<seq:020d>.env
        device_id = path.name.split(".", 1)[0]
        counts[device_id] = counts.get(device_id, 0) + 1
    return counts


_Envelopes = dict[str, tuple[int, int, int]]
_Observations = dict[str, tuple[int, int]]


def _server_counts(database: Path) -> tuple[_Envelopes, _Observations, dict[str | None, int]]:
    """Per device: envelopes (rows, distinct seq, observations carried), observations (rows,
    distinct content ids), quarantined envelopes."""
    if not database.exists():
        return {}, {}, {}
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
    try:
        envelopes: _Envelopes = {
            str(r[0]): (int(r[1]), int(r[2]), int(r[3]))
            for r in db.execute(
                "SELECT device_id, COUNT(*), COUNT(DISTINCT seq), SUM(observations) "
                "FROM ingested_envelope GROUP BY device_id"
            )
        }
        observations: _Observations = {
            str(r[0]): (int(r[1]), int(r[2]))
            for r in db.execute(
                "SELECT device_id, COUNT(*), COUNT(DISTINCT content_id) FROM observation "
                "GROUP BY device_id"
            )
        }
        quarantine: dict[str | None, int] = {
            (None if r[0] is None else str(r[0])): int(r[1])
            for r in db.execute("SELECT device_id, COUNT(*) FROM quarantine GROUP BY device_id")
        }
    except sqlite3.OperationalError:
        return {}, {}, {}  # schema not there yet, or the database is busy: next poll
    finally:
        db.close()
    return envelopes, observations, quarantine


def _gateway_counts(outbox: Path) -> GatewayCounts:
    from mobile_gateway.errors import GatewayError
    from mobile_gateway.status import read_status

    if not outbox.exists():
        return GatewayCounts()
    try:
        status = read_status(outbox)
    except (GatewayError, sqlite3.Error, OSError):
        return GatewayCounts(link="unreadable")
    return GatewayCounts(
        queued=status.pending,
        in_flight=status.in_flight,
        relayed=status.done_total,
        dead=status.dead,
        link=status.link_state,
    )


def parse_server_metrics(text: str) -> IngestCounts:
    """Envelope outcomes and the seal-to-commit histogram from the server's metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = IngestCounts()
    buckets: list[tuple[float, float]] = []
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "phd_ingest_envelopes_total":
                outcome = sample.labels.get("outcome", "")
                if outcome in {"stored", "duplicate", "rejected", "retry_later"}:
                    setattr(counts, outcome, int(sample.value))
            elif sample.name == "phd_ingest_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "phd_ingest_seconds_count":
                counts.latency_count = int(sample.value)
            elif sample.name == "phd_ingest_seconds_sum":
                total = sample.value
    if counts.latency_count:
        counts.latency_mean_s = round(total / counts.latency_count, 4)
        wanted = 0.99 * counts.latency_count
        for bound, cumulative in sorted(buckets):
            if cumulative >= wanted:
                counts.latency_p99_le_s = bound
                break
    return counts


def collect(fleet: Fleet, agent: Agent | None, *, database: Path, outbox: Path) -> Snapshot:
    """One snapshot. Blocking (SQLite, directory listing): call it in a worker thread."""
    sent = fleet.sent()
    emitted = fleet.observations_sent()
    spool = _spool_counts(agent.spool.dir) if agent is not None else {}
    refused = _spool_counts(agent.spool.rejected_dir) if agent is not None else {}
    envelopes, observations, quarantine = _server_counts(database)
    snapshot = Snapshot(gateway=_gateway_counts(outbox))
    reports = list(agent.reports) if agent is not None else []
    for phd in fleet.enrolled:
        d = DeviceCounts(
            device_id=phd.device_id,
            kind=phd.kind,
            sent=sent.get(phd.device_id, 0),
            emitted_observations=emitted.get(phd.device_id, 0),
        )
        for report in reports:
            if report.device_id == phd.device_id:
                d.read += report.readings
                d.undecodable += report.undecodable
                d.sealed += report.envelopes
        d.spooled = spool.get(phd.device_id, 0)
        d.refused = refused.get(phd.device_id, 0)
        # An envelope leaves the spool only on the gateway's "accepted" reply (after its outbox
        # commit) or, refused, into rejected/. A session's envelopes count as sealed when the
        # session ends, so for a moment they can be spooled or handed over before that.
        d.relayed = max(0, d.sealed - d.spooled - d.refused)
        d.envelope_rows, d.committed, d.sealed_observations = envelopes.get(
            phd.device_id, (0, 0, 0)
        )
        d.observations, d.distinct_observations = observations.get(phd.device_id, (0, 0))
        d.rejected = quarantine.get(phd.device_id, 0)
        snapshot.devices.append(d)
    known = {p.device_id for p in fleet.enrolled}
    snapshot.quarantined_unattributed = sum(n for k, n in quarantine.items() if k not in known)
    return snapshot


def settled(snapshot: Snapshot) -> bool:
    """Nothing is on its way any more: spools and the outbox are empty and every envelope
    sealed was answered: stored or rejected by the hospital, or refused by the gateway."""
    gw = snapshot.gateway
    return (
        gw.queued == 0
        and gw.in_flight == 0
        and all(
            d.spooled == 0 and d.committed + d.rejected + d.refused >= d.sealed
            for d in snapshot.devices
        )
    )


def verdict(snapshot: Snapshot) -> list[str]:
    """Why the run is not "every reading committed exactly once"; empty when it is.

    End to end: what the virtual devices sent (their own count of the observations their
    values carry) against what the hospital stored (distinct content ids), after the agent's
    sessions have ended; then :func:`stored_once` for the envelopes in between.
    """
    problems: list[str] = []
    if not snapshot.devices:
        problems.append("no device was enrolled")
    for d in snapshot.devices:
        who = f"{d.kind} {d.device_id}"
        if d.sent == 0 or d.sealed == 0:
            problems.append(f"{who}: nothing was read (sent {d.sent}, sealed {d.sealed})")
        if d.read < d.sent:
            problems.append(f"{who}: agent read {d.read} of {d.sent} values sent")
        if d.undecodable:
            problems.append(f"{who}: {d.undecodable} value(s) read could not be decoded")
        if d.distinct_observations < d.emitted_observations:
            problems.append(
                f"{who}: {d.distinct_observations} of {d.emitted_observations} observations "
                "sent by the device stored"
            )
        elif d.distinct_observations > d.emitted_observations:
            problems.append(
                f"{who}: {d.distinct_observations} observations stored, more than the "
                f"{d.emitted_observations} the device sent"
            )
    return problems + stored_once(snapshot)


def stored_once(snapshot: Snapshot) -> list[str]:
    """The exactly-once half of the verdict, true at any quiet moment of a running stream:
    every envelope sealed so far is stored once, with each observation it carried once, and
    nothing is rejected, dead-lettered or still on its way. (The other half, "the agent read
    everything sent", only holds once the agent's sessions have ended.)"""
    problems: list[str] = []
    for d in snapshot.devices:
        who = f"{d.kind} {d.device_id}"
        if d.committed != d.sealed:
            problems.append(f"{who}: {d.committed} of {d.sealed} sealed envelopes committed")
        if d.envelope_rows != d.committed:
            problems.append(f"{who}: {d.envelope_rows - d.committed} envelope(s) stored twice")
        if d.observations != d.distinct_observations:
            problems.append(f"{who}: duplicate observations stored")
        if d.observations != d.sealed_observations:
            problems.append(
                f"{who}: {d.observations} of {d.sealed_observations} sealed observations stored"
            )
        if d.spooled:
            problems.append(f"{who}: {d.spooled} envelope(s) still in the agent spool")
        if d.refused:
            problems.append(f"{who}: {d.refused} envelope(s) refused by the gateway")
        if d.rejected:
            problems.append(f"{who}: {d.rejected} envelope(s) rejected by the hospital")
    gw = snapshot.gateway
    if gw.queued or gw.in_flight:
        problems.append(f"gateway: {gw.queued + gw.in_flight} envelope(s) not yet acknowledged")
    if gw.dead:
        problems.append(f"gateway: {gw.dead} dead-lettered envelope(s)")
    if snapshot.quarantined_unattributed:
        problems.append(f"hospital: {snapshot.quarantined_unattributed} unattributed rejection(s)")
    return problems
