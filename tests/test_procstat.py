"""phd_cli.procstat: the /proc figures the benchmarks report."""

from __future__ import annotations

import os
import subprocess
import sys

from phd_cli.procstat import group_cpu_seconds, group_pids, group_rss_mib, status_kib


def test_a_process_group_is_counted_whole_and_a_gone_process_is_none() -> None:
    work = "import time; sum(range(3_000_000)); print(flush=True); time.sleep(30)"
    with subprocess.Popen(  # a second process, in a group of its own
        [sys.executable, "-c", work], start_new_session=True, stdout=subprocess.PIPE
    ) as child:
        try:
            assert child.stdout is not None
            child.stdout.readline()  # its work done: its memory stays put while it sleeps
            assert group_pids(child.pid) == [child.pid]
            rss = status_kib(child.pid, "VmRSS")
            assert rss is not None
            assert rss > 1000  # kB: a live interpreter
            assert group_rss_mib(child.pid) == rss / 1024
            assert group_cpu_seconds(child.pid) >= 0.0
            assert status_kib(child.pid, "NoSuchField") is None
        finally:
            child.kill()
    assert status_kib(child.pid, "VmRSS") is None
    assert group_pids(child.pid) == []
    assert group_rss_mib(child.pid) == 0.0
    assert group_cpu_seconds(os.getpgid(0)) > 0.0  # this test run has used CPU
