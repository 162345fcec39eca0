"""The ingest pool's health file (hospital_server.ingest.health) and its probe.

Unit: what the probe judges, and files it must refuse. Integration: a real pool against a real
mosquitto writes "connected" and "database ok"; the broker stopping shows within seconds; a
stopped pool leaves no file behind.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hospital_server.context import ServerContext
from hospital_server.ingest.health import (
    FORMAT,
    HealthFileError,
    PoolHealth,
    judge,
    read_health,
    write_health,
)
from hospital_server.ingest.runner import start_workers
from hospital_server.pki.layout import PkiLayout
from tests.mosquitto_fixtures import MosquittoBroker
from tests.server.ingest_world import World

NOW = 1_800_000_000.0
HEALTHY = PoolHealth(at=NOW - 2, database=True, workers={"ingest-1": True}, batches=7)


def test_a_fresh_file_with_connected_workers_and_a_database_is_healthy(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_health(path, HEALTHY)
    assert read_health(path) == HEALTHY
    assert judge(read_health(path), now=NOW, max_age=15) == []
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no sibling behind


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"at": NOW - 60}, "60 s old"),
        (
            {"workers": {"ingest-1": True, "ingest-2": False}},
            "not connected to the broker: ingest-2",
        ),
        ({"workers": {}}, "no ingest worker is running"),
        ({"database": False}, "the database did not answer"),
    ],
)
def test_each_failing_condition_is_named(change: dict[str, object], problem: str) -> None:
    problems = judge(dataclasses.replace(HEALTHY, **change), now=NOW, max_age=15)  # type: ignore[arg-type]
    assert len(problems) == 1
    assert problem in problems[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a phd-ingest-health/1 file"),
        (b"[1, 2]", "not a phd-ingest-health/1 file"),
        (json.dumps({"format": "other/1"}).encode(), "not a phd-ingest-health/1 file"),
        (
            json.dumps({"format": FORMAT, "at": 1, "database": True, "batches": 0}).encode(),
            "not a phd-ingest-health/1 file",
        ),
        (
            json.dumps(
                {"format": FORMAT, "at": 1, "database": "yes", "workers": {}, "batches": 0}
            ).encode(),
            "database a boolean",
        ),
        (
            json.dumps(
                {"format": FORMAT, "at": 1, "database": True, "workers": {"w": 1}, "batches": 0}
            ).encode(),
            "names to booleans",
        ),
        (b" " * (64 * 1024 + 1), "too big"),
    ],
)
def test_a_file_that_is_not_a_health_file_is_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "health.json"
    path.write_bytes(content)
    with pytest.raises(HealthFileError, match=message):
        read_health(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HealthFileError, match="cannot read"):
        read_health(tmp_path / "absent.json")


def _until(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.mark.integration
def test_a_running_pool_reports_broker_and_database_and_a_stopped_one_leaves_no_file(
    world: World, server_pki: PkiLayout, tmp_path: Path
) -> None:
    broker = MosquittoBroker(server_pki, tmp_path / "broker")
    broker.start()
    settings = world.ctx.settings.model_copy(
        update={"pki_dir": server_pki.root, "mqtt_host": broker.host, "mqtt_port": broker.port}
    )
    ctx = dataclasses.replace(world.ctx, settings=settings)
    assert isinstance(ctx, ServerContext)
    path = tmp_path / "ingest-health.json"
    pool = start_workers(ctx, ["ingest-1"], health_file=path, health_interval=0.2)
    try:
        _until(lambda: read_health(path).workers == {"ingest-1": True})
        assert pool.subscribed()  # what /readyz asks of in-process workers
        health = read_health(path)
        assert health.database is True
        assert judge(health, now=time.time(), max_age=15) == []
        broker.stop()  # the worker loses its session and backs off
        _until(lambda: read_health(path).workers == {"ingest-1": False})
        assert not pool.subscribed()
        assert judge(read_health(path), now=time.time(), max_age=15) == [
            "not connected to the broker: ingest-1"
        ]
    finally:
        pool.shutdown()
        broker.stop()
    assert not path.exists()


def test_the_probe_command_exits_0_when_healthy_and_1_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phd_cli.main import main

    path = tmp_path / "health.json"
    write_health(path, dataclasses.replace(HEALTHY, at=time.time()))
    assert main(["server", "ingest-health", str(path)]) == 0
    assert "ingest healthy" in capsys.readouterr().out
    write_health(path, dataclasses.replace(HEALTHY, at=time.time() - 100))
    assert main(["server", "ingest-health", str(path), "--max-age", "30"]) == 1
    assert "100 s old (limit 30 s)" in capsys.readouterr().err
    assert main(["server", "ingest-health", str(tmp_path / "absent.json")]) == 1
    assert "--health-file" in capsys.readouterr().err
