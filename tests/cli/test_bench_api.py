"""`phd bench api` runs the whole read path and reports every figure it promises."""

from __future__ import annotations

import io

from rich.console import Console

from phd_cli import bench_api


def test_api_bench_quick_run_reports_each_read_kind() -> None:
    rows = bench_api.run(Console(file=io.StringIO()), quick=True)
    figures = {row.metric: row.value for row in rows}
    for kind in (
        f"JSON page of {bench_api.PAGE} readings",
        f"FHIR Bundle of {bench_api.PAGE} readings",
        "FHIR Observation by id",
    ):
        assert figures[f"{kind}: requests/s (one client)"] > 0
        assert 0 < figures[f"{kind}: p50"] <= figures[f"{kind}: p99"]
        assert figures[f"{kind}: per reading"] > 0
    # A page returns a hundred readings: its cost per reading is well below one request's.
    page = f"JSON page of {bench_api.PAGE} readings"
    assert figures[f"{page}: per reading"] * 1000 < figures[f"{page}: p50"] * 1e6 / 10
    assert all(row.part == "api" for row in rows)
