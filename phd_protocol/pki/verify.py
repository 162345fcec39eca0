"""Certificate path validation for our own hierarchy, with a distinct reason for every refusal.

Why our own checker rather than a general one: the hierarchy is fixed and short (leaf ->
issuing CA -> root), the purposes are ours (role OIDs, see :mod:`phd_protocol.pki.purpose`),
and callers need *which* rule failed (expired vs revoked vs wrong EKU) to answer with the public
reason codes. OpenSSL verifies the same chains independently at the broker, and the tests run
``openssl verify`` on what we issue to keep the two in agreement.

Order of checks, each raising :class:`CertificateError` with the reason named:

1. path building: each certificate's issuer must be found by name and key identifier among
   the intermediates and anchors (``wrong_issuer``) and its signature must verify
   (``bad_signature``); the path ends at a configured anchor, at most 3 certificates;
2. canonical signature encoding and no unrecognised critical extension (``malformed``);
   validity at ``at`` for every certificate including the anchor (``not_yet_valid``, ``expired``);
3. CA rules: basicConstraints CA and keyCertSign on issuers, pathLenConstraint
   (``path_length``), leaf is not a CA, EKU of leaf and of every CA fits the purpose
   (``wrong_purpose``);
4. name constraints of every CA over the certificates below it (``name_constraint``);
5. revocation when CRLs are given: a CRL signed by each issuer, current at ``at``
   (``crl_missing``, ``crl_invalid``, ``crl_expired``), and the serial not listed (``revoked``).

Revocation semantics: a certificate counts as revoked at ``at`` when its revocation date is at
or before ``at``, or always when the reason is ``keyCompromise`` (a stolen key can forge any
claimed time, so nothing it signed is trusted any more). Ingest passes the envelope's sealing
time as ``at`` so a reading sealed before an ordinary revocation still verifies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtensionOID

from phd_protocol.pki.errors import CertificateError, CertificateReason
from phd_protocol.pki.ident import certificate_der, certificate_kid
from phd_protocol.pki.purpose import Purpose, forbidden_leaf_eku, leaf_eku

__all__ = ["MAX_CHAIN_LENGTH", "VerifiedChain", "check_crl", "verify_chain"]

MAX_CHAIN_LENGTH = 3  # leaf, issuing CA, root: the only shape this PKI issues

_R = CertificateReason
_T = TypeVar("_T", bound=x509.ExtensionType)


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A chain that passed every check for ``purpose`` at ``at``; ``path[-1]`` is the anchor."""

    path: tuple[x509.Certificate, ...]
    purpose: Purpose
    at: datetime

    @property
    def leaf(self) -> x509.Certificate:
        return self.path[0]

    @property
    def kid(self) -> bytes:
        """COSE kid of the leaf (SHA-256 of its DER)."""
        return certificate_kid(self.path[0])


def _ext(cert: x509.Certificate, kind: type[_T]) -> _T | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _ski(cert: x509.Certificate) -> bytes | None:
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    return None if ski is None else ski.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    return None if aki is None else aki.key_identifier


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _candidates(cert: x509.Certificate, pool: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    aki = _aki(cert)
    out = []
    for c in pool:
        if c.subject != cert.issuer:
            continue
        ski = _ski(c)
        if aki is not None and ski is not None and aki != ski:
            continue  # same name, different key: a different (possibly rogue) CA
        out.append(c)
    return out


def _build_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    anchor_ders = {certificate_der(a) for a in anchors}
    path = [leaf]
    current = leaf
    while certificate_der(current) not in anchor_ders:
        if len(path) >= MAX_CHAIN_LENGTH:
            raise CertificateError(_R.WRONG_ISSUER, "no anchor within the maximum chain length")
        found_name = False
        nxt: x509.Certificate | None = None
        for pool in (anchors, intermediates):
            for cand in _candidates(current, pool):
                found_name = True
                if _signed_by(current, cand):
                    nxt = cand
                    break
            if nxt is not None:
                break
        if nxt is None:
            if found_name:
                raise CertificateError(_R.BAD_SIGNATURE, f"certificate {len(path) - 1}")
            raise CertificateError(_R.WRONG_ISSUER, f"certificate {len(path) - 1}")
        if any(certificate_der(nxt) == certificate_der(p) for p in path):
            raise CertificateError(_R.WRONG_ISSUER, "issuer loop")
        path.append(nxt)
        current = nxt
    return path


# Extensions this checker understands; RFC 5280 section 4.2 requires refusing a certificate
# with any other extension marked critical.
_KNOWN_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
)


