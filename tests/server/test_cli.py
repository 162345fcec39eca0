"""``phd server`` operator commands against a real SQLite file in a temporary directory."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from sqlmodel import select

from hospital_server.auth import totp
from hospital_server.keys import LocalKeyFileProvider
from hospital_server.models import AuditEvent, StaffUser, TokenSigningKey
from hospital_server.security import verify_password
from hospital_server.staff import create_staff_user, totp_secret
from phd_cli.main import main
from tests.server.conftest import dev_session


def test_init_keys_migrate_create_admin(
    dev_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path = dev_dir
    assert main(["server", "--dev", "init-keys"]) == 0
    key_file = tmp_path / "var/dev/server-keys.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()
    assert main(["server", "--dev", "init-keys"]) == 0  # idempotent: never overwrites
    assert key_file.read_bytes() == before

    assert main(["server", "--dev", "migrate"]) == 0
    monkeypatch.setenv("ADMIN_PW", "short")
    assert main(["server", "--dev", "create-admin", "--password-env", "ADMIN_PW"]) == 2
    monkeypatch.setenv("ADMIN_PW", "a long enough password")
    capsys.readouterr()
    assert main(["server", "--dev", "create-admin", "--password-env", "ADMIN_PW"]) == 0
    # The TOTP provisioning is printed once, at creation; never the password.
    printed = capsys.readouterr().out
    assert "a long enough password" not in printed
    secret_b32 = re.search(r"secret: ([A-Z2-7]{32})\n", printed)
    uri = re.search(r"uri:\s+(otpauth://totp/\S+)\n", printed)
    assert secret_b32 is not None
    assert uri is not None
    assert uri.group(1) == totp.provisioning_uri(
        totp.parse_base32(secret_b32.group(1)), account="admin"
    )

    # A second plain create-admin refuses the existing user; --if-missing (compose's one-shot
    # on every start) leaves it alone and succeeds, even without a password to hand.
    assert main(["server", "--dev", "create-admin", "--password-env", "ADMIN_PW"]) == 2
    monkeypatch.setenv("ADMIN_PW", "a different long password")
    argv = ["server", "--dev", "create-admin", "--if-missing", "--password-env", "ADMIN_PW"]
    assert main(argv) == 0
    monkeypatch.delenv("ADMIN_PW")
    capsys.readouterr()
    assert main(argv) == 0
    assert "secret" not in capsys.readouterr().out  # nothing re-shown

    with dev_session(tmp_path) as s:
        admin = s.exec(select(StaffUser)).one()  # still exactly one account
        create_staff_user(s, "nurse-1", "a long nurse password", role="nurse", actor="t")
        s.commit()
    # --if-missing does not paper over a name taken by a non-admin account.
    monkeypatch.setenv("ADMIN_PW", "a long enough password")
    nurse = ["server", "--dev", "create-admin", "--if-missing", "--username", "nurse-1"]
    assert main([*nurse, "--password-env", "ADMIN_PW"]) == 2
    # And a missing admin is still created by --if-missing.
    other = ["server", "--dev", "create-admin", "--if-missing", "--username", "root-2"]
    assert main([*other, "--password-env", "ADMIN_PW"]) == 0
    with dev_session(tmp_path) as s:
        names = sorted(u.username for u in s.exec(select(StaffUser)))
    assert names == ["admin", "nurse-1", "root-2"]
    assert admin.role == "admin"
    assert admin.password_hash.startswith("scrypt$")
    assert verify_password("a long enough password", admin.password_hash)
    assert not verify_password("a long enough passworD", admin.password_hash)
    # The printed secret is the stored one (wrapped by the KEK, bound to the user id).
    provider = LocalKeyFileProvider.load(tmp_path / "var/dev/server-keys.json")
    assert totp_secret(provider, admin) == totp.parse_base32(secret_b32.group(1))
    assert admin.totp_wrapped is not None
    assert secret_b32.group(1).encode() not in admin.totp_wrapped


def test_create_admin_with_an_operator_chosen_totp_secret(
    dev_server: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path = dev_server
    monkeypatch.setenv("ADMIN_PW", "a long enough password")
    argv = ["server", "--dev", "create-admin", "--password-env", "ADMIN_PW"]
    monkeypatch.setenv("ADMIN_TOTP", "GEZDGNBV")  # 40 bits: refused
    assert main([*argv, "--totp-secret-env", "ADMIN_TOTP"]) == 2
    chosen = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    monkeypatch.setenv("ADMIN_TOTP", chosen)
    capsys.readouterr()
    assert main([*argv, "--totp-secret-env", "ADMIN_TOTP"]) == 0
    assert chosen not in capsys.readouterr().out
    with dev_session(tmp_path) as s:
        admin = s.exec(select(StaffUser)).one()
    provider = LocalKeyFileProvider.load(tmp_path / "var/dev/server-keys.json")
    assert totp_secret(provider, admin) == totp.parse_base32(chosen)


def test_rotate_token_key(dev_server: Path) -> None:
    tmp_path = dev_server
    assert main(["server", "--dev", "rotate-token-key"]) == 0
    assert main(["server", "--dev", "rotate-token-key"]) == 0
    with dev_session(tmp_path) as s:
        keys = s.exec(select(TokenSigningKey)).all()
        events = s.exec(select(AuditEvent).where(AuditEvent.event_type == "key.rotated")).all()
    assert len(keys) == 2
    assert sorted(k.retired_at is None for k in keys) == [False, True]
    active = next(k for k in keys if k.retired_at is None)
    assert [e.subject for e in events][-1] == active.kid
    assert [e.actor for e in events] == ["operator", "operator"]


def test_prod_profile_refuses_to_start_without_explicit_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from hospital_server.settings import Settings

    for name in ("DATABASE_URL", "KEY_FILE", "PKI_DIR", "PROFILE"):
        monkeypatch.delenv(f"PHD_SERVER_{name}", raising=False)
    with pytest.raises(ValidationError, match="database_url, key_file, pki_dir"):
        Settings()
    # The PKI directory holds the ingest and CA keys: the dev PKI's default location is not
    # taken for production's even when everything else is given.
    monkeypatch.setenv("PHD_SERVER_DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("PHD_SERVER_KEY_FILE", "/etc/phd/keys.json")
    with pytest.raises(ValidationError, match="explicit settings for: pki_dir "):
        Settings()
    monkeypatch.setenv("PHD_SERVER_PKI_DIR", "/etc/phd/pki")
    assert Settings().pki_dir == Path("/etc/phd/pki")
