"""X.509 for the PHD telemetry PKI, sans I/O: purposes, building, verification, CSRs, kids.

Modules: :mod:`.errors` (CertificateError and its reasons), :mod:`.purpose` (role OIDs and
the naming scheme), :mod:`.ident` (PEM loading, fingerprints, COSE kid), :mod:`.build`
(certificates and CRLs from keys), :mod:`.verify` (chain validation), :mod:`.csr` (device CSR
with proof of possession). This package may import ``cryptography.x509`` and key types (see
docs/ARCHITECTURE.md "Deviations"); it never reads files, clocks or the network.
"""

from __future__ import annotations

from phd_protocol.pki.build import (
    RevokedEntry,
    build_crl,
    build_issuing_ca,
    build_leaf,
    build_root_ca,
    subject_name,
)
from phd_protocol.pki.csr import build_device_csr, csr_public_key
from phd_protocol.pki.errors import CertificateError, CertificateReason
from phd_protocol.pki.ident import (
    certificate_der,
    certificate_kid,
    certificate_pem,
    certificate_public_key,
    certificates_pem,
    crl_pem,
    fingerprint,
    load_certificate,
    load_certificates,
    load_crls,
    serial_hex,
)
from phd_protocol.pki.purpose import CaRole, Purpose
from phd_protocol.pki.verify import VerifiedChain, check_crl, verify_chain

__all__ = [
    "CaRole",
    "CertificateError",
    "CertificateReason",
    "Purpose",
    "RevokedEntry",
    "VerifiedChain",
    "build_crl",
    "build_device_csr",
    "build_issuing_ca",
    "build_leaf",
    "build_root_ca",
    "certificate_der",
    "certificate_kid",
    "certificate_pem",
    "certificate_public_key",
    "certificates_pem",
    "check_crl",
    "crl_pem",
    "csr_public_key",
    "fingerprint",
    "load_certificate",
    "load_certificates",
    "load_crls",
    "serial_hex",
    "subject_name",
    "verify_chain",
]
