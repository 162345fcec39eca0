"""``phd pki ...`` through the real entry point, phd_cli.main.main."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from hospital_server.pki.layout import PkiLayout
from phd_cli.main import main
from phd_protocol.pki import load_certificate, load_crls


@pytest.fixture
def pki_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal width
    d = tmp_path / "certs"
    assert main(["pki", "init", "--dir", str(d)]) == 0
    return d


def test_init_is_idempotent_and_force_replaces(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = PkiLayout(pki_dir)
    root_key = layout.root_ca_key.read_bytes()
    capsys.readouterr()
    assert main(["pki", "init", "--dir", str(pki_dir)]) == 0
    out = capsys.readouterr().out
    assert "0 file(s) written" in out
    assert "--force" in out
    assert layout.root_ca_key.read_bytes() == root_key
    assert main(["pki", "init", "--dir", str(pki_dir), "--force"]) == 0
    assert layout.root_ca_key.read_bytes() != root_key
    assert stat.S_IMODE(layout.root_ca_key.stat().st_mode) == 0o600


def test_init_with_extra_hosts_and_workers(tmp_path: Path) -> None:
    d = tmp_path / "p"
    argv = ["pki", "init", "--dir", str(d), "--host", "mqtt.hospital.test", "--host", "10.0.0.5",
            "--worker", "ingest-a"]  # fmt: skip
    assert main(argv) == 0
    layout = PkiLayout(d)
    broker = load_certificate(layout.broker_cert.read_bytes())
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    values = {str(v.value) for v in sans}
    assert {"localhost", "127.0.0.1", "::1", "mqtt.hospital.test", "10.0.0.5"} == values
    assert layout.ingest_worker_cert("ingest-a").exists()
    assert not layout.ingest_worker_cert("ingest-1").exists()


def test_issue_revoke_crl_show(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = PkiLayout(pki_dir)
    assert main(["pki", "issue-gateway", "gw-5", "--dir", str(pki_dir)]) == 0
    assert layout.gateway_cert("gw-5").exists()
    assert stat.S_IMODE(layout.gateway_key("gw-5").stat().st_mode) == 0o600
    serial = load_certificate(layout.gateway_cert("gw-5").read_bytes()).serial_number
    argv = ["pki", "revoke", "gw-5", "--reason", "keyCompromise", "--dir", str(pki_dir)]
    assert main(argv) == 0
    crl = load_crls(layout.crl("gateway").read_bytes())[0]
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert main(["pki", "crl", "--dir", str(pki_dir)]) == 0
    crl = load_crls(layout.crl("gateway").read_bytes())[0]
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    capsys.readouterr()
    assert main(["pki", "show", "--dir", str(pki_dir)]) == 0
    out = capsys.readouterr().out
    assert "gw-5" in out
    assert "revoked (keyCompromise)" in out
    assert "root-ca" in out
    assert "ingest-2" in out
    assert "current" in out  # CRL status
    assert "active" in out  # ingest key
    assert "PRIVATE KEY" not in out


def test_unknown_revocation_target_and_bad_reason_fail_cleanly(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["pki", "revoke", "no-such", "--reason", "superseded", "--dir", str(pki_dir)]
    assert main(argv) == 1
    assert "no unrevoked certificate" in capsys.readouterr().out
    argv = ["pki", "revoke", "gw-1", "--reason", "whim", "--dir", str(pki_dir)]
    assert main(argv) == 1
    with pytest.raises(SystemExit):
        main(["pki", "revoke", "gw-1", "--dir", str(pki_dir)])  # --reason is required


def test_passphrase_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "enc"
    monkeypatch.setenv("PHD_CA_PASS", "a long and secret passphrase")
    assert main(["pki", "init", "--dir", str(d), "--passphrase-env", "PHD_CA_PASS"]) == 0
    assert b"ENCRYPTED" in PkiLayout(d).root_ca_key.read_bytes()
    assert main(["pki", "issue-gateway", "gw-1", "--dir", str(d)]) == 1
    assert "passphrase" in capsys.readouterr().out
    argv = ["pki", "issue-gateway", "gw-1", "--dir", str(d), "--passphrase-env", "PHD_CA_PASS"]
    assert main(argv) == 0
    argv = ["pki", "crl", "--dir", str(d), "--passphrase-env", "UNSET_VARIABLE_X"]
    assert main(argv) == 1
    assert "not set" in capsys.readouterr().out
    assert "a long and secret passphrase" not in capsys.readouterr().out


def test_rotate_ingest_key(pki_dir: Path) -> None:
    assert main(["pki", "rotate-ingest-key", "--dir", str(pki_dir)]) == 0
    ring = json.loads(PkiLayout(pki_dir).ingest_keyring.read_text())
    assert [e["status"] for e in ring] == ["retiring", "active"]


def test_show_on_an_empty_directory_fails_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pki", "show", "--dir", str(tmp_path / "none")]) == 1
    assert "phd pki init" in capsys.readouterr().out
