"""Shared pytest fixtures: a real mosquitto on a free loopback port, configured from a PKI.

Usage, in a suite's ``conftest.py``::

    from tests.pki_fixtures import dev_pki, fresh_pki, rogue_pki  # noqa: F401
    from tests.mosquitto_fixtures import mosquitto, fresh_mosquitto  # noqa: F401

``mosquitto`` uses the session ``dev_pki`` (do not revoke in it); ``fresh_mosquitto`` uses
``fresh_pki`` (revocations allowed). Both are function-scoped :class:`MosquittoBroker` objects
with ``port``, ``host`` (``localhost``: the broker certificate's SAN), ``restart()``,
``reload()`` (SIGHUP), ``kill()`` and ``control_settings()`` for
:mod:`hospital_server.broker.control`. The generated config is the production one
(``phd broker config``). The methods block: call them through ``asyncio.to_thread`` from
async tests.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hospital_server.broker.config import BrokerFiles, write_broker_config
from hospital_server.broker.control import ControlSettings
from hospital_server.pki.layout import PkiLayout

__all__ = ["MosquittoBroker", "free_port", "fresh_mosquitto", "mosquitto"]

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    host = "localhost"

    def __init__(self, layout: PkiLayout, workdir: Path, port: int | None = None) -> None:
        self.layout = layout
        self.workdir = workdir
        self.port = port or free_port()
        self.files: BrokerFiles = write_broker_config(layout, workdir, port=self.port)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(  # fixed binary, generated config
            [MOSQUITTO, "-c", str(self.files.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_tls(timeout)

    def _wait_tls(self, timeout: float) -> None:
        """Ready = a full mutual-TLS handshake with the server identity succeeds."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.layout.ca_bundle))
        ctx.load_cert_chain(str(self.layout.server_cert), str(self.layout.server_key))
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                    ctx.wrap_socket(raw, server_hostname=self.host),
                ):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.files.log_file.read_text(encoding="utf-8")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def control_settings(self) -> ControlSettings:
        return ControlSettings(
            host=self.host,
            port=self.port,
            ca_file=self.layout.ca_cert("service"),
            cert_file=self.layout.server_cert,
            key_file=self.layout.server_key,
        )


@contextlib.contextmanager
def running_broker(layout: PkiLayout, workdir: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(layout, workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(dev_pki: PkiLayout, tmp_path: Path) -> Iterator[MosquittoBroker]:
    with running_broker(dev_pki, tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
def fresh_mosquitto(fresh_pki: PkiLayout, tmp_path: Path) -> Iterator[MosquittoBroker]:
    with running_broker(fresh_pki, tmp_path / "broker") as broker:
        yield broker
