"""The demo's preparation: run directories are never reused, the ingress socket path always
fits a sockaddr_un, and a PKI the demo cannot use is refused with advice."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hospital_server.pki.ca import init_pki
from hospital_server.pki.layout import PkiLayout
from phd_cli.demo.procs import DemoSetupError
from phd_cli.demo.setup import new_run_dir, prepare_pki


def test_run_directories_are_new_and_private(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, tmp_path / "pki")
    second = new_run_dir(tmp_path, tmp_path / "pki")
    assert first.run != second.run
    assert first.run.stat().st_mode & 0o077 == 0


def test_socket_path_fits_even_under_a_long_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    paths = new_run_dir(deep, tmp_path / "pki")
    try:
        assert len(str(paths.gateway_socket)) <= 100
        assert paths.socket_dir != paths.gateway_dir
    finally:
        paths.socket_dir.rmdir()
    base = Path(tempfile.mkdtemp(prefix="phd-t"))  # short: the socket stays in the run dir
    try:
        short = new_run_dir(base, tmp_path / "pki")
        assert short.gateway_socket.parent == short.gateway_dir
    finally:
        shutil.rmtree(base)


def test_a_pki_with_protected_ca_keys_is_refused_with_advice(tmp_path: Path) -> None:
    init_pki(PkiLayout(tmp_path / "pki"), passphrase=b"correct horse battery staple")
    paths = new_run_dir(tmp_path / "runs", tmp_path / "pki")
    with pytest.raises(DemoSetupError) as info:
        prepare_pki(paths)
    assert "cannot be used by the demo" in str(info.value)
    assert "--pki" in info.value.hint
