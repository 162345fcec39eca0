"""The demo's judgement: the exactly-once verdict refuses every kind of loss or duplicate, end
to end (what the virtual devices sent against what the hospital stored), ``--exit`` turns
problems into exit status 1, the live view and summary show each device's numbers in their
columns, and the server's metrics text is read correctly (from the real ServerMetrics
registry)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
from rich.console import Console, RenderableType

from device_agent.agent import SessionReport
from device_agent.spool import Spool
from device_agent.virtual import firmware as fw
from device_agent.virtual.phds import DEVICE_CLASSES, GlucoseMeter
from device_agent.virtual.radio import VirtualRadio
from hospital_server.metrics import ServerMetrics
from phd_cli.demo.run import judge, report_scripted
from phd_cli.demo.stats import (
    DeviceCounts,
    GatewayCounts,
    Snapshot,
    collect,
    parse_server_metrics,
    settled,
    stored_once,
    verdict,
)
from phd_cli.demo.view import LIVE_COLUMNS, AuditState, Endpoints, live_table, summary_text
from phd_protocol.gatt import decode, to_observations

if TYPE_CHECKING:
    from device_agent.agent import Agent
    from phd_cli.demo.fleet import Fleet


def good_device() -> DeviceCounts:
    return DeviceCounts(
        device_id="0b6d6c4e-0000-4000-8000-000000000001",
        kind="thermometer",
        sent=3,
        emitted_observations=3,
        read=3,
        sealed=2,
        committed=2,
        envelope_rows=2,
        sealed_observations=3,
        observations=3,
        distinct_observations=3,
    )


def test_a_clean_run_passes() -> None:
    snapshot = Snapshot(devices=[good_device()], gateway=GatewayCounts(relayed=2))
    assert verdict(snapshot) == []
    assert settled(snapshot)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"sent": 0, "read": 0, "sealed": 0, "committed": 0, "envelope_rows": 0}, "nothing"),
        ({"read": 2}, "read 2 of 3"),
        ({"committed": 1, "envelope_rows": 1}, "1 of 2 sealed envelopes"),
        ({"envelope_rows": 3}, "stored twice"),
        ({"observations": 4}, "duplicate observations"),
        ({"observations": 2, "distinct_observations": 2}, "2 of 3 sealed observations"),
        ({"spooled": 1}, "still in the agent spool"),
        ({"rejected": 1}, "rejected by the hospital"),
        ({"refused": 1}, "refused by the gateway"),
        ({"undecodable": 1}, "1 value(s) read could not be decoded"),
        ({"emitted_observations": 4}, "3 of 4 observations sent by the device stored"),
        ({"emitted_observations": 2}, "3 observations stored, more than the 2"),
    ],
)
def test_every_loss_or_duplicate_is_named(change: dict[str, int], words: str) -> None:
    device = good_device()
    for name, value in change.items():
        setattr(device, name, value)
    snapshot = Snapshot(devices=[device])
    problems = verdict(snapshot)
    assert any(words in p for p in problems), problems


def test_gateway_backlog_and_dead_letters_fail() -> None:
    device = good_device()
    queued = Snapshot(devices=[device], gateway=GatewayCounts(queued=1))
    assert not settled(queued)
    assert any("not yet acknowledged" in p for p in verdict(queued))
    dead = Snapshot(devices=[device], gateway=GatewayCounts(dead=1))
    assert any("dead-lettered" in p for p in verdict(dead))
    assert verdict(Snapshot()) == ["no device was enrolled"]
    stray = Snapshot(devices=[device], quarantined_unattributed=2)
    assert any("unattributed" in p for p in verdict(stray))


def test_not_settled_until_the_hospital_answered() -> None:
    waiting = Snapshot(devices=[replace(good_device(), committed=1, envelope_rows=1)])
    assert not settled(waiting)
    answered = Snapshot(devices=[replace(good_device(), committed=1, rejected=1)])
    assert settled(answered)


def test_server_metrics_are_read_from_the_real_registry() -> None:
    metrics = ServerMetrics()
    metrics.envelopes.labels(outcome="stored").inc(98)
    metrics.envelopes.labels(outcome="duplicate").inc(2)
    for _ in range(98):
        metrics.latency.observe(0.03)
    metrics.latency.observe(0.3)
    metrics.latency.observe(0.7)
    counts = parse_server_metrics(metrics.render().decode())
    assert counts.stored == 98
    assert counts.duplicate == 2
    assert counts.rejected == 0
    assert counts.latency_count == 100
    assert counts.latency_mean_s == pytest.approx((98 * 0.03 + 1.0) / 100, abs=1e-4)
    assert counts.latency_p99_le_s == 0.5  # the 99th observation (0.3 s) is in le=0.5


def test_empty_metrics_leave_latency_unknown() -> None:
    counts = parse_server_metrics(ServerMetrics().render().decode())
    assert counts.stored == 0
    assert counts.latency_mean_s is None
    assert counts.latency_p99_le_s is None


def test_the_audited_snapshot_fails_end_to_end() -> None:
    # 10 values sent, 7 of them undecodable, one observation stored: the old verdict, which
    # compared the agent only with itself, passed this.
    device = DeviceCounts(
        device_id="0b6d6c4e-0000-4000-8000-000000000002",
        kind="glucose",
        sent=10,
        emitted_observations=10,
        read=10,
        undecodable=7,
        sealed=1,
        committed=1,
        envelope_rows=1,
        sealed_observations=1,
        observations=1,
        distinct_observations=1,
    )
    problems = verdict(Snapshot(devices=[device]))
    assert any("7 value(s) read could not be decoded" in p for p in problems), problems
    assert any("1 of 10 observations sent by the device stored" in p for p in problems)
    # Neither is an envelope problem: a quiet moment of a running stream cannot judge them.
    assert stored_once(Snapshot(devices=[device])) == []


def test_a_gateway_refusal_settles_but_fails() -> None:
    refused = replace(good_device(), committed=1, envelope_rows=1, refused=1)
    snapshot = Snapshot(devices=[refused])
    assert settled(snapshot)  # nobody will answer it any more: no point waiting
    assert any("refused by the gateway" in p for p in verdict(snapshot))


def _decoded(uuid: int, value: bytes) -> int:
    observations = to_observations(
        decode(uuid, value), device="virtual-1", received_at=datetime.now(UTC)
    )
    return len(observations)


def test_each_virtual_phd_counts_the_observations_the_agent_decodes() -> None:
    """The devices' own table (``observations_per_value``) against the agent's decoder, for
    every characteristic a device sends measurements on, from the device's own bytes."""
    radio = VirtualRadio()
    nan = fw.Sample(None, 0)
    checked: set[str] = set()
    for index, cls in enumerate(DEVICE_CLASSES):
        phd = cls(radio, address=f"D0:00:00:00:01:{index:02X}")
        table = dict(phd.observations_per_value)
        assert table, cls.kind
        for uuid, per_value in table.items():
            if uuid == 0x2A36:  # intermediate cuff pressure, as the monitor sends it
                value = fw.bp_measurement(
                    systolic=fw.Sample(Decimal(90), 0),
                    diastolic=nan,
                    mean=nan,
                    when=None,
                    pulse=None,
                )
            elif uuid == 0x2A5F:  # continuous pulse oximetry
                spo2, pulse = fw.Sample(Decimal(97), 0), fw.Sample(Decimal(70), 0)
                value = fw.plx_continuous(spo2=spo2, pulse=pulse)
            elif isinstance(phd, GlucoseMeter):  # a stored record, as RACP reports it
                record = phd.records[0]
                value = fw.glucose_measurement(
                    sequence=record.sequence,
                    base_time=record.base_time,
                    concentration=fw.Sample(Decimal(record.mg_dl) * Decimal("1e-5"), -5),
                )
            else:
                value = phd.measure()
            assert _decoded(uuid, value) == per_value, (cls.kind, hex(uuid))
            checked.add(f"{cls.kind}:{uuid:04X}")
    assert len(checked) == 8  # two each for blood pressure and pulse oximeter


