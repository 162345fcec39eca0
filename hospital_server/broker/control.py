"""Run-time control of the broker: cut a revoked gateway off, add a new one, reload the CRL.

Talks to mosquitto's dynamic-security plugin over MQTT (``$CONTROL/dynamic-security/v1``)
with the hospital server's service identity (its certificate CN holds the ``dynsec-admin``
role in the generated config). Verified on mosquitto 2.0.11 (tests/broker/):

- ``disableClient`` kicks the live session at once (DISCONNECT reason 152, administrative
  action). On its own it is not enough: with certificate identities the plugin never sees a
  password, so a disabled client can reconnect, and it keeps its roles' grants. Hence
  :func:`disable_gateway` first removes the gateway's role (no publish, no subscribe), then
  disables it (which kicks the session). A reconnect gets nothing but 135 (not authorized).
- SIGHUP makes mosquitto re-read ``crlfile`` for *new* TLS handshakes (live sessions survive),
  so after the CRL is regenerated :func:`reload_broker` closes the door at the TLS layer too.

Blocking API (paho's network thread does the I/O); the server calls it from a worker thread.
This module is hospital_server's second paho user next to the ingest adapter: the control
channel is a separate identity and connection on purpose. Must never log key material.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from hospital_server.broker.config import gateway_acls, gateway_role

__all__ = [
    "BrokerControlError",
    "ControlSettings",
    "DynsecClient",
    "add_gateway",
    "disable_gateway",
    "enable_gateway",
    "reload_broker",
]

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"


class BrokerControlError(Exception):
    """A control command failed; ``command`` and the broker's ``error`` text (no secrets)."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"broker control {command}: {error}")
        self.command = command
        self.error = error


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlSettings:
    host: str
    port: int
    ca_file: Path  # the service CA: pinned, as the gateways do
    cert_file: Path
    key_file: Path
    timeout: float = 10.0


def _context(s: ControlSettings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cafile=str(s.ca_file))
    ctx.load_cert_chain(certfile=str(s.cert_file), keyfile=str(s.key_file))
    return ctx


class DynsecClient:
    """One control connection; use as a context manager."""

    def __init__(self, settings: ControlSettings) -> None:
        self._s = settings
        self._responses: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events: queue.Queue[tuple[str, int]] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="",
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        self._client.tls_set_context(_context(settings))
        self._client.on_connect = lambda _c, _u, _f, rc, _p: self._events.put(
            ("connect", int(rc.value))
        )
        self._client.on_subscribe = lambda _c, _u, _m, rcs, _p: self._events.put(
            ("subscribe", max(int(r.value) for r in rcs))
        )
        self._client.on_message = self._on_message

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        for r in body.get("responses", []):
            if isinstance(r, dict):
                self._responses.put(r)

    def _wait(self, kind: str) -> int:
        try:
            got, code = self._events.get(timeout=self._s.timeout)
        except queue.Empty:
            raise BrokerControlError(kind, "timeout") from None
        if got != kind:
            raise BrokerControlError(kind, f"unexpected {got}")
        return code

    def __enter__(self) -> DynsecClient:
        try:
            self._client.connect(self._s.host, self._s.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerControlError("connect", type(exc).__name__) from exc
        self._client.loop_start()
        if (code := self._wait("connect")) != 0:
            raise BrokerControlError("connect", f"refused ({code})")
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if (code := self._wait("subscribe")) >= 0x80:
            raise BrokerControlError("subscribe", f"refused ({code}): not a dynsec admin")
        return self

    def __exit__(self, *_: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def execute(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one message (applied in order); raise on the first error."""
        tagged = []
        tags = []
        for c in commands:
            tag = secrets.token_hex(8)
            tags.append(tag)
            tagged.append({**c, "correlationData": tag})
        info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        info.wait_for_publish(timeout=self._s.timeout)
        results: dict[str, dict[str, Any]] = {}
        while len(results) < len(tags):
            try:
                r = self._responses.get(timeout=self._s.timeout)
            except queue.Empty:
                raise BrokerControlError(commands[0]["command"], "no response") from None
            if r.get("correlationData") in tags:
                results[str(r["correlationData"])] = r
        out = [results[t] for t in tags]
        for cmd, r in zip(commands, out, strict=True):
            if r.get("error"):
                raise BrokerControlError(str(cmd["command"]), str(r["error"]))
        return out


def disable_gateway(settings: ControlSettings, name: str) -> None:
    """Cut a gateway off now: no grants left, live session kicked. Idempotent."""
    with DynsecClient(settings) as c:
        try:
            c.execute(
                [{"command": "removeClientRole", "username": name, "rolename": gateway_role(name)}]
            )
        except BrokerControlError as exc:
            if "not found" not in exc.error.lower() and "not have" not in exc.error.lower():
                raise
        c.execute([{"command": "disableClient", "username": name}])


def enable_gateway(settings: ControlSettings, name: str) -> None:
    with DynsecClient(settings) as c:
        c.execute(
            [
                {"command": "addClientRole", "username": name, "rolename": gateway_role(name)},
                {"command": "enableClient", "username": name},
            ]
        )


def add_gateway(settings: ControlSettings, name: str) -> None:
    """Give a newly issued gateway its role and client entry, without a broker restart."""
    with DynsecClient(settings) as c:
        c.execute(
            [
                {"command": "createRole", "rolename": gateway_role(name)},
                *(
                    {"command": "addRoleACL", "rolename": gateway_role(name), **acl}
                    for acl in gateway_acls(name)
                ),
                {
                    "command": "createClient",
                    "username": name,
                    "roles": [{"rolename": gateway_role(name)}],
                },
            ]
        )


def reload_broker(pid_file: Path) -> None:
    """SIGHUP the broker: it re-reads its config and ``crlfile`` for new handshakes."""
    pid = int(pid_file.read_text(encoding="ascii").strip())
    os.kill(pid, signal.SIGHUP)
