"""``phd bench [PART ...]``: measure speed and memory; print a table and write JSON.

Each part has its own module ``phd_cli/bench_<part>.py`` exposing
``run(console: rich.console.Console, quick: bool) -> list[BenchRow]``; this module only
dispatches, renders and saves. Targets are reported next to the measurements, never asserted
in unit tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PARTS: tuple[str, ...] = (
    "codecs",
    "envelope",
    "agent",
    "gateway",
    "ingest",
    "api",
    "export",
    "e2e",
)


@dataclass(frozen=True, slots=True)
class BenchRow:
    part: str
    metric: str
    value: float
    unit: str
    target: str = ""  # e.g. ">= 100000", "< 80"; empty when there is none
    met: bool | None = None  # None when there is no target


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (the smallest value with at least ``pct`` % at or below it)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure throughput, latency and memory of each part")
    p.add_argument(
        "parts",
        nargs="*",
        metavar="PART",
        help=f"parts to measure (default: all available): {', '.join(PARTS)}",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the results as JSON (default: %(default)s)",
    )
    p.add_argument("--quick", action="store_true", help="shorter runs, for smoke checks")
    p.set_defaults(handler=run)


def _available(part: str) -> bool:
    try:
        importlib.import_module(f"phd_cli.bench_{part}")
    except ModuleNotFoundError as exc:
        if exc.name == f"phd_cli.bench_{part}":
            return False
        raise
    return True


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        console.print(f"[red]error:[/red] unknown part(s) {unknown}; choose from {list(PARTS)}")
        return 2
    wanted = list(args.parts) or [p for p in PARTS if _available(p)]
    rows: list[BenchRow] = []
    for part in wanted:
        if not _available(part):
            console.print(f"[yellow]bench {part}: not available in this build[/yellow]")
            continue
        module = importlib.import_module(f"phd_cli.bench_{part}")
        console.rule(f"bench {part}")
        rows.extend(module.run(console, args.quick))

    table = Table(title="phd bench")
    for col in ("part", "metric", "value", "unit", "target", "met"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        met = "" if r.met is None else ("[green]yes[/green]" if r.met else "[red]no[/red]")
        table.add_row(r.part, r.metric, f"{r.value:,.2f}", r.unit, r.target, met)
    console.print(table)
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.machine(),
            "cores": _cores(),
        },
        "rows": [asdict(r) for r in rows],
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"results written to {args.json}")
    return 0


def _cores() -> int:
    import os

    return os.cpu_count() or 1