def test_collect_counts_per_device_from_fleet_agent_and_spool(tmp_path: Path) -> None:
    enrolled = [
        SimpleNamespace(device_id="dev-a", kind="thermometer", address="A"),
        SimpleNamespace(device_id="dev-b", kind="weight", address="B"),
    ]
    fleet = SimpleNamespace(
        enrolled=enrolled,
        sent=lambda: {"dev-a": 6, "dev-b": 3},
        observations_sent=lambda: {"dev-a": 6, "dev-b": 9},
    )
    spool = Spool(tmp_path / "spool")
    spool.put("dev-a", 4, b"sealed")
    refused = spool.put("dev-a", 5, b"sealed")
    spool.reject(refused, "malformed")
    reports = [
        SessionReport(device_id="dev-a", readings=3, envelopes=3, undecodable=1),
        SessionReport(device_id="dev-a", readings=3, envelopes=2),
        SessionReport(device_id="dev-b", readings=3, envelopes=1),
    ]
    agent = SimpleNamespace(spool=spool, reports=reports)
    snapshot = collect(
        cast("Fleet", fleet),
        cast("Agent", agent),
        database=tmp_path / "none.db",
        outbox=tmp_path / "none",
    )
    a, b = snapshot.devices
    assert (a.sent, a.emitted_observations, a.read, a.undecodable) == (6, 6, 6, 1)
    assert (a.sealed, a.spooled, a.refused, a.relayed) == (5, 1, 1, 3)
    assert (b.sent, b.emitted_observations, b.sealed, b.relayed) == (3, 9, 1, 1)
    assert snapshot.totals()["relayed"] == 4


