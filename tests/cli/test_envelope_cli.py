"""``phd envelope seal|open`` against a real dev PKI and an agent-style credential directory."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from hospital_server.pki.ca import issue_device_certificate, revoke
from hospital_server.pki.layout import PkiLayout
from phd_cli.main import main
from phd_protocol import crypto, pki
from phd_protocol.enrollment import ingest_key_id
from tests.pki_fixtures import make_pki


@pytest.fixture
def fresh_pki(tmp_path: Path) -> PkiLayout:
    """A PKI of our own per test: these tests issue and revoke certificates in it."""
    return make_pki(tmp_path / "pki", gateways=())


BATCH = """[
  {"id": "0123456789abcdef0123456789abcdef", "mdc_code": 150021, "value": 120.5,
   "unit": "mm[Hg]", "unit_mdc": 266016, "time": "2026-01-15T09:29:00Z",
   "time_source": "device"},
  {"id": "fedcba9876543210fedcba9876543210", "mdc_code": 150022, "value": 80,
   "unit": "mm[Hg]", "unit_mdc": 266016, "time": "2026-01-15T09:29:00Z",
   "time_source": "device"}
]"""


def _credential(layout: PkiLayout, home: Path, alg: int = crypto.COSE_EDDSA) -> tuple[Path, str]:
    key = crypto.generate_signing_key(alg)
    device_id = uuid.uuid4()
    cert_pem, chain_pem = issue_device_certificate(layout, pki.build_device_csr(key), device_id)
    directory = home / str(device_id)
    directory.mkdir(parents=True)
    (directory / "device.key").write_bytes(crypto.private_key_pem(key))
    (directory / "device.key").chmod(0o600)
    (directory / "device.crt").write_bytes(cert_pem)
    (directory / "chain.crt").write_bytes(chain_pem)
    (directory / "root.crt").write_bytes(layout.root_ca_cert.read_bytes())
    ingest = crypto.load_private_key_pem(layout.ingest_hpke_key.read_bytes())
    assert not isinstance(ingest, crypto.SigningKey)
    raw = crypto.x25519_public_raw(ingest)
    keys = {"v": 1, "keys": [{"kid": ingest_key_id(raw).hex(), "public_key": raw.hex()}]}
    (directory / "ingest-keys.json").write_text(json.dumps(keys))
    return directory, str(device_id)


def _open_args(layout: PkiLayout, envelope: Path, certs: Path) -> list[str]:
    return [
        "envelope",
        "open",
        "--ingest-key",
        str(layout.ingest_hpke_key),
        "--trust",
        str(layout.ca_bundle),
        "--device-certs",
        str(certs),
        "--in",
        str(envelope),
    ]


def _seal(credential: Path, batch: Path, out: Path, seq: int = 1) -> int:
    return main(
        ["envelope", "seal", "--credential", str(credential), "--in", str(batch),
         "--out", str(out), "--seq", str(seq)]
    )  # fmt: skip


@pytest.mark.parametrize("alg", [crypto.COSE_EDDSA, crypto.COSE_ES256])
def test_seal_then_open_prints_the_verified_payload(
    fresh_pki: PkiLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str], alg: int
) -> None:
    credential, device_id = _credential(fresh_pki, tmp_path / "creds", alg)
    batch = tmp_path / "batch.json"
    batch.write_text(BATCH)
    out = tmp_path / "env.bin"
    assert _seal(credential, batch, out, seq=9) == 0
    capsys.readouterr()
    assert main(_open_args(fresh_pki, out, credential)) == 0
    printed = capsys.readouterr().out
    payload = json.loads(printed)
    assert payload["dev"] == device_id
    assert payload["seq"] == 9
    assert [o["value"] for o in payload["obs"]] == [120.5, 80]
    assert '"value": 120.5' in printed  # exact decimal, printed as a JSON number
    assert payload["alg"] == alg


def test_open_prints_only_the_reason_and_exits_2(
    fresh_pki: PkiLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credential, _ = _credential(fresh_pki, tmp_path / "creds")
    batch = tmp_path / "batch.json"
    batch.write_text(BATCH)
    out = tmp_path / "env.bin"
    assert _seal(credential, batch, out) == 0
    capsys.readouterr()

    tampered = tmp_path / "tampered.bin"
    data = bytearray(out.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    assert main(_open_args(fresh_pki, tampered, credential)) == 2
    assert capsys.readouterr().out.strip() == "decrypt_failed"

    empty = tmp_path / "no-certs"
    empty.mkdir()
    assert main(_open_args(fresh_pki, out, empty)) == 2
    assert capsys.readouterr().out.strip() == "unknown_credential"

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x83\x01")
    assert main(_open_args(fresh_pki, garbage, credential)) == 2
    assert capsys.readouterr().out.strip() == "malformed"


def test_open_checks_revocation_with_a_crl(
    fresh_pki: PkiLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credential, device_id = _credential(fresh_pki, tmp_path / "creds")
    batch = tmp_path / "batch.json"
    batch.write_text(BATCH)
    out = tmp_path / "env.bin"
    cert = pki.load_certificate((credential / "device.crt").read_bytes())
    revoke(fresh_pki, pki.serial_hex(cert), "keyCompromise")
    assert _seal(credential, batch, out) == 0  # sealed after the revocation
    capsys.readouterr()
    args = [*_open_args(fresh_pki, out, credential), "--crl", str(fresh_pki.crl_bundle)]
    assert main(args) == 2
    assert capsys.readouterr().out.strip() == "credential_revoked"
    assert device_id not in capsys.readouterr().err


def test_seal_refuses_a_bad_batch(fresh_pki: PkiLayout, tmp_path: Path) -> None:
    credential, _ = _credential(fresh_pki, tmp_path / "creds")
    batch = tmp_path / "batch.json"
    batch.write_text('[{"id": "nope"}]')
    assert _seal(credential, batch, tmp_path / "env.bin") == 1
    assert not (tmp_path / "env.bin").exists()
