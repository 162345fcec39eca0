"""What a certificate may be used for: purposes, role OIDs and the naming scheme of the PKI.

The hierarchy (DESIGN.md section 3) is one root and three issuing CAs. Each issuing CA and each
leaf carries an extended key usage (EKU) made of the standard TLS usages plus a *role* OID of
our own, so that one check tells a device credential from a gateway client certificate from an
ingest worker client certificate, even though the last two are both TLS clients:

=====================  ===================  ==============================  ==================
purpose                issuing CA           leaf EKU                        forbidden in leaf
=====================  ===================  ==============================  ==================
DEVICE_CREDENTIAL      device CA            role-device                     clientAuth,
                                                                            serverAuth
GATEWAY_CLIENT         gateway CA           clientAuth + role-gateway       role-device
INGEST_CLIENT          service CA           clientAuth + role-ingest        role-device
SERVICE_TLS            service CA           serverAuth + role-service       role-device
=====================  ===================  ==============================  ==================

Role OIDs live under ``2.25.<UUID>`` (ITU-T X.667 / RFC 4122 section 1: an OID arc anyone can
allocate without registration by taking a fresh UUID). The arc below is ours; never reuse it
for another meaning.

Subjects are ``O=<organisation>, OU=<role unit>, CN=<name>``; each issuing CA's name
constraints permit only its own ``O, OU`` prefix, so a CA cannot mint names for another role.
A device certificate's CN is the device id (a UUID), never anything about the patient.
"""

from __future__ import annotations

import enum

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "OID_ROLE_DEVICE",
    "OID_ROLE_GATEWAY",
    "OID_ROLE_INGEST",
    "OID_ROLE_SERVICE",
    "CaRole",
    "Purpose",
    "ca_eku",
    "ca_role_for",
    "forbidden_leaf_eku",
    "leaf_eku",
    "organizational_unit",
]

_ARC = "2.25.204757923774760169271152732008966190235"
OID_ROLE_DEVICE = x509.ObjectIdentifier(f"{_ARC}.1")
OID_ROLE_GATEWAY = x509.ObjectIdentifier(f"{_ARC}.2")
OID_ROLE_INGEST = x509.ObjectIdentifier(f"{_ARC}.3")
OID_ROLE_SERVICE = x509.ObjectIdentifier(f"{_ARC}.4")

_CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
_SERVER = ExtendedKeyUsageOID.SERVER_AUTH


class CaRole(enum.StrEnum):
    """The three issuing CAs; values match :class:`hospital_server.pki.layout.PkiLayout`."""

    DEVICE = "device"
    GATEWAY = "gateway"
    SERVICE = "service"


class Purpose(enum.StrEnum):
    """What a verified leaf certificate is about to be trusted for."""

    DEVICE_CREDENTIAL = "device_credential"  # signs envelopes (COSE kid = SHA-256 of its DER)
    GATEWAY_CLIENT = "gateway_client"  # mTLS client at the broker; CN = MQTT identity
    INGEST_CLIENT = "ingest_client"  # hospital ingest worker, mTLS client at the broker
    SERVICE_TLS = "service_tls"  # broker and hospital server TLS server certificates


_LEAF_EKU: dict[Purpose, tuple[x509.ObjectIdentifier, ...]] = {
    Purpose.DEVICE_CREDENTIAL: (OID_ROLE_DEVICE,),
    Purpose.GATEWAY_CLIENT: (_CLIENT, OID_ROLE_GATEWAY),
    Purpose.INGEST_CLIENT: (_CLIENT, OID_ROLE_INGEST),
    Purpose.SERVICE_TLS: (_SERVER, OID_ROLE_SERVICE),
}

# What each purpose forbids in the leaf, on top of requiring its own EKU: a device credential
# must be useless for TLS, and no TLS certificate may double as a device credential.
_FORBIDDEN_LEAF_EKU: dict[Purpose, frozenset[x509.ObjectIdentifier]] = {
    Purpose.DEVICE_CREDENTIAL: frozenset({_CLIENT, _SERVER}),
    Purpose.GATEWAY_CLIENT: frozenset({OID_ROLE_DEVICE, OID_ROLE_INGEST, OID_ROLE_SERVICE}),
    Purpose.INGEST_CLIENT: frozenset({OID_ROLE_DEVICE, OID_ROLE_GATEWAY}),
    Purpose.SERVICE_TLS: frozenset({OID_ROLE_DEVICE, OID_ROLE_GATEWAY}),
}

_CA_EKU: dict[CaRole, tuple[x509.ObjectIdentifier, ...]] = {
    CaRole.DEVICE: (OID_ROLE_DEVICE,),
    CaRole.GATEWAY: (_CLIENT, OID_ROLE_GATEWAY),
    CaRole.SERVICE: (_SERVER, _CLIENT, OID_ROLE_SERVICE, OID_ROLE_INGEST),
}

_CA_FOR: dict[Purpose, CaRole] = {
    Purpose.DEVICE_CREDENTIAL: CaRole.DEVICE,
    Purpose.GATEWAY_CLIENT: CaRole.GATEWAY,
    Purpose.INGEST_CLIENT: CaRole.SERVICE,
    Purpose.SERVICE_TLS: CaRole.SERVICE,
}

_OU: dict[CaRole, str] = {
    CaRole.DEVICE: "PHD device credentials",
    CaRole.GATEWAY: "PHD gateways",
    CaRole.SERVICE: "PHD hospital services",
}


def leaf_eku(purpose: Purpose) -> tuple[x509.ObjectIdentifier, ...]:
    """The EKU OIDs a leaf for ``purpose`` carries (and must carry to pass verification)."""
    return _LEAF_EKU[purpose]


def forbidden_leaf_eku(purpose: Purpose) -> frozenset[x509.ObjectIdentifier]:
    """EKU OIDs whose presence in a leaf disqualifies it for ``purpose``."""
    return _FORBIDDEN_LEAF_EKU[purpose]


def ca_eku(role: CaRole) -> tuple[x509.ObjectIdentifier, ...]:
    """The EKU OIDs on an issuing CA: the union of what its leaves may use."""
    return _CA_EKU[role]


def ca_role_for(purpose: Purpose) -> CaRole:
    return _CA_FOR[purpose]


def organizational_unit(role: CaRole) -> str:
    """The OU shared by an issuing CA's permitted subtree and every leaf it issues."""
    return _OU[role]
