"""``phd gateway status``: what a running (or stopped) gateway reports, read from its outbox.

Reads the SQLite file read-only (WAL allows it next to the running gateway); the running
gateway keeps link state and last-ack time in the outbox's ``meta`` table. Counts and times
only: never an envelope.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mobile_gateway.outbox import DeadLetter, open_readonly, read_dead_letters, read_stats

__all__ = ["GatewayStatus", "read_status"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStatus:
    depth: int
    pending: int
    in_flight: int
    dead: int
    bytes_queued: int
    oldest_pending_age: float | None
    done_total: int
    link_state: str
    running: bool
    last_ack_age: float | None
    dead_letters: tuple[DeadLetter, ...]


def read_status(outbox_path: Path, *, now: float | None = None) -> GatewayStatus:
    t = time.time() if now is None else now
    db = open_readonly(outbox_path)
    try:
        stats = read_stats(db)
        dead = tuple(read_dead_letters(db, 20))
    finally:
        db.close()
    last_ack = stats.meta.get("last_ack_at")
    return GatewayStatus(
        depth=stats.depth,
        pending=stats.pending,
        in_flight=stats.in_flight,
        dead=stats.dead,
        bytes_queued=stats.bytes_queued,
        oldest_pending_age=None if stats.oldest_pending_at is None else t - stats.oldest_pending_at,
        done_total=stats.done_total,
        link_state=stats.meta.get("link_state", "unknown"),
        running=_alive(stats.meta.get("pid")),
        last_ack_age=None if last_ack is None else t - float(last_ack),
        dead_letters=dead,
    )


def _alive(pid_text: str | None) -> bool:
    """Whether the process that last ran this outbox still exists (link_state is only
    meaningful then; after a crash it keeps its last value)."""
    if pid_text is None or not pid_text.isdigit():
        return False
    return Path(f"/proc/{int(pid_text)}").exists()
