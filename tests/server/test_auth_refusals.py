"""A flood of refused bearer tokens: counted every time, audited boundedly, nothing lost."""

from __future__ import annotations

import asyncio

import httpx

from hospital_server.auth.refusals import RefusalAudit
from hospital_server.context import ServerContext
from tests.server.conftest import audit_entries

USERS = "/api/v1/users"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refused(context: ServerContext, reason: str) -> float:
    value = context.metrics.registry.get_sample_value("phd_auth_refused_total", {"reason": reason})
    return 0.0 if value is None else value


def test_anonymous_refusals_fold_into_one_entry_per_reason_and_window(
    context: ServerContext,
) -> None:
    clock = Clock()
    refusals = RefusalAudit(context.sessions, context.metrics, window=60, clock=clock)
    for _ in range(100):
        refusals.refused("bad_signature", actor=None, via="bearer")
    refusals.refused("malformed", actor=None, via="bearer")  # another reason: its own entry
    for _ in range(3):  # a named staff user: every refusal is its own entry
        refusals.refused("inactive", actor="user-1", via="bearer")
    entries = audit_entries(context, "auth.failed")
    assert [(e["actor"], e["reason"], e["folded"]) for e in entries] == [
        ("unknown", "bad_signature", 0),
        ("unknown", "malformed", 0),
        ("user-1", "inactive", 0),
        ("user-1", "inactive", 0),
        ("user-1", "inactive", 0),
    ]
    assert _refused(context, "bad_signature") == 100  # the metric counts every one

    clock.now += 61  # the next window: the next refusal carries the 99 folded before it
    refusals.refused("bad_signature", actor=None, via="bearer")
    for _ in range(5):
        refusals.refused("bad_signature", actor=None, via="bearer")
    latest = audit_entries(context, "auth.failed")[-1]
    assert (latest["reason"], latest["folded"], latest["summary"]) == ("bad_signature", 99, False)

    refusals.flush()  # shutdown: the 5 folded since are written, none is left uncounted
    summary = audit_entries(context, "auth.failed")[-1]
    assert (summary["reason"], summary["folded"], summary["summary"]) == ("bad_signature", 5, True)
    entries = audit_entries(context, "auth.failed")
    anonymous = [e for e in entries if e["actor"] == "unknown" and e["reason"] == "bad_signature"]
    # Every refusal is accounted for: the entries plus what they folded.
    assert sum(1 + e["folded"] for e in anonymous if not e["summary"]) + 5 == 106
    refusals.flush()
    assert len(audit_entries(context, "auth.failed")) == len(entries)  # nothing more to write


async def test_a_garbage_token_flood_writes_one_audit_entry(
    client: httpx.AsyncClient, context: ServerContext
) -> None:
    for n in range(50):
        r = await client.get(USERS, headers={"Authorization": f"Bearer garbage.{n}.token"})
        assert (r.status_code, r.json()) == (401, {"detail": "invalid_token"})
    entries = await asyncio.to_thread(audit_entries, context, "auth.failed")
    assert [(e["actor"], e["reason"]) for e in entries] == [("unknown", "malformed")]
    assert _refused(context, "malformed") == 50
