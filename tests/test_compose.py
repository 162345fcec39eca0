"""compose.yaml is checked here because no Docker engine runs in CI: its structure (services,
dependencies, volumes, healthchecks, required secrets) and, most usefully, that every ``phd``
command it runs is accepted by the real argument parser, so a renamed flag fails here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
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


def test_postgres_keeps_refused_rows_out_of_its_log(compose: dict[str, Any]) -> None:
    # docs/SECURITY.md, "PHI in logs": a constraint violation's DETAIL would quote the row.
    command = compose["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    assert "log_error_verbosity=terse" in command


ONE_SHOTS = {"init", "migrate", "admin"}
LONG_RUNNING_RESTARTS = {"unless-stopped", "always", "on-failure"}


def _condition(service: dict[str, Any], dependency: str) -> str | None:
    entry = (service.get("depends_on") or {}).get(dependency)
    return None if entry is None else str(entry["condition"])


def _ingest_workers(services: dict[str, Any]) -> list[str]:
    return [
        n for n, s in services.items() if list(s.get("command") or [])[:2] == ["server", "ingest"]
    ]


def _python_probe(service: dict[str, Any]) -> str:
    """The code of a ``["CMD", "python", "-c", CODE]`` healthcheck."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    assert len(test) == 4, test
    return str(test[3])


def test_one_shots_are_exactly_the_setup_steps(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {n for n, s in services.items() if s.get("restart") == "no"} == ONE_SHOTS
    # A service awaited to complete must be one that ends, or its dependents never start.
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            if _condition(service, dep) == "service_completed_successfully":
                assert dep in ONE_SHOTS, f"{name} waits for {dep} to exit, but it runs forever"


def test_long_running_services_restart_and_are_health_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    long_running = set(services) - ONE_SHOTS
    assert {"postgres", "mosquitto", "server", "gateway", "devices"} <= long_running
    assert len(_ingest_workers(services)) >= 2
    for name in long_running:
        service = services[name]
        assert service.get("restart") in LONG_RUNNING_RESTARTS, name
        check = service.get("healthcheck")
        assert check is not None, f"{name} runs forever but has no healthcheck"
        assert check.get("disable") is not True, name
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert {"interval", "timeout", "retries"} <= set(check), name


def test_python_healthchecks_compile(compose: dict[str, Any]) -> None:
    probes = {
        name: _python_probe(s)
        for name, s in compose["services"].items()
        if s.get("healthcheck", {}).get("test", [])[1:2] == ["python"]
    }
    assert {"server", "gateway", "devices"} <= set(probes)
    for name, code in probes.items():
        compile(code, f"<healthcheck of {name}>", "exec")  # a SyntaxError fails the test


def test_server_and_ingest_workers_wait_for_migrate_and_healthy_stores(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert _condition(services["migrate"], "postgres") == "service_healthy"
    assert _condition(services["migrate"], "init") == "service_completed_successfully"
    for name in ("server", *_ingest_workers(services)):
        service = services[name]
        assert _condition(service, "migrate") == "service_completed_successfully", name
        assert _condition(service, "postgres") == "service_healthy", name
        assert _condition(service, "mosquitto") == "service_healthy", name


def test_gateway_and_devices_start_after_what_they_need(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _condition(services["mosquitto"], "init") == "service_completed_successfully"
    assert _condition(services["admin"], "migrate") == "service_completed_successfully"
    assert _condition(services["gateway"], "mosquitto") == "service_healthy"
    for worker in _ingest_workers(services):  # its uplinks have a subscribed consumer
        assert _condition(services["gateway"], worker) == "service_healthy", worker
    devices = services["devices"]
    assert _condition(devices, "server") == "service_healthy"  # enrollment goes through the API
    assert _condition(devices, "gateway") == "service_healthy"  # the agent hands off to it
    assert _condition(devices, "admin") == "service_completed_successfully"  # logs in as admin
    # The agent's --gateway socket is the gateway's --socket, on a volume both mount.
    gateway_cmd = services["gateway"]["command"]
    socket_path = gateway_cmd[gateway_cmd.index("--socket") + 1]
    assert f"--gateway {socket_path}" in devices["command"][0]
    shared = {str(v).split(":")[0] for v in services["gateway"]["volumes"]} & {
        str(v).split(":")[0] for v in devices["volumes"]
    }
    assert "ingress" in shared


def _run_probe(code: str) -> int:
    return subprocess.run([sys.executable, "-c", code], check=False, timeout=30).returncode


def test_ingest_healthcheck_probes_the_health_file_each_worker_keeps(
    compose: dict[str, Any],
) -> None:
    # hospital_server/ingest/health.py: the pool writes the file, `phd server ingest-health`
    # judges it (tests/server/test_ingest_health.py); here: every worker writes the file its
    # own probe reads, and the probe is a command the CLI accepts.
    services = compose["services"]
    parser = build_parser()
    for name in _ingest_workers(services):
        service = services[name]
        argv = list(service["command"])
        written = argv[argv.index("--health-file") + 1]
        probe = service["healthcheck"]["test"]
        assert probe[:2] == ["CMD", "phd"]
        assert probe[2:] == ["server", "ingest-health", written]
        parser.parse_args(probe[2:])  # SystemExit (a failure) if refused


def test_devices_healthcheck_wants_enrollment_done_and_the_agent_running(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    devices = compose["services"]["devices"]
    code = _python_probe(devices)
    home = "/var/lib/phd-agent"
    assert f"exec phd agent run --virtual --home {home} " in devices["command"][0]
    assert f"agent-home:{home}" in devices["volumes"]
    assert "init" not in devices  # with an init process, PID 1 would not be the agent
    assert code.count("/proc/1/cmdline") == 1
    assert code.count(home) == 1
    code = code.replace("/proc/1/cmdline", str(tmp_path / "cmdline"))
    code = code.replace(home, str(tmp_path / "home"))
    credential = tmp_path / "home" / "credentials" / "0b6f7a52"
    credential.mkdir(parents=True)
    # Still enrolling: PID 1 is the shell, whose script is one argument.
    script = " ".join(devices["command"])
    (tmp_path / "cmdline").write_bytes(f"/bin/sh\0-ec\0{script}\0".encode())
    (credential / "state.json").write_text("{}", encoding="utf-8")
    assert _run_probe(code) == 1
    # exec'd: the console script runs under its interpreter.
    argv = ["/opt/phd/bin/python", "/opt/phd/bin/phd", "agent", "run", "--virtual"]
    (tmp_path / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    assert _run_probe(code) == 0
    (credential / "state.json").unlink()  # running but nothing enrolled
    assert _run_probe(code) == 1
