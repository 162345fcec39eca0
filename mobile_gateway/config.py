"""Gateway settings: one frozen value, validated once, loaded from a TOML file or flags.

Nothing is built at import time and there are no usable secrets in defaults: the broker host,
the CA and the gateway's own certificate and key must be given. The gateway id is the CN of the
gateway certificate unless set (and must then equal it: the broker derives the identity from
the certificate, so a different id could never be authorised).

Example file (every key shown with its default, except the required ``[broker]`` ones)::

    [gateway]
    id = "gw-1"                                   # default: CN of broker.cert_file
    event_loop = "auto"                           # auto | uvloop | asyncio
    [ingress]
    socket = "/run/phd-gateway/ingress.sock"
    mode = "0660"
    max_connections = 64
    [outbox]
    path = "/var/lib/phd-gateway/outbox.db"
    max_entries = 200000
    max_bytes = 1073741824
    [broker]
    host = "mqtt.hospital.example"                # required; must match the broker cert SAN
    port = 8883
    ca_file = "/etc/phd-gateway/service-ca.crt"   # required: the pinned service CA
    cert_file = "/etc/phd-gateway/gw-1-chain.crt" # required: leaf + gateway CA
    key_file = "/etc/phd-gateway/gw-1.key"        # required, mode 0600
    keepalive = 30
    [uplink]
    batch_max_count = 64
    batch_max_bytes = 1048576
    max_in_flight = 3                             # batches awaiting the hospital's ack
    ack_timeout = 30.0
    retry_base = 2.0
    retry_cap = 300.0
    reconnect_base = 1.0
    reconnect_cap = 60.0
    [metrics]
    host = "127.0.0.1"
    port = 9464                                   # 0 disables the endpoint
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobile_gateway.errors import ConfigError
from phd_protocol.wire import MAX_BATCH_BYTES, MAX_BATCH_ENVELOPES

__all__ = ["EVENT_LOOPS", "GatewayConfig", "load_config"]

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    broker_host: str
    broker_port: int = 8883
    ca_file: Path
    cert_file: Path
    key_file: Path
    gateway_id: str | None = None
    # auto: uvloop where it is installed, else asyncio's own loop; uvloop: required.
    event_loop: str = "auto"
    keepalive: int = 30
    socket_path: Path = Path("/run/phd-gateway/ingress.sock")
    socket_mode: int = 0o660
    max_connections: int = 64
    outbox_path: Path = Path("/var/lib/phd-gateway/outbox.db")
    outbox_max_entries: int = 200_000
    outbox_max_bytes: int = 1 << 30
    batch_max_count: int = MAX_BATCH_ENVELOPES
    batch_max_bytes: int = MAX_BATCH_BYTES
    # Batches awaiting the hospital's ack. Small on purpose: the hospital answers a batch
    # only after committing it, so batches beyond what the worker holds (one committing, one
    # being verified) just queue there (latency = window x commit time) and stay small (one
    # commit per few envelopes). With 3, envelopes that arrive meanwhile wait in the outbox
    # and leave as one bigger batch. Measured by `phd bench e2e` (docs/gateway.md "Uplink
    # window and latency").
    max_in_flight: int = 3
    ack_timeout: float = 30.0
    retry_base: float = 2.0
    retry_cap: float = 300.0
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464

    def __post_init__(self) -> None:
        if not self.broker_host:
            raise ConfigError("broker.host", "required")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError("gateway.event_loop", f"must be one of {', '.join(EVENT_LOOPS)}")
        for name in ("broker_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535 or (name == "broker_port" and port == 0):
                raise ConfigError(name, "not a valid TCP port")
        if self.socket_mode & 0o007 or not self.socket_mode & 0o600:
            raise ConfigError("ingress.mode", "must be like 0600 or 0660 (never world access)")
        if not 1 <= self.batch_max_count <= MAX_BATCH_ENVELOPES:
            raise ConfigError("uplink.batch_max_count", f"must be 1..{MAX_BATCH_ENVELOPES}")
        # Leave room for the batch's own CBOR framing inside the wire bound.
        if not 65 * 1024 <= self.batch_max_bytes <= MAX_BATCH_BYTES:
            raise ConfigError("uplink.batch_max_bytes", f"must be 66560..{MAX_BATCH_BYTES}")
        if self.metrics_host not in {"127.0.0.1", "::1", "localhost"}:
            raise ConfigError("metrics.host", "metrics are served on loopback only")
        for name in ("ack_timeout", "retry_base", "reconnect_base"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.retry_cap < self.retry_base or self.reconnect_cap < self.reconnect_base:
            raise ConfigError("uplink", "caps must be >= their bases")
        if self.outbox_max_entries < 1 or self.outbox_max_bytes < 1:
            raise ConfigError("outbox", "capacity must be positive")

    def replace(self, **changes: Any) -> GatewayConfig:
        return dataclasses.replace(self, **changes)


_SECTIONS: dict[str, dict[str, str]] = {
    "gateway": {"id": "gateway_id", "event_loop": ""},
    "ingress": {"socket": "socket_path", "mode": "socket_mode", "max_connections": ""},
    "outbox": {"path": "outbox_path", "max_entries": "outbox_max_entries",
               "max_bytes": "outbox_max_bytes"},
    "broker": {"host": "broker_host", "port": "broker_port", "ca_file": "", "cert_file": "",
               "key_file": "", "keepalive": ""},
    "uplink": {"batch_max_count": "", "batch_max_bytes": "", "max_in_flight": "",
               "ack_timeout": "", "retry_base": "", "retry_cap": "", "reconnect_base": "",
               "reconnect_cap": ""},
    "metrics": {"host": "metrics_host", "port": "metrics_port"},
}  # fmt: skip

_PATHS = {"socket_path", "outbox_path", "ca_file", "cert_file", "key_file"}


def load_config(path: Path, **overrides: Any) -> GatewayConfig:
    """Read a TOML file (see the module docstring); unknown keys are errors, not ignored."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path.name), f"cannot read TOML ({type(exc).__name__})") from exc
    values: dict[str, Any] = {}
    for section, body in data.items():
        keys = _SECTIONS.get(section)
        if keys is None or not isinstance(body, dict):
            raise ConfigError(section, "unknown section")
        for key, raw in body.items():
            if key not in keys:
                raise ConfigError(f"{section}.{key}", "unknown key")
            field = keys[key] or key
            value: Any = raw
            if field in _PATHS:
                value = (path.parent / str(raw)).resolve()
            elif field == "socket_mode":
                value = int(str(raw), 8)
            values[field] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GatewayConfig(**values)
    except TypeError as exc:
        raise ConfigError("broker", "host, ca_file, cert_file and key_file are required") from exc
