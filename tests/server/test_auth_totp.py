"""TOTP (RFC 6238) against the RFC's own vectors, the acceptance window, and provisioning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from hospital_server.auth import totp

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "totp" / "rfc6238.json").read_text("utf-8")
)
SEED = bytes.fromhex(VECTORS["totp_sha1"]["secret_hex"])


@pytest.mark.parametrize("vector", VECTORS["totp_sha1"]["vectors"], ids=lambda v: str(v["time"]))
def test_rfc6238_appendix_b_sha1(vector: dict[str, Any]) -> None:
    assert totp.time_step(vector["time"]) == vector["step"] == int(vector["step_hex"], 16)
    assert totp.totp(SEED, vector["time"], digits=8) == vector["totp8"]
    # Six digits are the same number modulo 10^6 (RFC 4226 section 5.3).
    assert totp.totp(SEED, vector["time"]) == vector["totp8"][-6:]


@pytest.mark.parametrize(
    "vector", VECTORS["hotp_rfc4226"]["vectors"], ids=lambda v: str(v["counter"])
)
def test_rfc4226_appendix_d(vector: dict[str, Any]) -> None:
    secret = bytes.fromhex(VECTORS["hotp_rfc4226"]["secret_hex"])
    assert totp.hotp(secret, vector["counter"]) == vector["hotp6"]


def test_window_is_one_step_either_side() -> None:
    t = 1_111_111_111.0
    now = totp.time_step(t)
    for offset in (-1, 0, 1):
        code = totp.hotp(SEED, now + offset)
        assert totp.match_step(SEED, code, t) == now + offset
    for offset in (-3, -2, 2, 3):
        assert totp.match_step(SEED, totp.hotp(SEED, now + offset), t) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 456", "١٢٣٤٥٦", "------"])
def test_malformed_codes_never_match(code: str) -> None:
    assert totp.match_step(SEED, code, 59.0) is None


def test_a_code_of_another_secret_does_not_match() -> None:
    other = bytes(range(20))  # fixed, so this deterministic check cannot flake
    assert totp.match_step(SEED, totp.totp(other, 1_234_567_890), 1_234_567_890) is None


def test_new_secrets_are_160_random_bits() -> None:
    secrets = {totp.new_secret() for _ in range(32)}
    assert len(secrets) == 32
    assert all(len(s) == 20 for s in secrets)
    assert totp.new_secret(lambda n: b"\x01" * n) == b"\x01" * 20


def test_provisioning_uri_and_base32_round_trip() -> None:
    uri = totp.provisioning_uri(SEED, account="dr-who")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/PHD hospital:dr-who"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "secret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        "issuer": "PHD hospital",
        "algorithm": "SHA1",
        "digits": "6",
        "period": "30",
    }
    assert totp.parse_base32(query["secret"]) == SEED
    assert totp.parse_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq") == SEED


@pytest.mark.parametrize("text", ["", "not base32!", "GEZDGNBV", "GEZDGNBVGY3TQOJQ1"])
def test_parse_base32_refuses_short_or_invalid_secrets(text: str) -> None:
    with pytest.raises(ValueError, match="TOTP secret"):
        totp.parse_base32(text)
