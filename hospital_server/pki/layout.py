"""Where each piece of PKI material lives inside a PKI directory (default ``certs/dev``).

This is a contract shared by every part: the broker config writer, the gateway, the server's
ingest workers and the demo all locate files through :class:`PkiLayout`, never by building
paths themselves. Names are stable; certs/README.md documents each file.

Certificates are PEM (``.crt``); a ``-chain.crt`` file holds the leaf followed by its issuing
CA (not the root). Private keys are PKCS#8 PEM (``.key``), mode 0600.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PkiLayout:
    root: Path

    # -- certificate authorities
    @property
    def root_ca_cert(self) -> Path:
        return self.root / "root-ca.crt"

    @property
    def root_ca_key(self) -> Path:
        return self.root / "root-ca.key"

    def ca_cert(self, name: str) -> Path:
        """Issuing CA certificate; ``name`` is ``device``, ``gateway`` or ``service``."""
        return self.root / f"{_ca(name)}-ca.crt"

    def ca_key(self, name: str) -> Path:
        return self.root / f"{_ca(name)}-ca.key"

    def crl(self, name: str) -> Path:
        """Current CRL of an issuing CA (PEM)."""
        return self.root / "crl" / f"{_ca(name)}-ca.crl"

    @property
    def crl_bundle(self) -> Path:
        """All current CRLs concatenated (what mosquitto's ``crlfile`` reads)."""
        return self.root / "crl" / "bundle.crl"

    @property
    def root_crl(self) -> Path:
        """CRL of the root CA (revokes issuing CAs); long next-update, signed offline."""
        return self.root / "crl" / "root-ca.crl"

    @property
    def client_ca_bundle(self) -> Path:
        """Root + gateway CA + service CA: what the broker trusts for *client* certificates.

        The device CA is left out on purpose: device credentials never authenticate TLS.
        """
        return self.root / "client-ca-bundle.crt"

    @property
    def ca_bundle(self) -> Path:
        """Root + the three issuing CAs, for peers that must accept any of them."""
        return self.root / "ca-bundle.crt"

    # -- service identities (service CA)
    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def broker_chain(self) -> Path:
        return self.root / "broker-chain.crt"

    @property
    def server_chain(self) -> Path:
        return self.root / "server-chain.crt"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    def ingest_worker_cert(self, name: str = "ingest-1") -> Path:
        return self.root / "workers" / f"{name}.crt"

    def ingest_worker_key(self, name: str = "ingest-1") -> Path:
        return self.root / "workers" / f"{name}.key"

    def ingest_worker_chain(self, name: str = "ingest-1") -> Path:
        return self.root / "workers" / f"{name}-chain.crt"

    # -- certificates for odd purposes (tests, one-off clients): issue_client_certificate
    def extra_cert(self, name: str) -> Path:
        return self.root / "extra" / f"{name}.crt"

    def extra_chain(self, name: str) -> Path:
        return self.root / "extra" / f"{name}-chain.crt"

    def extra_key(self, name: str) -> Path:
        return self.root / "extra" / f"{name}.key"

    # -- device credentials issued at enrollment (certificate only; the key stays on the agent)
    def device_cert(self, device_id: str) -> Path:
        return self.root / "devices" / f"{device_id}.crt"

    # -- gateways (gateway CA); NAME becomes the certificate CN and the MQTT identity
    def gateway_cert(self, name: str) -> Path:
        return self.root / "gateways" / f"{name}.crt"

    def gateway_chain(self, name: str) -> Path:
        return self.root / "gateways" / f"{name}-chain.crt"

    def gateway_key(self, name: str) -> Path:
        return self.root / "gateways" / f"{name}.key"

    # -- hospital keys that are not certificates
    @property
    def ingest_hpke_key(self) -> Path:
        """Current HPKE X25519 private key (PKCS#8 PEM) of the hospital ingest."""
        return self.root / "ingest" / "ingest-hpke.key"

    @property
    def ingest_keyring(self) -> Path:
        """JSON list of ingest keys: ``[{"kid": hex, "public": hex, "private_file": name,
        "status": "active"|"retiring"|"retired", "created": iso8601}]``."""
        return self.root / "ingest" / "keyring.json"

    @property
    def audit_signing_key(self) -> Path:
        return self.root / "audit-signing.key"

    @property
    def audit_verify_key(self) -> Path:
        """Public half of the audit signing key (PEM), for ``phd audit verify``."""
        return self.root / "audit-signing.pub"

    @property
    def revocations(self) -> Path:
        """JSON index of revoked serials with reason and time (source of the CRLs)."""
        return self.root / "revocations.json"

    @property
    def inventory(self) -> Path:
        """JSON index of every issued certificate (serial, subject, kind, file, validity)."""
        return self.root / "inventory.json"


_CA_NAMES = frozenset({"device", "gateway", "service"})


def _ca(name: str) -> str:
    if name not in _CA_NAMES:
        raise ValueError(f"unknown issuing CA {name!r}; expected one of {sorted(_CA_NAMES)}")
    return name
