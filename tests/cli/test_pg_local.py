"""pg_local finds the newest installed PostgreSQL server, whatever major version Debian brings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phd_cli import pg_local
from phd_cli.pg_local import newest_server_bindir, pg_bindir


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    pg_bindir.cache_clear()
    yield
    pg_bindir.cache_clear()  # later tests look up the real installation again


def _install(root: Path, version: str, tools: tuple[str, ...] = ("initdb", "pg_ctl")) -> Path:
    bindir = root / version / "bin"
    bindir.mkdir(parents=True)
    for tool in tools:
        (bindir / tool).write_text("#!/bin/sh\n", encoding="ascii")
    return bindir


def test_newest_version_wins_and_versions_compare_as_numbers() -> None:
    root = Path("/usr/lib/postgresql")
    dirs = [root / v / "bin" for v in ("9.6", "15", "16", "10")]
    assert newest_server_bindir(dirs) == root / "16" / "bin"
    assert newest_server_bindir(dirs[:1] + dirs[3:]) == root / "10" / "bin"  # not "9.6" > "10"
    assert newest_server_bindir([root / "15" / "bin"]) == root / "15" / "bin"


def test_no_versioned_directory_gives_none() -> None:
    assert newest_server_bindir([]) is None
    assert newest_server_bindir([Path("/usr/lib/postgresql/common/bin")]) is None


@pytest.mark.usefixtures("fresh_lookup")
def test_lookup_skips_client_only_installs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_local, "DEBIAN_ROOT", tmp_path)
    _install(tmp_path, "15")
    newest = _install(tmp_path, "16")
    _install(tmp_path, "17", tools=("psql",))  # postgresql-client-17 alone: no server
    assert pg_bindir() == newest


@pytest.mark.usefixtures("fresh_lookup")
def test_lookup_falls_back_to_pg_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_local, "DEBIAN_ROOT", tmp_path / "none")
    server = _install(tmp_path, "opt")
    path = tmp_path / "path"
    path.mkdir()
    pg_config = path / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {server}\n", encoding="ascii")
    pg_config.chmod(0o755)
    monkeypatch.setenv("PATH", str(path))
    assert pg_bindir() == server


@pytest.mark.usefixtures("fresh_lookup")
def test_nothing_installed_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_local, "DEBIAN_ROOT", tmp_path)
    _install(tmp_path, "16", tools=("psql",))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no pg_config either
    with pytest.raises(RuntimeError, match=r"apt-get install -y postgresql\b") as info:
        pg_bindir()
    assert str(tmp_path) in str(info.value)


@pytest.mark.usefixtures("fresh_lookup")
def test_this_machine_has_a_server() -> None:
    bindir = pg_bindir()  # the test suite's PostgreSQL fixtures start this one
    assert (bindir / "initdb").is_file()
    assert (bindir / "pg_ctl").is_file()
