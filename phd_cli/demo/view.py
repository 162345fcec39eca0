"""The demo's console output: the live table, the human summary and the JSON summary.

What it is for: render a :class:`~phd_cli.demo.stats.Snapshot` as a rich table (one row per
virtual PHD: values sent and read; envelopes sealed, relayed, committed and rejected;
observations sent and stored) while the demo runs, then a summary with where to look (API
docs, metrics, database, login, logs).

What it must never do: show a value, a name, an MRN, a password or a TOTP secret (both are
named by their files only); device ids and counts are all it prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from phd_cli.demo.stats import Snapshot

__all__ = ["LIVE_COLUMNS", "Endpoints", "live_table", "summary_json", "summary_text"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoints:
    api: str
    gateway_metrics: str
    database: Path
    root_ca: Path
    admin_user: str
    admin_password_file: Path
    admin_totp_file: Path
    logs: Path
    run_dir: Path
    mqtt_port: int
    clinician_user: str = ""
    clinician_password_file: Path | None = None
    clinician_totp_file: Path | None = None


LIVE_COLUMNS = (
    "sent",
    "read",
    "sealed",
    "relayed",
    "committed",
    "rejected",
    "obs sent",
    "obs stored",
)
LIVE_CAPTION = (
    "values: sent by the PHD, read by the agent. envelopes: sealed by the agent, relayed = "
    "durably accepted by the gateway, committed at the hospital, rejected by the gateway or "
    "the hospital. obs: observations the PHD's values carry, stored at the hospital"
)


def live_table(snapshot: Snapshot, *, elapsed: float, duration: float, phase: str) -> Group:
    table = Table(
        title=f"phd demo: {phase} ({elapsed:.0f}/{duration:.0f} s)",
        box=box.SIMPLE_HEAD,
        caption=LIVE_CAPTION,
    )
    table.add_column("device")
    table.add_column("kind")
    for col in LIVE_COLUMNS:
        table.add_column(col, justify="right")
    for d in snapshot.devices:
        rejected = d.rejected + d.refused
        table.add_row(
            d.device_id[:8],
            d.kind,
            str(d.sent),
            str(d.read),
            str(d.sealed),
            str(d.relayed),
            str(d.committed),
            Text(str(rejected), style="red" if rejected else ""),
            str(d.emitted_observations),
            str(d.observations),
        )
    gw = snapshot.gateway
    spooled = sum(d.spooled for d in snapshot.devices)
    line = Text(
        f"agent spool {spooled}; gateway link {gw.link}, queued {gw.queued}, "
        f"in flight {gw.in_flight}, acknowledged by the hospital {gw.relayed}, dead {gw.dead}"
    )
    ing = snapshot.ingest
    latency = (
        f", seal-to-commit mean {ing.latency_mean_s * 1000:.0f} ms"
        if ing.latency_mean_s is not None
        else ""
    )
    server = Text(
        f"hospital ingest: stored {ing.stored}, duplicate {ing.duplicate}, "
        f"rejected {ing.rejected}, retry later {ing.retry_later}{latency}"
    )
    return Group(table, line, server)


@dataclass(frozen=True, slots=True)
class AuditState:
    """The demo database's audit trail, verified at the end of the run."""

    entries: int
    checkpoints: int
    intact: bool
    problem_count: int
    command: str  # how to verify it again by hand


def summary_json(
    snapshot: Snapshot,
    problems: list[str],
    endpoints: Endpoints,
    *,
    duration: float,
    fhir_read: int | None = None,
    audit: AuditState | None = None,
) -> dict[str, Any]:
    return {
        "ok": not problems,
        "duration_s": duration,
        "problems": problems,
        **snapshot.to_json(),
        # Observations the demo clinician read back through /fhir (counted once each).
        "fhir_observations_read": fhir_read,
        "audit": None
        if audit is None
        else {
            "entries": audit.entries,
            "checkpoints": audit.checkpoints,
            "intact": audit.intact,
            "verify": audit.command,
        },
        "where": {
            "api_docs": f"{endpoints.api}/docs",
            "metrics": f"{endpoints.api}/metrics",
            "gateway_metrics": endpoints.gateway_metrics,
            "database": str(endpoints.database),
            "root_ca": str(endpoints.root_ca),
            "admin_user": endpoints.admin_user,
            "admin_password_file": str(endpoints.admin_password_file),
            "admin_totp_secret_file": str(endpoints.admin_totp_file),
            "token_endpoint": f"{endpoints.api}/api/v1/auth/token",
            "clinician_user": endpoints.clinician_user,
            "clinician_password_file": str(endpoints.clinician_password_file or ""),
            "clinician_totp_secret_file": str(endpoints.clinician_totp_file or ""),
            "fhir": f"{endpoints.api}/fhir/Observation?patient=Patient/<id>",
            "logs": str(endpoints.logs),
        },
    }


def summary_text(
    snapshot: Snapshot,
    problems: list[str],
    endpoints: Endpoints,
    *,
    fhir_read: int | None = None,
    audit: AuditState | None = None,
) -> RenderableType:
    totals = snapshot.totals()
    head = Text()
    if problems:
        head.append("NOT every reading was committed exactly once:\n", style="bold red")
        for p in problems:
            head.append(f"  - {p}\n", style="red")
    else:
        head.append(
            f"every reading that left a virtual device was committed exactly once: "
            f"{totals['emitted_observations']} observations sent by {len(snapshot.devices)} "
            f"devices, {totals['observations']} stored from {totals['sealed']} envelopes, "
            f"0 lost, 0 duplicated, {totals['rejected']} rejected\n",
            style="bold green",
        )
    where = Table.grid(padding=(0, 2))
    where.add_column(style="bold")
    where.add_column(overflow="fold")  # paths wrap, never cut short: they are for copying
    ca = endpoints.root_ca
    where.add_row("API docs", f"{endpoints.api}/docs  (trust {ca}: curl --cacert {ca})")
    where.add_row("server metrics", f"{endpoints.api}/metrics")
    where.add_row("gateway metrics", endpoints.gateway_metrics)
    where.add_row("database", f"{endpoints.database}  (SQLite; values encrypted per patient)")
    if audit is not None:
        state = "chain intact" if audit.intact else f"{audit.problem_count} problems"
        where.add_row(
            "audit trail",
            f"{audit.entries} entries, {audit.checkpoints} signed checkpoints, {state}; "
            f"again: {audit.command}  (docs/audit.md)",
        )
    where.add_row(
        "log in",
        f"POST {endpoints.api}/api/v1/auth/token (grant_type=password) as "
        f"{endpoints.admin_user}: password in {endpoints.admin_password_file}, TOTP secret "
        f"(base32, for an authenticator app) in {endpoints.admin_totp_file}; then "
        "Authorization: Bearer <access_token>  (docs/auth.md)",
    )
    if endpoints.clinician_user:
        read = "" if fhir_read is None else f"; read back {fhir_read} observations as FHIR"
        where.add_row(
            "read as a clinician",
            f"{endpoints.clinician_user} (on every demo patient's care team{read}): password "
            f"in {endpoints.clinician_password_file}, TOTP secret in "
            f"{endpoints.clinician_totp_file}; GET {endpoints.api}/fhir/Observation?patient="
            "Patient/<id> or /api/v1/patients/<id>/observations  (docs/clinical-api.md)",
        )
    where.add_row("broker", f"mqtts://localhost:{endpoints.mqtt_port} (mutual TLS)")
    where.add_row("logs", str(endpoints.logs))
    return Group(head, where)
