"""`phd bench` end to end through the CLI entry point: the cheap parts in quick mode, the table
and the JSON file. The ingest and e2e parts are left to manual runs (minutes each); api and
export have their own tests (test_bench_api.py, test_bench_export.py)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from phd_cli.cmd_bench import PARTS
from phd_cli.main import main

ENVELOPE_METRICS = {
    "raw primitives (HPKE open + verify)": "µs",
    "open + verify": "µs",
    "open + verify / raw primitives": "x",
    "open + verify + parse 10 obs": "µs",
    "open + verify per core": "env/s",
    "seal (10 observations)": "µs",
    "seal per core": "env/s",
}
EXPECTED: dict[str, dict[str, str]] = {
    "codecs": {
        "blood pressure decode (1 core)": "measurements/s",
        "blood pressure decode + to_observations": "measurements/s",
        "glucose decode": "measurements/s",
        "temperature decode": "measurements/s",
        "blood pressure encode": "measurements/s",
    },
    "envelope": {
        f"{alg} {metric}": unit
        for alg in ("EdDSA", "ES256")
        for metric, unit in ENVELOPE_METRICS.items()
    },
    "gateway": {
        "raw paho publish (1 msg/envelope)": "msg/s",
        "relayed end to end (acked)": "env/s",
        "relayed / raw": "x",
        "gateway RSS, 20,000 queued": "MB",  # quick mode queues 20,000, not 100,000
    },
}


@dataclass(frozen=True)
class QuickRun:
    code: int
    result: dict[str, Any]
    printed: str
    json_path: Path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("COLUMNS", "200")  # rich's width: keep each table row on one line
        code = main(["bench", *EXPECTED, "--quick", "--json", str(out)])
    result = json.loads(out.read_text(encoding="utf-8"))
    return QuickRun(code, result, printed.getvalue(), out)


def test_quick_run_writes_every_row_with_a_positive_value_and_its_unit(
    quick_run: QuickRun,
) -> None:
    assert quick_run.code == 0
    rows = quick_run.result["rows"]
    parts = [r["part"] for r in rows]
    assert parts == sorted(parts, key=list(EXPECTED).index)  # in the order asked for
    for part, metrics in EXPECTED.items():
        got = {r["metric"]: r for r in rows if r["part"] == part}
        assert {m: r["unit"] for m, r in got.items()} == metrics, part
        for metric, row in got.items():
            value = row["value"]
            assert isinstance(value, float), metric
            assert math.isfinite(value), metric
            assert value > 0, metric
            assert isinstance(row["target"], str), metric
            # A verdict only against a target (quick runs may give a target without one).
            assert row["met"] in {None, True, False}, metric
            assert row["met"] is None or row["target"] != "", metric
    assert len(rows) == sum(len(m) for m in EXPECTED.values())


def test_quick_run_records_the_machine(quick_run: QuickRun) -> None:
    machine = quick_run.result["machine"]
    assert machine["python"] == platform.python_version()
    assert machine["cpu"] == platform.machine()
    assert isinstance(machine["cores"], int)
    assert machine["cores"] >= 1


def test_quick_run_prints_a_table_of_the_same_rows(quick_run: QuickRun) -> None:
    lines = quick_run.printed.splitlines()
    for part in EXPECTED:
        assert any(f"bench {part}" in line for line in lines), part
    assert any(line.strip() == "phd bench" for line in lines)  # the table's title
    for row in quick_run.result["rows"]:
        cells = (row["part"], row["metric"], f"{row['value']:,.2f}", row["unit"])
        assert any(all(c in line for c in cells) for line in lines), row["metric"]
    assert "results written to" in quick_run.printed
    assert quick_run.json_path.name in quick_run.printed


def test_unknown_part_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = main(["bench", "codecs", "nosuchpart", "--quick", "--json", str(out)])
    assert code == 2
    printed = " ".join(capsys.readouterr().out.split())
    assert "error: unknown part(s) ['nosuchpart']" in printed
    assert f"choose from {list(PARTS)}" in printed
    assert "bench codecs" not in printed  # refused before measuring the valid one
    assert not out.exists()
