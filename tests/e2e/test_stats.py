"""The demo's judgement: the exactly-once verdict refuses every kind of loss or duplicate, and
the server's metrics text is read correctly (from the real ServerMetrics registry)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hospital_server.metrics import ServerMetrics
from phd_cli.demo.stats import (
    DeviceCounts,
    GatewayCounts,
    Snapshot,
    parse_server_metrics,
    settled,
    verdict,
)


def good_device() -> DeviceCounts:
    return DeviceCounts(
        device_id="0b6d6c4e-0000-4000-8000-000000000001",
        kind="thermometer",
        sent=3,
        read=3,
        sealed=2,
        committed=2,
        envelope_rows=2,
        sealed_observations=3,
        observations=3,
        distinct_observations=3,
    )


def test_a_clean_run_passes() -> None:
    snapshot = Snapshot(devices=[good_device()], gateway=GatewayCounts(relayed=2))
    assert verdict(snapshot) == []
    assert settled(snapshot)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"sent": 0, "read": 0, "sealed": 0, "committed": 0, "envelope_rows": 0}, "nothing"),
        ({"read": 2}, "read 2 of 3"),
        ({"committed": 1, "envelope_rows": 1}, "1 of 2 sealed envelopes"),
        ({"envelope_rows": 3}, "stored twice"),
        ({"observations": 4}, "duplicate observations"),
        ({"observations": 2, "distinct_observations": 2}, "2 of 3 sealed observations"),
        ({"spooled": 1}, "still in the agent spool"),
        ({"rejected": 1}, "rejected by the hospital"),
    ],
)
def test_every_loss_or_duplicate_is_named(change: dict[str, int], words: str) -> None:
    device = good_device()
    for name, value in change.items():
        setattr(device, name, value)
    snapshot = Snapshot(devices=[device])
    problems = verdict(snapshot)
    assert any(words in p for p in problems), problems


def test_gateway_backlog_and_dead_letters_fail() -> None:
    device = good_device()
    queued = Snapshot(devices=[device], gateway=GatewayCounts(queued=1))
    assert not settled(queued)
    assert any("not yet acknowledged" in p for p in verdict(queued))
    dead = Snapshot(devices=[device], gateway=GatewayCounts(dead=1))
    assert any("dead-lettered" in p for p in verdict(dead))
    assert verdict(Snapshot()) == ["no device was enrolled"]
    stray = Snapshot(devices=[device], quarantined_unattributed=2)
    assert any("unattributed" in p for p in verdict(stray))


def test_not_settled_until_the_hospital_answered() -> None:
    waiting = Snapshot(devices=[replace(good_device(), committed=1, envelope_rows=1)])
    assert not settled(waiting)
    answered = Snapshot(devices=[replace(good_device(), committed=1, rejected=1)])
    assert settled(answered)


def test_server_metrics_are_read_from_the_real_registry() -> None:
    metrics = ServerMetrics()
    metrics.envelopes.labels(outcome="stored").inc(98)
    metrics.envelopes.labels(outcome="duplicate").inc(2)
    for _ in range(98):
        metrics.latency.observe(0.03)
    metrics.latency.observe(0.3)
    metrics.latency.observe(0.7)
    counts = parse_server_metrics(metrics.render().decode())
    assert counts.stored == 98
    assert counts.duplicate == 2
    assert counts.rejected == 0
    assert counts.latency_count == 100
    assert counts.latency_mean_s == pytest.approx((98 * 0.03 + 1.0) / 100, abs=1e-4)
    assert counts.latency_p99_le_s == 0.5  # the 99th observation (0.3 s) is in le=0.5


def test_empty_metrics_leave_latency_unknown() -> None:
    counts = parse_server_metrics(ServerMetrics().render().decode())
    assert counts.stored == 0
    assert counts.latency_mean_s is None
    assert counts.latency_p99_le_s is None
