"""Building certificates and CRLs from keys and parameters (the CA's pure half).

The hospital CA (:mod:`hospital_server.pki`) decides *what* to issue and keeps the files; this
module only turns keys, names and times into signed X.509 objects, so the same profile code is
used by the CA, by tests that need odd certificates (expired, rogue, wrong EKU), and never
drifts from what :mod:`phd_protocol.pki.verify` checks. It never reads a clock: every time is
passed in. CA certificates are signed with ECDSA P-256/SHA-256 (what OpenSSL, hence mosquitto,
verifies everywhere); leaves may hold Ed25519 or P-256 public keys.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from phd_protocol.crypto import SigningKey, VerifyingKey
from phd_protocol.pki.errors import CertificateError, CertificateReason
from phd_protocol.pki.purpose import (
    CaRole,
    Purpose,
    ca_eku,
    ca_role_for,
    leaf_eku,
    organizational_unit,
)

__all__ = [
    "RevokedEntry",
    "build_crl",
    "build_issuing_ca",
    "build_leaf",
    "build_root_ca",
    "subject_name",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokedEntry:
    """One CRL entry: which serial, since when, and why (RFC 5280 section 5.3.1 reasons)."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags

    def __post_init__(self) -> None:
        if self.revoked_at.tzinfo is None:
            raise ValueError("revoked_at must be timezone-aware")
        if self.serial <= 0:
            raise ValueError("serial must be positive")


def subject_name(organization: str, role: CaRole | None, common_name: str) -> x509.Name:
    """``O=organization[, OU=role unit], CN=common_name``: the order name constraints rely on."""
    rdns = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if role is not None:
        rdns.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit(role)))
    rdns.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(rdns)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return t.astimezone(UTC)


def _sign(builder: x509.CertificateBuilder, key: SigningKey) -> x509.Certificate:
    # Ed25519 signs without a separate hash (RFC 8410); ECDSA uses SHA-256.
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(public_key: VerifyingKey) -> x509.KeyUsage:
    # TLS with ECDHE needs only digitalSignature; an EC key may also do static ECDH, which we
    # never use, so keyAgreement stays off.
    del public_key
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _check_public_key(public_key: object) -> VerifyingKey:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP256R1
    ):
        return public_key
    raise CertificateError(CertificateReason.UNSUPPORTED_KEY, "only Ed25519 and P-256 keys")


def build_root_ca(
    key: SigningKey,
    *,
    organization: str,
    common_name: str,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
) -> x509.Certificate:
    """Self-signed root; pathLen 1 (root -> issuing CA -> leaf and no deeper)."""
    name = subject_name(organization, None, common_name)
    public = _check_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return _sign(builder, key)


def build_issuing_ca(
    public_key: VerifyingKey,
    *,
    role: CaRole,
    organization: str,
    common_name: str,
    issuer_cert: x509.Certificate,
    issuer_key: SigningKey,
    not_before: datetime,
    not_after: datetime,
    permitted_dns: Sequence[str] = (),
    permitted_ip: Sequence[IpNetwork] = (),
    serial: int | None = None,
) -> x509.Certificate:
    """An issuing CA: pathLen 0, EKU of its role, name constraints limiting it to its OU.

    Device and gateway CAs exclude every IP address and are limited to their directory name;
    the service CA is additionally limited to the given DNS names and IP networks (the hosts
    the broker and server answer on), so it cannot mint a certificate for anyone else's site.
    """
    public = _check_public_key(public_key)
    permitted: list[x509.GeneralName] = [
        x509.DirectoryName(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit(role)),
                ]
            )
        )
    ]
    excluded: list[x509.GeneralName] = []
    if role is CaRole.SERVICE:
        permitted += [x509.DNSName(d) for d in permitted_dns]
        permitted += [x509.IPAddress(n) for n in permitted_ip]
    else:
        excluded += [
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name(organization, role, common_name))
        .issuer_name(issuer_cert.subject)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(ca_eku(role))), critical=False)
        .add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded or None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                _check_public_key(issuer_cert.public_key())
            ),
            critical=False,
        )
    )
    return _sign(builder, issuer_key)


def _san(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def build_leaf(
    public_key: VerifyingKey,
    *,
    purpose: Purpose,
    common_name: str,
    issuer_cert: x509.Certificate,
    issuer_key: SigningKey,
    not_before: datetime,
    not_after: datetime,
    sans: Sequence[str] = (),
    organization: str | None = None,
    role: CaRole | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """An end-entity certificate for ``purpose``.

    ``organization`` and ``role`` default to the issuer's O and the purpose's OU; ``eku``
    defaults to :func:`leaf_eku`. Overriding them exists for tests that must build wrong
    certificates (a gateway EKU under the device CA, a name outside the constraints).
    """
    public = _check_public_key(public_key)
    if organization is None:
        orgs = issuer_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        organization = str(orgs[0].value) if orgs else "PHD"
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name(organization, role or ca_role_for(purpose), common_name))
        .issuer_name(issuer_cert.subject)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(public), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(list(leaf_eku(purpose) if eku is None else eku)),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                _check_public_key(issuer_cert.public_key())
            ),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(sans)), critical=False)
    return _sign(builder, issuer_key)


def build_crl(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: SigningKey,
    revoked: Sequence[RevokedEntry],
    this_update: datetime,
    next_update: datetime,
    crl_number: int,
) -> x509.CertificateRevocationList:
    """A v2 CRL with a CRL number and AKI (RFC 5280 section 5.2), signed by the issuing CA."""
    if next_update <= this_update:
        raise ValueError("next_update must be after this_update")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(_utc(this_update))
        .next_update(_utc(next_update))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                _check_public_key(issuer_cert.public_key())
            ),
            critical=False,
        )
    )
    for entry in sorted(revoked, key=lambda e: e.serial):
        revoked_cert = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(_utc(entry.revoked_at))
        )
        if entry.reason is not x509.ReasonFlags.unspecified:
            revoked_cert = revoked_cert.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(revoked_cert.build())
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)
