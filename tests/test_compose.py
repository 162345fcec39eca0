"""compose.yaml is checked here because no Docker engine runs in CI: its structure (services,
dependencies, volumes, healthchecks, required secrets) and, most usefully, that every ``phd``
command it runs is accepted by the real argument parser, so a renamed flag fails here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from phd_cli.main import build_parser

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"
SECRETS = ("POSTGRES_PASSWORD", "PHD_ADMIN_PASSWORD", "PHD_ADMIN_TOTP_SECRET")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _phd_invocations(service: dict[str, Any]) -> list[list[str]]:
    """The argument vectors given to ``phd`` by a service (image entrypoint or shell lines)."""
    command = service.get("command")
    if command is None:
        return []
    if service.get("entrypoint") is None:  # the image's ENTRYPOINT is ["phd"]
        return [list(command)]
    script = "\n".join(command) if isinstance(command, list) else str(command)
    script = script.replace("\\\n", " ")
    calls = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["exec"]:
            words = words[1:]
        if words[:1] == ["phd"]:
            calls.append(words[1:])
    return calls


def test_every_phd_command_is_accepted_by_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    checked = 0
    for name, service in compose["services"].items():
        if "phd-telemetry" not in str(service.get("image", "")):
            continue
        for argv in _phd_invocations(service):
            try:
                parser.parse_args(argv)
            except SystemExit as exc:  # argparse's way of refusing
                pytest.fail(f"service {name}: `phd {' '.join(argv)}` is refused ({exc.code})")
            checked += 1
    assert checked >= 10  # init (5), migrate, admin, server, ingest x2, gateway, devices (2)


def test_dependencies_and_volumes_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in {
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            }
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} is awaited healthy but has none"
        for mount in service.get("volumes", []):
            source = str(mount).split(":")[0]
            assert source in volumes, f"{name} mounts undeclared volume {source}"


def test_required_secrets_have_no_defaults(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for secret in SECRETS:
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses, f"{secret} is never used"
        assert all(u.startswith(":?") for u in uses), f"{secret} must be ${{{secret}:?...}}"


def test_long_running_services_restart_and_are_health_checked(compose: dict[str, Any]) -> None:
    for name in ("postgres", "mosquitto", "server", "gateway"):
        service = compose["services"][name]
        assert "healthcheck" in service, name
        assert service.get("restart") in {"unless-stopped", "always"}, name