def _text(renderable: RenderableType) -> str:
    console = Console(record=True, width=240, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _two_devices() -> Snapshot:
    first = DeviceCounts(
        device_id="aaaaaaaa-0000-4000-8000-000000000001",
        kind="blood_pressure",
        sent=11,
        emitted_observations=37,
        read=12,
        sealed=13,
        relayed=14,
        committed=15,
        rejected=16,
        refused=1,
        observations=18,
    )
    second = DeviceCounts(
        device_id="bbbbbbbb-0000-4000-8000-000000000002",
        kind="glucose",
        sent=21,
        emitted_observations=47,
        read=22,
        sealed=23,
        relayed=24,
        committed=25,
        rejected=0,
        observations=28,
    )
    return Snapshot(devices=[first, second], gateway=GatewayCounts(relayed=99, queued=2))


def test_live_table_shows_each_device_in_its_columns() -> None:
    text = _text(live_table(_two_devices(), elapsed=3, duration=20, phase="running"))
    lines = text.splitlines()
    header = next(line for line in lines if "relayed" in line and "committed" in line)
    positions = [header.index(name) for name in LIVE_COLUMNS]
    assert positions == sorted(positions)  # in this order, each once
    expected = {
        "aaaaaaaa": ["blood_pressure", "11", "12", "13", "14", "15", "17", "37", "18"],
        "bbbbbbbb": ["glucose", "21", "22", "23", "24", "25", "0", "47", "28"],
    }
    for short, cells in expected.items():
        row = next(line for line in lines if line.strip().startswith(short))
        assert row.split()[1:] == cells, row
    assert "phd demo: running (3/20 s)" in text
    assert "relayed = durably accepted by the gateway" in " ".join(text.split())
    assert "acknowledged by the hospital 99" in text
    assert "queued 2" in text
    assert "aaaaaaaa-0000" not in text  # device ids are shortened to their first 8 digits


def _endpoints(tmp_path: Path) -> Endpoints:
    return Endpoints(
        api="https://localhost:8443",
        gateway_metrics="http://127.0.0.1:9100/metrics",
        database=tmp_path / "demo.db",
        root_ca=tmp_path / "root.crt",
        admin_user="demo-admin",
        admin_password_file=tmp_path / "admin-password",
        admin_totp_file=tmp_path / "admin-totp-secret",
        logs=tmp_path / "logs",
        run_dir=tmp_path,
        mqtt_port=8883,
    )


AUDIT = AuditState(entries=40, checkpoints=2, intact=True, problem_count=0, command="verify")


def test_summary_text_states_the_totals_of_a_clean_run(tmp_path: Path) -> None:
    devices = [good_device(), replace(good_device(), device_id="other", kind="weight")]
    snapshot = Snapshot(devices=devices)
    text = " ".join(_text(summary_text(snapshot, [], _endpoints(tmp_path), audit=AUDIT)).split())
    assert (
        "committed exactly once: 6 observations sent by 2 devices, 6 stored from 4 envelopes, "
        "0 lost, 0 duplicated, 0 rejected"
    ) in text
    assert "NOT" not in text
    assert "40 entries, 2 signed checkpoints, chain intact" in text


def test_summary_text_lists_every_problem(tmp_path: Path) -> None:
    snapshot = Snapshot(devices=[replace(good_device(), undecodable=2)])
    problems = verdict(snapshot)
    text = _text(summary_text(snapshot, problems, _endpoints(tmp_path), audit=AUDIT))
    assert "NOT every reading was committed exactly once" in text
    for problem in problems:
        assert f"- {problem}" in text
    assert "observations sent by" not in text  # the clean-run line


def test_exit_status_1_with_the_problems_in_the_json_summary(tmp_path: Path) -> None:
    device = replace(good_device(), emitted_observations=5)
    snapshot = Snapshot(devices=[device])
    broken = replace(AUDIT, intact=False, problem_count=3)
    problems = judge(snapshot, {device.device_id: 2}, broken)
    assert "3 of 5 observations sent by the device stored" in problems[0]
    assert any("2 of 3 stored observations read back through /fhir" in p for p in problems)
    assert problems[-1] == "audit trail: 3 problems (phd audit verify)"

    out = io.StringIO()
    status = report_scripted(
        snapshot, problems, _endpoints(tmp_path), duration=20, fhir_read=2, audit=broken, out=out
    )
    assert status == 1
    doc = json.loads(out.getvalue())
    assert doc["ok"] is False
    assert doc["problems"] == problems
    assert doc["audit"]["intact"] is False
    assert doc["devices"][0]["emitted_observations"] == 5


def test_exit_status_0_only_without_problems(tmp_path: Path) -> None:
    snapshot = Snapshot(devices=[good_device()])
    problems = judge(snapshot, {good_device().device_id: 3}, AUDIT)
    assert problems == []
    out = io.StringIO()
    status = report_scripted(
        snapshot, problems, _endpoints(tmp_path), duration=20, fhir_read=3, audit=AUDIT, out=out
    )
    assert status == 0
    doc = json.loads(out.getvalue())
    assert doc["ok"] is True
    assert doc["problems"] == []
    assert doc["totals"]["emitted_observations"] == doc["totals"]["observations"] == 3
