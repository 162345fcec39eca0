"""The generated broker files: the security options are present and the ACLs are exact."""

from __future__ import annotations

import json
from pathlib import Path

from hospital_server.broker.config import gateway_acls, write_broker_config
from hospital_server.pki.layout import PkiLayout


def test_config_has_every_security_option(dev_pki: PkiLayout, tmp_path: Path) -> None:
    files = write_broker_config(dev_pki, tmp_path / "b", port=18883)
    lines = files.conf.read_text(encoding="utf-8").splitlines()
    for required in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "listener 18883 127.0.0.1",
        f"crlfile {dev_pki.crl_bundle.resolve()}",
        f"cafile {dev_pki.client_ca_bundle.resolve()}",
    ):
        assert required in lines, required
    assert not any(line.startswith(("acl_file", "password_file", "tls_version")) for line in lines)
    assert oct(files.dynsec.stat().st_mode & 0o777) == "0o600"


def test_dynsec_default_deny_and_one_role_per_gateway(dev_pki: PkiLayout, tmp_path: Path) -> None:
    files = write_broker_config(dev_pki, tmp_path / "b", port=18883)
    data = json.loads(files.dynsec.read_text(encoding="utf-8"))
    assert data["defaultACLAccess"]["publishClientSend"] is False
    assert data["defaultACLAccess"]["subscribe"] is False
    roles = {r["rolename"]: r["acls"] for r in data["roles"]}
    assert roles["gateway:gw-1"] == gateway_acls("gw-1")
    assert {a["topic"] for a in roles["gateway:gw-1"]} == {
        "phd/v1/gw/gw-1/up",
        "phd/v1/gw/gw-1/ack",
        "phd/v1/gw/gw-1/ctl",
    }
    assert not any("%" in a["topic"] or "#" in a["topic"] for a in roles["gateway:gw-1"])
    clients = {c["username"]: c for c in data["clients"]}
    assert {"gw-1", "gw-2", "ingest-1", "ingest-2"} <= set(clients)
    assert clients["ingest-1"]["roles"] == [{"rolename": "ingest"}]


def test_existing_dynsec_state_is_kept_unless_reset(dev_pki: PkiLayout, tmp_path: Path) -> None:
    files = write_broker_config(dev_pki, tmp_path / "b", port=1)
    files.dynsec.write_text('{"changed": "at run time"}', encoding="utf-8")
    write_broker_config(dev_pki, tmp_path / "b", port=2)
    assert "at run time" in files.dynsec.read_text(encoding="utf-8")
    write_broker_config(dev_pki, tmp_path / "b", port=2, overwrite_dynsec=True)
    assert "at run time" not in files.dynsec.read_text(encoding="utf-8")


def test_phd_broker_config_command(dev_pki: PkiLayout, tmp_path: Path) -> None:
    from phd_cli.main import main

    out = tmp_path / "cli"
    rc = main(
        ["broker", "config", "--pki", str(dev_pki.root), "--out", str(out), "--port", "18999"]
    )
    assert rc == 0
    assert "listener 18999 127.0.0.1" in (out / "mosquitto.conf").read_text(encoding="utf-8")
    assert json.loads((out / "dynamic-security.json").read_text(encoding="utf-8"))["roles"]
