"""Process figures from Linux's /proc for the benchmarks: CPU seconds and memory.

Read-only, ids and counts only. A process that exits between two reads simply stops counting.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["group_cpu_seconds", "group_pids", "group_rss_mib", "status_kib"]

_TICK = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> float | None:
    """A kB field of ``/proc/<pid>/status`` (VmRSS, VmHWM...); None if the process or the
    field is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return None


def _stat_fields(pid: int | str) -> list[str]:
    # After the command name, which is in parentheses and may itself hold spaces.
    return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()


def group_pids(pgid: int) -> list[int]:
    """Every live process of process group ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry.name)
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: process group
            pids.append(int(entry.name))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of a process group's live processes."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            parts = _stat_fields(pid)
            total += int(parts[11]) + int(parts[12])  # utime, stime
    return total / _TICK


def group_rss_mib(pgid: int) -> float:
    """Resident memory of a process group's live processes, MiB."""
    return sum(status_kib(pid, "VmRSS") or 0.0 for pid in group_pids(pgid)) / 1024
