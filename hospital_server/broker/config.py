"""Write a mosquitto 2.0 configuration and its dynamic-security state from a PKI directory.

What it is for: ``phd broker config``. Output (in ``out``):

- ``mosquitto.conf``: one TLS-only listener (TLS 1.2+), ``require_certificate``,
  ``use_identity_as_username`` (identity = certificate CN), ``use_username_as_clientid``
  (a client id can never name another identity, so no session takeover), no anonymous
  clients, ``crlfile`` (re-read on SIGHUP for new handshakes), the dynamic-security plugin.
- ``dynamic-security.json``: every ACL, default deny. One role per gateway with literal topics
  (``phd/v1/gw/NAME/up`` publish; ``.../ack`` and ``.../ctl`` subscribe), an ``ingest`` role
  (shared subscription ``$share/ingest/phd/v1/gw/+/up``, publish ``phd/v1/gw/+/ack`` and
  ``/ctl``) and a ``dynsec-admin`` role for the hospital server's control client.

Why no ``acl_file`` with ``pattern ... %u`` lines: verified on mosquitto 2.0.11, (1) the
dynamic-security plugin does not expand ``%u`` in its ACLs, and (2) ``acl_file`` grants are
OR-ed with the plugin's, so a pattern line would keep granting a gateway the plugin has
cut off. With every grant in the plugin, removing a gateway's role cuts it off at run time.
The plugin rewrites its JSON file at run time: write it once, then change it only through
:mod:`hospital_server.broker.control`. Must never write private keys or copy them.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from hospital_server.pki.layout import PkiLayout

__all__ = [
    "DYNSEC_PLUGIN",
    "BrokerFiles",
    "BrokerIdentities",
    "gateway_acls",
    "gateway_role",
    "identities_from_pki",
    "render_dynsec",
    "render_mosquitto_conf",
    "write_broker_config",
]

DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_ROLE = "dynsec-admin"
INGEST_ROLE = "ingest"


def gateway_role(name: str) -> str:
    return f"gateway:{name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerIdentities:
    """Certificate CNs the broker knows: they are the MQTT usernames."""

    admin: str
    gateways: tuple[str, ...]
    ingest_workers: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerFiles:
    conf: Path
    dynsec: Path
    pid_file: Path
    log_file: Path


def _cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    (attr,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attr.value)


def identities_from_pki(layout: PkiLayout) -> BrokerIdentities:
    """Gateways from ``gateways/*.crt`` and workers from ``workers/*.crt``; admin = server."""
    gw_dir = layout.gateway_cert("x").parent
    gateways = sorted(_cn(p) for p in gw_dir.glob("*.crt") if not p.name.endswith("-chain.crt"))
    wk_dir = layout.ingest_worker_cert().parent
    workers = sorted(_cn(p) for p in wk_dir.glob("*.crt") if not p.name.endswith("-chain.crt"))
    return BrokerIdentities(
        admin=_cn(layout.server_cert), gateways=tuple(gateways), ingest_workers=tuple(workers)
    )


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def gateway_acls(name: str) -> list[dict[str, Any]]:
    """The whole authority of one gateway: its own up (publish), its own ack and ctl (read)."""
    base = f"phd/v1/gw/{name}"
    return [
        _acl("publishClientSend", f"{base}/up"),
        _acl("subscribeLiteral", f"{base}/ack"),
        _acl("subscribeLiteral", f"{base}/ctl"),
    ]


def render_dynsec(ids: BrokerIdentities) -> dict[str, Any]:
    roles: list[dict[str, Any]] = [
        {
            "rolename": ADMIN_ROLE,
            "acls": [
                _acl("publishClientSend", "$CONTROL/dynamic-security/#"),
                # Needed explicitly: the plugin's responses are not covered by the
                # default publishClientReceive grant (verified on 2.0.11).
                _acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
                _acl("subscribePattern", "$CONTROL/dynamic-security/#"),
            ],
        },
        {
            "rolename": INGEST_ROLE,
            "acls": [
                _acl("subscribePattern", "$share/ingest/phd/v1/gw/+/up"),
                _acl("publishClientSend", "phd/v1/gw/+/ack"),
                _acl("publishClientSend", "phd/v1/gw/+/ctl"),
            ],
        },
    ]
    clients: list[dict[str, Any]] = [
        {"username": ids.admin, "roles": [{"rolename": ADMIN_ROLE}]},
    ]
    for w in ids.ingest_workers:
        clients.append({"username": w, "roles": [{"rolename": INGEST_ROLE}]})
    for g in ids.gateways:
        roles.append({"rolename": gateway_role(g), "acls": gateway_acls(g)})
        clients.append({"username": g, "roles": [{"rolename": gateway_role(g)}]})
    return {
        # Default deny: a certificate whose CN is not listed here (a device credential, a
        # gateway not yet added) connects but can neither publish nor subscribe.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,  # delivery is governed by what one may subscribe to
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def render_mosquitto_conf(
    layout: PkiLayout,
    files: BrokerFiles,
    *,
    port: int,
    bind: str = "127.0.0.1",
    user: str | None = None,
    plugin: Path = DYNSEC_PLUGIN,
) -> str:
    lines = [
        "# Generated by `phd broker config` from the PKI; see docs/broker.md. Do not edit:",
        "# regenerate. ACLs live in the dynamic-security file (change them at run time",
        "# through $CONTROL/dynamic-security/v1, never by editing it while running).",
        "per_listener_settings false",
        "allow_anonymous false",
        # Sessions are not persisted: delivery guarantees are end to end (outbox + acks).
        "persistence false",
        f"pid_file {files.pid_file}",
        f"log_dest file {files.log_file}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        # Nagle's algorithm off on client sockets: MQTT's exchanges are small request/answer
        # packets (PUBLISH -> PUBACK), and Nagle holds a small packet until the peer's
        # delayed ACK (up to 40 ms on Linux); measured in docs/gateway.md "Uplink window".
        "set_tcp_nodelay true",
    ]
    if user:
        # Mosquitto started as root drops to this user (default "mosquitto"), which must be
        # able to read the broker key.
        lines.append(f"user {user}")
    lines += [
        "",
        f"listener {port} {bind}",
        "protocol mqtt",
        f"cafile {layout.client_ca_bundle}",
        f"certfile {layout.broker_cert}",
        f"keyfile {layout.broker_key}",
        # No tls_version line: mosquitto 2.0's default is TLS 1.3 and 1.2 only; setting
        # "tlsv1.2" would pin exactly 1.2 and lose 1.3.
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        f"crlfile {layout.crl_bundle}",
        "",
        f"plugin {plugin}",
        f"plugin_opt_config_file {files.dynsec}",
        "",
    ]
    return "\n".join(lines)


def write_broker_config(
    layout: PkiLayout,
    out: Path,
    *,
    port: int,
    bind: str = "127.0.0.1",
    user: str | None = None,
    overwrite_dynsec: bool = False,
) -> BrokerFiles:
    """Write mosquitto.conf (always) and dynamic-security.json (when absent or asked to).

    ``user`` defaults to the current user when running as root, so a dev broker can read the
    dev PKI's 0600 broker key.
    """
    if not layout.crl_bundle.exists():
        raise FileNotFoundError("no CRL bundle in the PKI: run `phd pki crl` first")
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    files = BrokerFiles(
        conf=out / "mosquitto.conf",
        dynsec=out / "dynamic-security.json",
        pid_file=out / "mosquitto.pid",
        log_file=out / "mosquitto.log",
    )
    if user is None and os.geteuid() == 0:
        user = getpass.getuser()
    files.conf.write_text(
        render_mosquitto_conf(
            PkiLayout(layout.root.resolve()), files, port=port, bind=bind, user=user
        ),
        encoding="utf-8",
    )
    if overwrite_dynsec or not files.dynsec.exists():
        body = json.dumps(render_dynsec(identities_from_pki(layout)), indent=2)
        files.dynsec.write_text(body + "\n", encoding="utf-8")
        files.dynsec.chmod(0o600)
    return files