def _der_header(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``at``."""
    tag, first = der[at], der[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3 or at + count > len(der):
            raise CertificateError(_R.MALFORMED, "certificate length encoding")
        length = int.from_bytes(der[at : at + count], "big")
        at += count
    return tag, at, at + length


def _check_encoding(path: Sequence[x509.Certificate]) -> None:
    """The signature BIT STRING has no unused bits.

    The signature covers only tbsCertificate, and cryptography accepts a signature value
    declaring unused bits when the ignored bits are zero; such a variant still verifies but
    hashes to a different DER, so a different kid (SHA-256 of the DER) for the same
    certificate. Hypothesis found it by flipping the unused-bits byte. Refusing it keeps one
    certificate, one kid.
    """
    for i, cert in enumerate(path):
        der = certificate_der(cert)
        try:
            _, body, _ = _der_header(der, 0)
            at = body
            for _ in range(2):  # tbsCertificate, signatureAlgorithm
                _, _, at = _der_header(der, at)
            tag, content, end = _der_header(der, at)
            unused = der[content] if content < end else -1
        except IndexError as exc:
            raise CertificateError(_R.MALFORMED, f"certificate {i} is truncated") from exc
        if tag != 0x03 or unused != 0:
            raise CertificateError(_R.MALFORMED, f"certificate {i} signature encoding")


def _check_critical(path: Sequence[x509.Certificate]) -> None:
    for i, cert in enumerate(path):
        for ext in cert.extensions:
            if ext.critical and ext.oid not in _KNOWN_CRITICAL:
                raise CertificateError(
                    _R.MALFORMED, f"certificate {i} has an unrecognised critical extension"
                )


def _check_times(path: Sequence[x509.Certificate], at: datetime) -> None:
    for i, cert in enumerate(path):
        if at < cert.not_valid_before_utc:
            raise CertificateError(_R.NOT_YET_VALID, f"certificate {i}")
        if at > cert.not_valid_after_utc:
            raise CertificateError(_R.EXPIRED, f"certificate {i}")


def _check_ca_rules(path: Sequence[x509.Certificate], purpose: Purpose) -> None:
    leaf = path[0]
    bc = _ext(leaf, x509.BasicConstraints)
    if bc is not None and bc.ca:
        raise CertificateError(_R.WRONG_PURPOSE, "leaf is a CA certificate")
    ku = _ext(leaf, x509.KeyUsage)
    if ku is None or not ku.digital_signature:
        raise CertificateError(_R.WRONG_PURPOSE, "leaf lacks digitalSignature key usage")
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is None:
        raise CertificateError(_R.WRONG_PURPOSE, "leaf has no extended key usage")
    leaf_usages = set(eku)
    if not set(leaf_eku(purpose)) <= leaf_usages:
        raise CertificateError(_R.WRONG_PURPOSE, f"leaf EKU does not allow {purpose.value}")
    if leaf_usages & forbidden_leaf_eku(purpose):
        raise CertificateError(_R.WRONG_PURPOSE, f"leaf EKU conflicts with {purpose.value}")
    # Issuers: position i has i-1 CA certificates below it (excluding the leaf).
    for i, ca in enumerate(path[1:], start=1):
        ca_bc = _ext(ca, x509.BasicConstraints)
        if ca_bc is None or not ca_bc.ca:
            raise CertificateError(_R.WRONG_PURPOSE, f"certificate {i} is not a CA")
        ca_ku = _ext(ca, x509.KeyUsage)
        if ca_ku is not None and not ca_ku.key_cert_sign:
            raise CertificateError(_R.WRONG_PURPOSE, f"certificate {i} may not sign certificates")
        if ca_bc.path_length is not None and i - 1 > ca_bc.path_length:
            raise CertificateError(_R.PATH_LENGTH, f"certificate {i}")
        ca_eku = _ext(ca, x509.ExtendedKeyUsage)
        # An EKU on a CA limits what it may vouch for (the de facto rule OpenSSL and the
        # CA/Browser Forum apply); a CA without one is unconstrained (the root).
        if ca_eku is not None and not set(leaf_eku(purpose)) <= set(ca_eku):
            raise CertificateError(
                _R.WRONG_PURPOSE, f"certificate {i} may not issue for {purpose.value}"
            )


def _dns_within(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower().rstrip(".")
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _dn_within(name: x509.Name, base: x509.Name) -> bool:
    rdns, prefix = list(name.rdns), list(base.rdns)
    return len(rdns) >= len(prefix) and rdns[: len(prefix)] == prefix


def _within(name: x509.GeneralName, base: x509.GeneralName) -> bool | None:
    """True/False when ``base`` is of the same name type as ``name``; None otherwise."""
    if isinstance(name, x509.DNSName) and isinstance(base, x509.DNSName):
        return _dns_within(name.value, base.value)
    if isinstance(name, x509.IPAddress) and isinstance(base, x509.IPAddress):
        addr, net = name.value, base.value
        if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address) and isinstance(
            net, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            return addr.version == net.version and addr in net
        return False
    if isinstance(name, x509.DirectoryName) and isinstance(base, x509.DirectoryName):
        return _dn_within(name.value, base.value)
    if type(name) is type(base):
        return False  # a constrained type we do not issue (email, URI): refuse, never guess
    return None


def _names_of(cert: x509.Certificate) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    if len(cert.subject.rdns) > 0:
        names.append(x509.DirectoryName(cert.subject))
    san = _ext(cert, x509.SubjectAlternativeName)
    if san is not None:
        names.extend(san)
    return names


def _check_name_constraints(path: Sequence[x509.Certificate]) -> None:
    for i, ca in enumerate(path[1:], start=1):
        nc = _ext(ca, x509.NameConstraints)
        if nc is None:
            continue
        for j, below in enumerate(path[:i]):
            for name in _names_of(below):
                for base in nc.excluded_subtrees or ():
                    if _within(name, base):
                        raise CertificateError(
                            _R.NAME_CONSTRAINT, f"certificate {j} name excluded by {i}"
                        )
                permitted = [
                    r
                    for base in nc.permitted_subtrees or ()
                    if (r := _within(name, base)) is not None
                ]
                if permitted and not any(permitted):
                    raise CertificateError(
                        _R.NAME_CONSTRAINT, f"certificate {j} name not permitted by {i}"
                    )


def check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, at: datetime) -> None:
    """A CRL is usable at ``at``: signed by ``issuer``, issued by then, not past next update."""
    if crl.issuer != issuer.subject:
        raise CertificateError(_R.CRL_INVALID, "CRL issuer does not match")
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise CertificateError(_R.CRL_INVALID, "issuer key type")
    try:
        valid = crl.is_signature_valid(key)
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(_R.CRL_INVALID, "CRL signature algorithm") from exc
    if not valid:
        raise CertificateError(_R.CRL_INVALID, "CRL signature does not verify")
    if crl.last_update_utc > at:
        raise CertificateError(_R.CRL_INVALID, "CRL issued after the time of the check")
    nxt = crl.next_update_utc
    if nxt is None:
        raise CertificateError(_R.CRL_INVALID, "CRL has no next update")
    if at > nxt:
        raise CertificateError(_R.CRL_EXPIRED, "CRL past its next update")


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return -1


def _check_revocation(
    path: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    at: datetime,
) -> None:
    for i, cert in enumerate(path[:-1]):
        issuer = path[i + 1]
        mine = [c for c in crls if c.issuer == issuer.subject]
        if not mine:
            raise CertificateError(_R.CRL_MISSING, f"no CRL for the issuer of certificate {i}")
        usable: list[x509.CertificateRevocationList] = []
        first_error: CertificateError | None = None
        for crl in mine:
            try:
                check_crl(crl, issuer, at)
            except CertificateError as exc:
                first_error = first_error or exc
                continue
            usable.append(crl)
        if not usable:
            assert first_error is not None  # mine was non-empty
            raise first_error
        newest = max(usable, key=_crl_number)
        entry = newest.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is None:
            continue
        reason = _ext_reason(entry)
        if reason is x509.ReasonFlags.remove_from_crl:
            continue
        if reason is x509.ReasonFlags.key_compromise or entry.revocation_date_utc <= at:
            raise CertificateError(_R.REVOKED, f"certificate {i}")


def _ext_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified


def verify_chain(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    purpose: Purpose,
    at: datetime,
    crls: Sequence[x509.CertificateRevocationList] | None = None,
) -> VerifiedChain:
    """Validate ``leaf`` for ``purpose`` at ``at`` (timezone-aware) or raise CertificateError.

    ``crls=None`` skips revocation checking (for callers that check revocation elsewhere, such
    as a broker that loads the CRL itself); a sequence, even empty, demands a current CRL from
    every issuer on the path.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    at = at.astimezone(UTC)
    if not anchors:
        raise CertificateError(_R.WRONG_ISSUER, "no trust anchors")
    try:
        path = _build_path(leaf, intermediates, anchors)
        _check_encoding(path)
        _check_critical(path)
        _check_times(path, at)
        _check_ca_rules(path, purpose)
        _check_name_constraints(path)
        if crls is not None:
            _check_revocation(path, crls, at)
    except (ValueError, TypeError, x509.DuplicateExtension, Warning) as exc:
        # cryptography parses names and extensions lazily: damage surfaces here, in several
        # forms the fuzz tests found by flipping single bytes: ValueError; DuplicateExtension
        # (an extension OID turned into another's); TypeError (a name attribute's string tag
        # turned into BIT STRING); and, where warnings are errors (the tests), UserWarning (a
        # country name of the wrong length) and CryptographyDeprecationWarning (a negative
        # serial inside the authority key identifier).
        raise CertificateError(_R.MALFORMED, "a certificate or CRL does not parse") from exc
    return VerifiedChain(path=tuple(path), purpose=purpose, at=at)
