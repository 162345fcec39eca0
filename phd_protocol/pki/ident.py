"""Loading certificates and CRLs from PEM bytes, and naming them: fingerprints and key ids.

``certificate_kid`` is the COSE ``kid`` of DESIGN.md section 4: SHA-256 of the certificate's
DER encoding. It changes on renewal (new certificate, new kid), which is what lets ingest tell
which credential sealed an envelope. All inputs are bytes or objects; nothing here reads files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from phd_protocol.crypto import VerifyingKey, sha256
from phd_protocol.pki.errors import CertificateError, CertificateReason

__all__ = [
    "MAX_PEM_BYTES",
    "certificate_der",
    "certificate_kid",
    "certificate_pem",
    "certificate_public_key",
    "certificates_pem",
    "crl_pem",
    "fingerprint",
    "load_certificate",
    "load_certificates",
    "load_crls",
    "serial_hex",
]

# A chain of three P-256 certificates is about 2 KiB of PEM; a CRL bundle with thousands of
# entries stays well below this. Anything bigger is refused before parsing.
MAX_PEM_BYTES = 1024 * 1024

_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----\r?\n.+?-----END X509 CRL-----", flags=re.DOTALL)


def _bounded(data: bytes, what: str) -> bytes:
    if not isinstance(data, bytes):
        raise CertificateError(CertificateReason.MALFORMED, f"{what} must be bytes")
    if len(data) > MAX_PEM_BYTES:
        raise CertificateError(CertificateReason.MALFORMED, f"{what} larger than {MAX_PEM_BYTES}")
    return data


def load_certificate(pem: bytes) -> x509.Certificate:
    """Exactly one PEM certificate, or CertificateError(malformed)."""
    certs = load_certificates(pem)
    if len(certs) != 1:
        raise CertificateError(CertificateReason.MALFORMED, f"expected 1 certificate, {len(certs)}")
    return certs[0]


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """All PEM certificates in ``pem`` (at least one), in order."""
    try:
        certs = x509.load_pem_x509_certificates(_bounded(pem, "certificate PEM"))
    # InvalidVersion is no ValueError; the deprecation warning (a non-positive serial) is an
    # exception where warnings are errors, as in the tests.
    except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning) as exc:
        raise CertificateError(CertificateReason.MALFORMED, "not PEM certificates") from exc
    if any(c.serial_number <= 0 for c in certs):  # RFC 5280 4.1.2.2; found by the fuzz test
        raise CertificateError(CertificateReason.MALFORMED, "serial number is not positive")
    return certs


def load_crls(pem: bytes) -> list[x509.CertificateRevocationList]:
    """All PEM CRLs in ``pem`` (a bundle is the concatenation); an empty bundle is refused."""
    blocks = _CRL_BLOCK.findall(_bounded(pem, "CRL PEM"))
    if not blocks:
        raise CertificateError(CertificateReason.CRL_INVALID, "no PEM CRL found")
    try:
        return [x509.load_pem_x509_crl(block) for block in blocks]
    except ValueError as exc:
        raise CertificateError(CertificateReason.CRL_INVALID, "CRL does not parse") from exc


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


def certificates_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(certificate_pem(c) for c in certs)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(Encoding.PEM)


def certificate_kid(cert: x509.Certificate) -> bytes:
    """The COSE kid of a device credential: SHA-256 over the certificate DER (32 bytes)."""
    return sha256(certificate_der(cert))


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated upper-case hex, as ``openssl x509`` prints it."""
    return certificate_kid(cert).hex(":").upper()


def serial_hex(cert: x509.Certificate) -> str:
    """Serial number as lower-case hex without leading zeros (the form ``phd pki`` shows)."""
    return format(cert.serial_number, "x")


def certificate_public_key(cert: x509.Certificate) -> VerifyingKey:
    """The subject key if it is Ed25519 or P-256 (all this PKI issues); else unsupported_key."""
    key = cert.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise CertificateError(CertificateReason.UNSUPPORTED_KEY, "only Ed25519 and P-256 keys")
