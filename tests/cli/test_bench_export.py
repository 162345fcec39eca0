"""`phd bench export` exports through the real pipeline and its validator finds nothing."""

from __future__ import annotations

import io

from rich.console import Console

from phd_cli import bench_export


def test_export_bench_quick_run_reports_rates_and_a_clean_validation() -> None:
    rows = bench_export.run(Console(file=io.StringIO()), quick=True)
    figures = {row.metric: row for row in rows}
    for profile in ("safe_harbor", "shifted"):
        # 512 envelopes of a blood pressure (two components), a pulse and a temperature.
        assert figures[f"{profile}: rows exported"].value == 512 * 4
        assert figures[f"{profile}: export rate"].value > 0
        validation = figures[f"{profile}: identifier kinds found by the validator"]
        assert (validation.value, validation.met) == (0, True)
