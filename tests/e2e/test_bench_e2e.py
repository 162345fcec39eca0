"""`phd bench e2e` arithmetic: the steady-state rate and the percentiles it reports.

The bench itself is run by `phd bench e2e` (figures in docs/DEMO.md), never timed here.
"""

from __future__ import annotations

import pytest

from phd_cli.bench_e2e import _middle_rate
from phd_cli.cmd_bench import percentile


def test_middle_rate_ignores_start_up_and_drain() -> None:
    # 100 commits at 10/s in the middle, a slow start and a long tail around them.
    steady = [(0.0, 10.0 + i / 10) for i in range(100)]
    slow_start = [(0.0, float(i)) for i in range(10)]
    tail = [(0.0, 30.0 + 5 * i) for i in range(10)]
    rate = _middle_rate(slow_start + steady + tail)
    assert rate == pytest.approx(10.0, rel=0.05)


def test_middle_rate_needs_enough_commits() -> None:
    assert _middle_rate([(0.0, 1.0)] * 5) == 0.0
    assert _middle_rate([(0.0, 1.0)] * 20) == 0.0  # all at one instant: no span to divide


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
