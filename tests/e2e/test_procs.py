"""The demo's process supervisor: children stop on SIGTERM, stubborn ones are killed, and a
child's own children (its process group) go with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phd_cli.demo.procs import (
    ChildExitedError,
    DemoSetupError,
    Supervisor,
    check_port_free,
    require_binary,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False  # reaped in between
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_all_terminates_in_reverse_order(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    a = sup.start("a", [sys.executable, "-c", "import time; time.sleep(60)"])
    b = sup.start("b", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert a.alive()
    assert b.alive()
    statuses = sup.stop_all()
    assert list(statuses) == ["b", "a"]
    assert statuses["a"] == statuses["b"] == -15  # SIGTERM was enough
    assert not a.alive()
    assert not b.alive()


def test_a_child_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ok', flush=True); time.sleep(60)"
    )
    with Supervisor(tmp_path, stop_timeout=0.5) as sup:
        child = sup.start("stubborn", [sys.executable, "-c", code])
        deadline = time.monotonic() + 10
        while "ok" not in child.log_tail() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert child.proc.returncode == -9


def test_grandchildren_in_the_group_are_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    with Supervisor(tmp_path, stop_timeout=2) as sup:
        sup.start("parent", [sys.executable, "-c", code])
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_check_reports_a_dead_child_with_its_log(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start("dies", [sys.executable, "-c", "print('bye'); raise SystemExit(3)"])
        child.proc.wait(10)
        with pytest.raises(ChildExitedError) as info:
            sup.check()
    assert "status 3" in str(info.value)
    assert str(child.log_path) in info.value.hint
    assert "bye" in child.log_tail()


def test_port_taken_and_binary_missing_say_what_to_do() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DemoSetupError) as info:
            check_port_free(port, what="MQTT broker")
    assert "already in use" in str(info.value)
    assert "ss -ltnp" in info.value.hint
    with pytest.raises(DemoSetupError) as missing:
        require_binary("/nonexistent/mosquitto", package="mosquitto")
    assert "apt-get install mosquitto" in missing.value.hint


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """kill -9 of the demo runs no clean-up code; the kernel still stops its children."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from phd_cli.demo.procs import Supervisor\n"
        f"sup = Supervisor(Path({str(tmp_path)!r}))\n"
        "child = sup.start('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "time.sleep(0.5)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=30)
    assert result.returncode == -9
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_stop_one_kills_or_stops_a_single_child_and_forgets_it(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, stop_timeout=2.0)
    try:
        grandchild = (
            "import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('ok', p.pid, flush=True); time.sleep(60)"
        )
        crashed = sup.start("crashed", [sys.executable, "-c", grandchild])
        stopped = sup.start("stopped", [sys.executable, "-c", "import time; time.sleep(60)"])
        kept = sup.start("kept", [sys.executable, "-c", "import time; time.sleep(60)"])
        deadline = time.monotonic() + 10
        while "ok" not in crashed.log_tail() and time.monotonic() < deadline:
            time.sleep(0.05)
        orphan = int(crashed.log_tail().split("ok", 1)[1].split()[0])
        assert _alive(orphan)
        assert sup.stop_one(crashed, signal.SIGKILL) == -signal.SIGKILL
        assert sup.stop_one(stopped, signal.SIGTERM) == -signal.SIGTERM
        # A crash takes the whole process group; the others keep running.
        deadline = time.monotonic() + 5
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(orphan)
        assert not stopped.alive()
        assert kept.alive()
        assert [c.name for c in sup.children] == ["kept"]
        with pytest.raises(ValueError, match="not a child"):
            sup.stop_one(crashed)
    finally:
        sup.stop_all()
