"""`phd demo` end to end: six virtual PHDs -> agent -> gateway -> mosquitto -> server (SQLite).

Everything is real and runs as `phd demo` runs it for an operator: the dev PKI, mosquitto
with the generated mTLS + dynamic-security config, `phd server run` with an ingest worker,
`phd gateway run`, enrollment through the API with one-time codes, the device agent over
bumble. The scripted form (`--exit`) must report every sealed envelope committed exactly once,
leave no process behind, and print no patient data. The failure paths must say what to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phd_cli.demo.fleet import enroll_virtual
from phd_cli.demo.procs import DemoSetupError
from phd_cli.demo.staff_login import StaffCredentials

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KINDS = {"blood_pressure", "glucose", "thermometer", "weight", "pulse_oximeter", "heart_rate"}


def demo_argv(tmp: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "phd_cli.main",
        "demo",
        "--dir",
        str(tmp / "runs"),
        "--pki",
        str(tmp / "pki"),
        *extra,
    ]


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def processes_under(path: Path) -> list[int]:
    """Pids (other than ours) whose command line or working directory is under ``path``."""
    needle = str(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = str((entry / "cwd").readlink())
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in cmdline or cwd.startswith(needle):
            found.append(int(entry.name))
    return found


def test_demo_commits_every_reading_exactly_once(tmp_path: Path) -> None:
    result = run(demo_argv(tmp_path, "--duration", "15", "--exit"), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)

    assert summary["ok"] is True
    assert summary["problems"] == []
    devices = summary["devices"]
    assert {d["kind"] for d in devices} == KINDS
    for d in devices:
        # Values left the PHD, the agent read them all, every sealed envelope is stored once.
        assert d["sent"] > 0
        assert d["read"] >= d["sent"]
        assert d["sealed"] > 0
        assert d["committed"] == d["sealed"] == d["envelope_rows"]
        assert d["observations"] == d["distinct_observations"] == d["sealed_observations"] > 0
        # End to end: what the device sent is what the hospital stored, all of it decoded.
        assert d["distinct_observations"] == d["emitted_observations"], d["kind"]
        assert d["undecodable"] == 0
        assert d["relayed"] == d["sealed"]  # the gateway accepted every envelope sealed
        assert d["spooled"] == d["refused"] == 0
        assert d["rejected"] == 0
    assert summary["gateway"]["queued"] == summary["gateway"]["in_flight"] == 0
    assert summary["gateway"]["dead"] == 0
    assert summary["gateway"]["relayed"] >= summary["totals"]["sealed"]

    # The demo clinician read every stored observation back through /fhir, each once.
    assert summary["fhir_observations_read"] == sum(d["observations"] for d in devices) > 0
    for name in ("clinician_password_file", "clinician_totp_secret_file"):
        secret_file = Path(summary["where"][name])
        assert secret_file.stat().st_mode & 0o777 == 0o600
        assert secret_file.read_text().strip() not in result.stdout + result.stderr
    assert summary["where"]["clinician_user"] == "demo-clinician"
    # The audit trail of the run (enrollments, logins, every read) verifies, link by link.
    assert summary["audit"]["intact"] is True
    assert summary["audit"]["entries"] > len(devices)

    # The database the summary names holds exactly those envelopes.
    database = Path(summary["where"]["database"])
    assert database.is_file()
    assert summary["where"]["api_docs"].startswith("https://localhost:")
    # The admin's password and TOTP secret are named by their 0600 files, never shown.
    for name in ("admin_password_file", "admin_totp_secret_file"):
        secret_file = Path(summary["where"][name])
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert secret_file.read_text().strip() not in result.stdout + result.stderr

    # No child outlives the demo.
    assert processes_under(tmp_path) == []

    # `phd demo enroll-virtual` (compose) leaves an enrolled home alone without asking the
    # server (nothing listens on port 9), and refuses a half-enrolled one.
    home = database.parent / "agent"
    nowhere, no_root = "https://127.0.0.1:9", tmp_path / "none.crt"
    nobody = StaffCredentials(username="a", password="b", totp_secret=bytes(20))
    again = enroll_virtual(server_url=nowhere, root=no_root, home=home, admin=nobody)
    assert asyncio.run(again) == []
    partial = tmp_path / "partial"
    shutil.copytree(home, partial)
    shutil.rmtree(next((partial / "credentials").iterdir()))
    half = enroll_virtual(server_url=nowhere, root=no_root, home=partial, admin=nobody)
    with pytest.raises(DemoSetupError, match="5 of 6"):
        asyncio.run(half)
    # No patient data on the console (names and MRNs exist only in requests to the server).
    for text in (result.stdout, result.stderr):
        assert "Demo Patient" not in text
        assert "DEMO-" not in text


@pytest.mark.parametrize(
    ("sig", "status"),
    [(signal.SIGINT, 130), (signal.SIGHUP, 129)],
    ids=["ctrl-c", "terminal-closed"],
)
def test_interrupt_stops_every_child(tmp_path: Path, sig: signal.Signals, status: int) -> None:
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            demo_argv(tmp_path, "--duration", "120"), stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 120
        # Wait until the children are up and the agent runs (the demo says so on stdout; we
        # watch the processes instead so the test does not depend on wording).
        while time.monotonic() < deadline:
            if (tmp_path / "runs").is_dir() and any((tmp_path / "runs").glob("*/agent/agent.lock")):
                break
            assert proc.poll() is None, errors.read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the demo did not reach the agent stage")
        assert len(processes_under(tmp_path)) >= 3  # mosquitto, server, gateway
        proc.send_signal(sig)
        returned = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert returned == status
    assert processes_under(tmp_path) == []


def test_port_in_use_fails_with_advice(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(demo_argv(tmp_path, "--mqtt-port", str(port), "--exit"), timeout=60)
    assert result.returncode == 2
    assert f"port {port}" in result.stderr
    assert "already in use" in result.stderr
    assert "next:" in result.stderr
    assert result.stdout == ""
    assert processes_under(tmp_path) == []


def test_missing_mosquitto_fails_with_advice(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mosquitto"
    result = run(demo_argv(tmp_path, "--mosquitto", str(missing), "--exit"), timeout=60)
    assert result.returncode == 2
    assert "was not found" in result.stderr
    assert "apt-get install mosquitto" in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before creating anything
