"""``phd decode``: JSON output with exact numbers, observations, and clear failures."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from phd_cli.main import main

BP_HEX = "1E B5F4 5000 5D00 E4070B17010203 4800 02 0500"  # 120.5/80/93 mmHg, pulse 72, user 2


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(["decode", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out, parse_float=Decimal) if out else None), err


def test_blood_pressure(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, err = _run(capsys, "--char", "2A35", "--hex", BP_HEX)
    assert code == 0
    assert err == ""
    assert doc["characteristic"] == "2A35"
    assert doc["systolic"] == Decimal("120.5")
    assert doc["status"] == ["body_movement", "irregular_pulse"]
    bp, pulse = doc["observations"]
    assert bp["mdc_code"] == 150020
    assert bp["value"] is None
    assert [c["mdc_code"] for c in bp["components"]] == [150021, 150022, 150023]
    assert [c["value"] for c in bp["components"]] == [Decimal("120.5"), 80, 93]
    assert bp["unit"] == "mm[Hg]"
    assert bp["unit_mdc"] == 266016
    assert bp["time"] == "2020-11-23T01:02:03Z"
    assert len(bp["id"]) == 32
    assert pulse == {
        "id": pulse["id"],
        "mdc_code": 149546,
        "value": 72,
        "unit": "/min",
        "unit_mdc": 264864,
        "time": "2020-11-23T01:02:03Z",
        "time_source": "device",
        "loinc": "8867-4",
        "device_time": "2020-11-23T01:02:03Z",
        "flags": ["body_movement", "irregular_pulse", "user:2"],
        "char": "2A35",
    }


def test_exact_number_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--char", "0x2a35", "--hex", "00B5F45000 5D00"]) == 0
    out = capsys.readouterr().out
    assert '"systolic": 120.5,' in out
    assert "120.49" not in out


def test_special_values_print_as_strings(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = _run(capsys, "--char", "2A35", "--hex", "04 FF07 0008 FE07 0208")
    assert code == 0
    components = doc["observations"][0]["components"]
    assert [c["value"] for c in components] == ["NaN", "NRes", "+INF"]
    assert doc["observations"][1]["value"] == "-INF"


def test_device_and_receive_time_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--char", "2A37", "--hex", "0648", "--received-at", "2026-01-02T03:04:05+01:00"]
    _, first, _ = _run(capsys, *args, "--device", "dev-a")
    _, again, _ = _run(capsys, *args, "--device", "dev-a")
    _, other, _ = _run(capsys, *args, "--device", "dev-b")
    obs = first["observations"][0]
    assert obs["time"] == "2026-01-02T02:04:05Z"
    assert obs["time_source"] == "agent"
    assert obs["flags"] == ["sensor_contact:detected"]
    assert obs["id"] == again["observations"][0]["id"]
    assert obs["id"] != other["observations"][0]["id"]


def test_glucose_with_context(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = _run(
        capsys,
        "--char", "2A18",
        "--hex", "12 0500 EA070B16081E00 5FB0 11",
        "--context-hex", "02 0500 01",
        "--device-tz", "Europe/Paris",
    )  # fmt: skip
    assert code == 0
    (glucose,) = doc["observations"]
    assert glucose["value"] == 95
    assert glucose["unit"] == "mg/dL"
    assert glucose["time"] == "2026-11-22T07:30:00Z"
    assert "meal:preprandial" in glucose["flags"]
    assert doc["context"]["meal"] == "preprandial"


def test_context_sequence_mismatch_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, err = _run(
        capsys,
        "--char", "2A18",
        "--hex", "02 0500 EA070B16081E00 5FB0 11",
        "--context-hex", "02 0600 01",
    )  # fmt: skip
    assert code == 1
    assert doc is None
    assert "different sequence numbers" in err


@pytest.mark.parametrize(
    ("hex_value", "message"),
    [
        ("", "field 'flags' truncated at offset 0"),
        ("00 7800 5000", "field 'mean_arterial_pressure' truncated at offset 5"),
        ("00 7800 5000 5D00 00", "unexpected trailing byte(s) at offset 7"),
        ("20 7800 5000 5D00", "reserved bit(s) set in 'flags' at offset 0"),
    ],
)
def test_bad_bytes_exit_non_zero_with_the_parse_error(
    capsys: pytest.CaptureFixture[str], hex_value: str, message: str
) -> None:
    code, doc, err = _run(capsys, "--char", "2A35", "--hex", hex_value)
    assert code == 1
    assert doc is None
    assert message in err
    assert err.startswith("error: Blood Pressure Measurement (2A35):")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--char", "2A99", "--hex", "00"], "2A99 is not supported"),
        (["--char", "blood", "--hex", "00"], "expected a 16-bit characteristic UUID"),
        (["--char", "2A35", "--hex", "zz"], "expected hexadecimal bytes"),
        (["--char", "2A35", "--hex", "0" * 1026], "longer than 512 bytes"),
        (["--char", "2A35"], "the following arguments are required: --hex"),
        (["--char", "2A35", "--hex", "00", "--device", "a b"], "printable ASCII"),
        (["--char", "2A35", "--hex", "00", "--received-at", "2026-01-01"], "UTC offset"),
        (["--char", "2A35", "--hex", "00", "--device-tz", "Mars/Base"], "IANA time zone"),
    ],
)
def test_bad_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["decode", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_context_only_with_glucose(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--char", "2A35", "--hex", BP_HEX, "--context-hex", "020500 01")
    assert code == 1
    assert "--context-hex goes with --char 2A18" in err
