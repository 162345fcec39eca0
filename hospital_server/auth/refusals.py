"""Audit of refused bearer tokens, bounded so that a flood cannot grow the audit table.

A refused token that names a staff user (deactivated, role mismatch...) is audited every time:
there are as many such entries as real users try. A refusal nobody can be named for (actor
``unknown``: garbage, a forged signature, an unknown kid) costs an attacker nothing, so those
are audited at most once per reason per ``window``: the first refusal of a reason in a window
writes an ``auth.failed`` entry, the ones after it in that window are counted, and the count
is written as ``folded=N`` (0 when none) on the next entry of that reason (or by
:meth:`flush`, at shutdown).
Every refusal is also counted in ``phd_auth_refused_total{reason}``. So the audit trail keeps
every reason and the number of refusals, and its growth is bounded by reasons x time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hospital_server import audit
from hospital_server.db import SessionFactory
from hospital_server.metrics import ServerMetrics

__all__ = ["UNKNOWN_ACTOR", "RefusalAudit"]

UNKNOWN_ACTOR = "unknown"


class RefusalAudit:
    def __init__(
        self,
        sessions: SessionFactory,
        metrics: ServerMetrics,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        # reason -> (start of its window, refusals folded since its last entry)
        self._open: dict[str, tuple[float, int]] = {}

    def refused(self, reason: str, *, actor: str | None, via: str) -> None:
        """Count one refusal and audit it, or fold it into the next entry of its reason."""
        self._metrics.auth_refused.labels(reason=reason).inc()
        folded = 0
        if actor is None:
            now = self._clock()
            with self._lock:
                start, folded = self._open.get(reason, (None, 0))
                if start is not None and now - start < self._window:
                    self._open[reason] = (start, folded + 1)
                    return
                self._open[reason] = (now, 0)
        self._write(reason, actor or UNKNOWN_ACTOR, via=via, folded=folded)

    def flush(self) -> None:
        """Write the counts still folded (at shutdown: no refusal goes uncounted)."""
        with self._lock:
            pending = {r: n for r, (_start, n) in self._open.items() if n}
            self._open.clear()
        for reason, folded in pending.items():
            self._write(reason, UNKNOWN_ACTOR, via="bearer", folded=folded, only_folded=True)

    def _write(
        self, reason: str, actor: str, *, via: str, folded: int, only_folded: bool = False
    ) -> None:
        with self._sessions() as session:
            # summary: the entry stands for its folded refusals only (written by flush()).
            audit.record(
                session,
                "auth.failed",
                actor=actor,
                reason=reason,
                via=via,
                folded=folded,
                summary=only_folded,
            )
            session.commit()
