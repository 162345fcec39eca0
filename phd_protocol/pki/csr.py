"""Device certificate signing requests with proof of possession.

The agent generates its credential key (Ed25519 or P-256) and never lets it leave; it sends a
PKCS#10 CSR whose self-signature proves it holds the private key (RFC 2986 section 3). The CA
takes only the public key from the CSR: the subject it certifies is the device id it assigns,
so the CSR subject is a fixed placeholder and carries nothing about the device or patient.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from phd_protocol.crypto import SigningKey, VerifyingKey
from phd_protocol.pki.errors import CertificateError, CertificateReason

__all__ = ["CSR_SUBJECT_CN", "MAX_CSR_BYTES", "build_device_csr", "csr_public_key"]

CSR_SUBJECT_CN = "phd-device-credential"
MAX_CSR_BYTES = 4096  # an Ed25519 or P-256 CSR is under 600 bytes of PEM


def build_device_csr(key: SigningKey) -> bytes:
    """PEM CSR for ``key``, signed by it (the proof of possession)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm: hashes.SHA256 | None = None
    elif isinstance(key.curve, ec.SECP256R1):
        algorithm = hashes.SHA256()
    else:
        raise CertificateError(CertificateReason.UNSUPPORTED_KEY, "only Ed25519 and P-256 keys")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CSR_SUBJECT_CN)]))
        .sign(key, algorithm)
    )
    return csr.public_bytes(Encoding.PEM)


def csr_public_key(csr_pem: bytes) -> VerifyingKey:
    """Parse a CSR, check its proof of possession and key type, return the public key.

    Raises CertificateError(bad_csr) for anything malformed or whose signature fails, and
    CertificateError(unsupported_key) for keys other than Ed25519 and P-256.
    """
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CertificateError(CertificateReason.BAD_CSR, f"CSR larger than {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        public = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise CertificateError(CertificateReason.BAD_CSR, "CSR does not parse") from exc
    if not valid:
        raise CertificateError(CertificateReason.BAD_CSR, "CSR signature (proof of possession)")
    if isinstance(public, ed25519.Ed25519PublicKey):
        return public
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return public
    raise CertificateError(CertificateReason.UNSUPPORTED_KEY, "only Ed25519 and P-256 keys")
