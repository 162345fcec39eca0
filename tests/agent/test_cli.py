"""``phd agent`` commands end to end with --virtual, and the Current Time helpers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from device_agent.agent import current_time_value, device_clock
from phd_cli.main import main


def test_scan_lists_the_six_virtual_phds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "scan", "--virtual", "--duration", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "6 PHD(s)" in out
    for kind in (
        "blood_pressure",
        "glucose",
        "thermometer",
        "weight",
        "pulse_oximeter",
        "heart_rate",
    ):
        assert kind in out


def test_status_of_an_empty_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "status", "--home", str(tmp_path / "home")]) == 0
    assert "0 envelope(s) waiting" in capsys.readouterr().out


def test_run_without_credentials_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["agent", "run", "--virtual", "--home", str(tmp_path / "h"), "--gateway", "x", "--once"]
    )
    assert code == 1
    assert "phd agent enroll" in capsys.readouterr().err


def test_current_time_round_trip() -> None:
    moment = datetime(2031, 2, 28, 23, 59, 58, 500_000)  # noqa: DTZ001 - device local time
    value = current_time_value(moment)
    assert len(value) == 10  # CTS 3.1: Exact Time 256 (9) + Adjust Reason (1)
    assert value[7] == moment.isoweekday()
    assert value[8] == 128  # 0.5 s in 1/256 s
    assert device_clock(value) == moment.replace(microsecond=0)
    assert device_clock(bytes(10)) is None  # year/month/day 0: the device does not know
    assert device_clock(b"\x01") is None
