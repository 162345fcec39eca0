"""``phd server run`` as an operator runs it: a real process, a real mosquitto, the prod profile.

The server is started as a subprocess (``migrate`` then ``run --worker ingest-1``) against a
SQLite file, a key file, a fresh PKI and a mosquitto with the generated production config. It
must become ready (``/readyz`` 200 over HTTPS with the PKI's server certificate), its ingest
worker must answer a gateway's batch through the broker, and SIGTERM must stop everything
cleanly within a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from hospital_server.context import ServerContext
from hospital_server.keys import LocalKeyFileProvider
from hospital_server.pki.layout import PkiLayout
from hospital_server.settings import Settings
from phd_protocol.errors import RejectReason
from phd_protocol.wire import EnvelopeResult, UplinkBatch
from tests.mosquitto_fixtures import MosquittoBroker, free_port, running_broker
from tests.server.ingest_world import bp, build_world
from tests.server.test_ingest_mqtt import Gateway

pytestmark = pytest.mark.integration

_STOP_WITHIN = 5.0  # seconds from SIGTERM to exit


@pytest.fixture
def broker(server_pki: PkiLayout, tmp_path: Path) -> Iterator[MosquittoBroker]:
    with running_broker(server_pki, tmp_path / "broker") as b:
        yield b


def _phd(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own CLI, fixed arguments
        [sys.executable, "-m", "phd_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ready(url: str, context: ssl.SSLContext, proc: subprocess.Popen[str]) -> int:
    """Poll ``url`` until it answers 200 (or the process dies, or 30 s pass); the last status."""
    status = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code  # 503 until the database and the broker are both reachable
        except OSError:
            status = 0  # not listening yet
        if status == 200:
            return status
        time.sleep(0.2)
    return status


def test_server_run_serves_ingests_and_stops_cleanly_on_sigterm(
    server_pki: PkiLayout, broker: MosquittoBroker, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys" / "server-keys.json"
    LocalKeyFileProvider.create(key_file)
    database = f"sqlite:///{tmp_path / 'server.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PHD_SERVER_")},
        "PHD_SERVER_PROFILE": "prod",
        "PHD_SERVER_DATABASE_URL": database,
        "PHD_SERVER_KEY_FILE": str(key_file),
        "PHD_SERVER_PKI_DIR": str(server_pki.root),
        "PHD_SERVER_MQTT_HOST": broker.host,
        "PHD_SERVER_MQTT_PORT": str(broker.port),
    }
    migrated = _phd(["server", "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr

    # A patient with an enrolled device, made in this process on the same database and keys.
    settings = Settings(
        profile="prod",
        database_url=SecretStr(database),
        key_file=key_file,
        pki_dir=server_pki.root,
    )
    ctx = ServerContext.build(settings, broker_probe=lambda: True)
    world = build_world(ctx, server_pki)
    device = world.enroll(mrn="RUN-1")

    port = free_port()
    proc = subprocess.Popen(  # our own CLI, fixed arguments
        [
            sys.executable,
            "-m",
            "phd_cli.main",
            "server",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--worker",
            "ingest-1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    gateway: Gateway | None = None
    try:
        tls = ssl.create_default_context(cafile=str(server_pki.ca_bundle))
        assert _ready(f"https://localhost:{port}/readyz", tls, proc) == 200
        # Ready means the in-process worker is subscribed, not only that the broker answers.
        with urllib.request.urlopen(  # our own server, https
            f"https://localhost:{port}/readyz", context=tls, timeout=5
        ) as response:
            assert json.loads(response.read())["ingest"] == "ok"

        # The in-process ingest worker consumes through the broker and answers the gateway.
        gateway = Gateway(server_pki, broker)
        batch = UplinkBatch.new([world.seal(device, [bp(device, "133", "83")]), b"\xa0junk"])
        gateway.send(batch.encode())
        ack = gateway.ack(timeout=30)
        ack.check_answers(batch)
        assert ack.results == (
            EnvelopeResult.stored(),
            EnvelopeResult.rejected(RejectReason.MALFORMED, permanent=True),
        )

        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        output, _ = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        if gateway is not None:
            gateway.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ctx.close()
    assert proc.returncode == 0, output
    assert took < _STOP_WITHIN, f"stopped after {took:.1f}s"
    assert "Traceback" not in output
    # The worker's session was closed with a DISCONNECT, not dropped with the process.
    assert "Client ingest-1 disconnected." in broker.log()
