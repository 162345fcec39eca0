"""The one place the gateway's TLS client context is built.

TLS 1.2 or later, the gateway's client certificate (leaf + issuing CA) for mutual TLS, and
trust pinned to the *service* CA only: the broker's certificate must be issued by it, so a
certificate from the device or gateway CA (same root) cannot impersonate the broker.
``VERIFY_X509_PARTIAL_CHAIN`` lets the pinned intermediate act as the trust anchor. Hostname
verification stays on. Must never disable verification, not even for tests.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from mobile_gateway.errors import ConfigError

__all__ = ["certificate_cn", "client_context"]


def client_context(*, ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        ctx.load_verify_locations(cafile=str(ca_file))
        ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as exc:
        # Name the file role, not the key material.
        raise ConfigError("tls", f"cannot load CA/certificate/key ({type(exc).__name__})") from exc
    return ctx


def certificate_cn(cert_file: Path) -> str:
    """The CN of the first certificate in ``cert_file``: the gateway id (the broker uses the
    same identity via ``use_identity_as_username``)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError("tls.cert_file", "not a readable PEM certificate") from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise ConfigError("tls.cert_file", "certificate must carry exactly one CN")
    return names[0].value
