"""phd_protocol.pki: every refusal of verify_chain with real certificates, CSRs, kids, CRLs.

The hierarchy is built here with the pure builders (no files), exactly as the hospital CA
builds it, so each test changes one thing and asserts the one reason it must produce.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st

from phd_protocol import crypto
from phd_protocol.pki import (
    CaRole,
    CertificateError,
    CertificateReason,
    Purpose,
    RevokedEntry,
    build_crl,
    build_device_csr,
    build_issuing_ca,
    build_leaf,
    build_root_ca,
    certificate_der,
    certificate_kid,
    certificate_pem,
    certificates_pem,
    check_crl,
    crl_pem,
    csr_public_key,
    fingerprint,
    load_certificate,
    load_certificates,
    load_crls,
    serial_hex,
    verify_chain,
)
from phd_protocol.pki.purpose import OID_ROLE_DEVICE, OID_ROLE_GATEWAY

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
ORG = "Test Hospital"
R = CertificateReason


@dataclass
class Hierarchy:
    root: x509.Certificate
    root_key: crypto.SigningKey
    cas: dict[CaRole, tuple[x509.Certificate, crypto.SigningKey]]

    def leaf(
        self,
        purpose: Purpose,
        *,
        role: CaRole | None = None,
        cn: str = "leaf",
        key: crypto.SigningKey | None = None,
        nb: datetime = T0 - DAY,
        na: datetime = T0 + 30 * DAY,
        **kw: object,
    ) -> x509.Certificate:
        from phd_protocol.pki.purpose import ca_role_for

        ca_cert, ca_key = self.cas[role or ca_role_for(purpose)]
        key = key or crypto.generate_signing_key(crypto.COSE_ES256)
        return build_leaf(
            key.public_key(),
            purpose=purpose,
            common_name=cn,
            issuer_cert=ca_cert,
            issuer_key=ca_key,
            not_before=nb,
            not_after=na,
            **kw,  # type: ignore[arg-type]  # test pass-through of optional builder knobs
        )

    def crl(
        self, role: CaRole, revoked: list[RevokedEntry], *, this: datetime = T0 - DAY, days: int = 7
    ) -> x509.CertificateRevocationList:
        cert, key = self.cas[role]
        return build_crl(
            issuer_cert=cert,
            issuer_key=key,
            revoked=revoked,
            this_update=this,
            next_update=this + days * DAY,
            crl_number=1,
        )

    def all_crls(self) -> list[x509.CertificateRevocationList]:
        root_crl = build_crl(
            issuer_cert=self.root,
            issuer_key=self.root_key,
            revoked=[],
            this_update=T0 - DAY,
            next_update=T0 + 90 * DAY,
            crl_number=1,
        )
        return [root_crl, *(self.crl(r, []) for r in CaRole)]


def make_hierarchy(*, dns: tuple[str, ...] = ("localhost",)) -> Hierarchy:
    import ipaddress

    root_key = crypto.generate_signing_key(crypto.COSE_ES256)
    root = build_root_ca(
        root_key,
        organization=ORG,
        common_name="Root",
        not_before=T0 - 10 * DAY,
        not_after=T0 + 3650 * DAY,
    )
    cas = {}
    for role in CaRole:
        key = crypto.generate_signing_key(crypto.COSE_ES256)
        cert = build_issuing_ca(
            key.public_key(),
            role=role,
            organization=ORG,
            common_name=f"{role} CA",
            issuer_cert=root,
            issuer_key=root_key,
            not_before=T0 - 10 * DAY,
            not_after=T0 + 1000 * DAY,
            permitted_dns=dns,
            permitted_ip=[ipaddress.ip_network("127.0.0.1/32")],
        )
        cas[role] = (cert, key)
    return Hierarchy(root, root_key, cas)


@pytest.fixture(scope="module")
def h() -> Hierarchy:
    return make_hierarchy()


def verify(
    h: Hierarchy,
    leaf: x509.Certificate,
    purpose: Purpose,
    *,
    at: datetime = T0,
    crls: list[x509.CertificateRevocationList] | None = None,
    anchors: list[x509.Certificate] | None = None,
) -> None:
    verify_chain(
        leaf,
        intermediates=[c for c, _ in h.cas.values()],
        anchors=anchors or [h.root],
        purpose=purpose,
        at=at,
        crls=crls,
    )


def refused(reason: CertificateReason) -> pytest.RaisesExc[CertificateError]:
    return pytest.raises(CertificateError, check=lambda e: e.reason is reason)


# --------------------------------------------------------------------------- acceptance


@pytest.mark.parametrize("purpose", list(Purpose))
def test_each_purpose_accepts_its_own_leaf(h: Hierarchy, purpose: Purpose) -> None:
    sans = ("localhost", "127.0.0.1") if purpose is Purpose.SERVICE_TLS else ()
    leaf = h.leaf(purpose, sans=sans)
    result = verify_chain(
        leaf,
        intermediates=[c for c, _ in h.cas.values()],
        anchors=[h.root],
        purpose=purpose,
        at=T0,
        crls=h.all_crls(),
    )
    assert result.leaf == leaf
    assert result.path[-1] == h.root
    assert len(result.path) == 3
    assert result.kid == certificate_kid(leaf)


def test_device_credential_with_ed25519_key_verifies(h: Hierarchy) -> None:
    key = crypto.generate_signing_key(crypto.COSE_EDDSA)
    leaf = h.leaf(Purpose.DEVICE_CREDENTIAL, key=key, cn=str(uuid.uuid4()))
    verify(h, leaf, Purpose.DEVICE_CREDENTIAL, crls=h.all_crls())


# --------------------------------------------------------------------------- purpose / EKU


@pytest.mark.parametrize(
    ("issued_for", "presented_as"),
    [
        (Purpose.GATEWAY_CLIENT, Purpose.DEVICE_CREDENTIAL),
        (Purpose.DEVICE_CREDENTIAL, Purpose.GATEWAY_CLIENT),
        (Purpose.INGEST_CLIENT, Purpose.GATEWAY_CLIENT),
        (Purpose.GATEWAY_CLIENT, Purpose.INGEST_CLIENT),
        (Purpose.SERVICE_TLS, Purpose.GATEWAY_CLIENT),
        (Purpose.INGEST_CLIENT, Purpose.DEVICE_CREDENTIAL),
        (Purpose.DEVICE_CREDENTIAL, Purpose.SERVICE_TLS),
    ],
)
def test_a_certificate_for_one_purpose_is_refused_for_another(
    h: Hierarchy, issued_for: Purpose, presented_as: Purpose
) -> None:
    leaf = h.leaf(issued_for)
    with refused(R.WRONG_PURPOSE):
        verify(h, leaf, presented_as)


def test_gateway_ca_cannot_vouch_for_a_device_even_with_device_eku(h: Hierarchy) -> None:
    # A leaf whose own EKU says "device" but was signed by the gateway CA.
    leaf = h.leaf(
        Purpose.DEVICE_CREDENTIAL,
        role=CaRole.GATEWAY,
        eku=[OID_ROLE_DEVICE],
    )
    with refused(R.WRONG_PURPOSE):
        verify(h, leaf, Purpose.DEVICE_CREDENTIAL)


def test_device_leaf_with_client_auth_added_is_refused_as_device(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.DEVICE_CREDENTIAL, eku=[OID_ROLE_DEVICE, ExtendedKeyUsageOID.CLIENT_AUTH])
    with refused(R.WRONG_PURPOSE):
        verify(h, leaf, Purpose.DEVICE_CREDENTIAL)


def test_gateway_leaf_with_device_role_added_is_refused_as_gateway(h: Hierarchy) -> None:
    leaf = h.leaf(
        Purpose.GATEWAY_CLIENT,
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH, OID_ROLE_GATEWAY, OID_ROLE_DEVICE],
    )
    with refused(R.WRONG_PURPOSE):
        verify(h, leaf, Purpose.GATEWAY_CLIENT)


def test_a_ca_certificate_is_not_a_leaf(h: Hierarchy) -> None:
    gateway_ca, _ = h.cas[CaRole.GATEWAY]
    with refused(R.WRONG_PURPOSE):
        verify(h, gateway_ca, Purpose.GATEWAY_CLIENT)


# --------------------------------------------------------------------------- time


def test_expired_leaf_is_refused(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT, nb=T0 - 10 * DAY, na=T0 - DAY)
    with refused(R.EXPIRED):
        verify(h, leaf, Purpose.GATEWAY_CLIENT)


def test_not_yet_valid_leaf_is_refused(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT, nb=T0 + DAY, na=T0 + 10 * DAY)
    with refused(R.NOT_YET_VALID):
        verify(h, leaf, Purpose.GATEWAY_CLIENT)


def test_validity_boundaries_are_inclusive(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT, nb=T0 - DAY, na=T0 + DAY)
    verify(h, leaf, Purpose.GATEWAY_CLIENT, at=T0 - DAY)
    verify(h, leaf, Purpose.GATEWAY_CLIENT, at=T0 + DAY)
    with refused(R.EXPIRED):
        verify(h, leaf, Purpose.GATEWAY_CLIENT, at=T0 + DAY + timedelta(seconds=1))


def test_expired_issuing_ca_is_refused() -> None:
    h = make_hierarchy()
    root_key = h.root_key
    key = crypto.generate_signing_key(crypto.COSE_ES256)
    old_ca = build_issuing_ca(
        key.public_key(),
        role=CaRole.GATEWAY,
        organization=ORG,
        common_name="old gateway CA",
        issuer_cert=h.root,
        issuer_key=root_key,
        not_before=T0 - 100 * DAY,
        not_after=T0 - DAY,
    )
    h.cas[CaRole.GATEWAY] = (old_ca, key)
    leaf = h.leaf(Purpose.GATEWAY_CLIENT)
    with refused(R.EXPIRED):
        verify(h, leaf, Purpose.GATEWAY_CLIENT)


def test_naive_time_is_a_programming_error(h: Hierarchy) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify(
            h, h.leaf(Purpose.GATEWAY_CLIENT), Purpose.GATEWAY_CLIENT, at=T0.replace(tzinfo=None)
        )


# --------------------------------------------------------------------------- issuer, signature


def test_leaf_from_a_rogue_hierarchy_with_identical_names_is_wrong_issuer(h: Hierarchy) -> None:
    rogue = make_hierarchy()  # same organisation, same CA names, different keys
    leaf = rogue.leaf(Purpose.GATEWAY_CLIENT, cn="gw-1")
    assert leaf.issuer == h.cas[CaRole.GATEWAY][0].subject
    with refused(R.WRONG_ISSUER):
        verify(h, leaf, Purpose.GATEWAY_CLIENT)


def test_rogue_chain_presented_in_full_is_still_wrong_issuer(h: Hierarchy) -> None:
    rogue = make_hierarchy()
    leaf = rogue.leaf(Purpose.GATEWAY_CLIENT)
    with refused(R.WRONG_ISSUER):
        verify_chain(
            leaf,
            intermediates=[rogue.cas[CaRole.GATEWAY][0], rogue.root],
            anchors=[h.root],
            purpose=Purpose.GATEWAY_CLIENT,
            at=T0,
        )


def test_missing_intermediate_is_wrong_issuer(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT)
    with refused(R.WRONG_ISSUER):
        verify_chain(
            leaf, intermediates=[], anchors=[h.root], purpose=Purpose.GATEWAY_CLIENT, at=T0
        )


def test_tampered_certificate_is_bad_signature(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT, cn="gw-aaaa")
    der = certificate_der(leaf)
    forged_der = der.replace(b"gw-aaaa", b"gw-bbbb")  # same length: still parses
    assert forged_der != der
    forged = x509.load_der_x509_certificate(forged_der)
    with refused(R.BAD_SIGNATURE):
        verify(h, forged, Purpose.GATEWAY_CLIENT)


def test_same_key_id_but_different_signer_is_bad_signature(h: Hierarchy) -> None:
    # Without key identifiers, a rogue CA with our CA's exact name is only caught by the
    # signature check itself.
    rogue_key = crypto.generate_signing_key(crypto.COSE_ES256)
    gateway_ca, _ = h.cas[CaRole.GATEWAY]
    key = crypto.generate_signing_key(crypto.COSE_ES256)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string(f"CN=gw-x,OU=PHD gateways,O={ORG}"))
        .issuer_name(gateway_ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - DAY)
        .not_valid_after(T0 + DAY)
    )
    from cryptography.hazmat.primitives import hashes

    assert isinstance(rogue_key, ec.EllipticCurvePrivateKey)
    forged = builder.sign(rogue_key, hashes.SHA256())
    with refused(R.BAD_SIGNATURE):
        verify(h, forged, Purpose.GATEWAY_CLIENT)


def test_no_anchors_refuses(h: Hierarchy) -> None:
    with refused(R.WRONG_ISSUER):
        verify_chain(
            h.leaf(Purpose.GATEWAY_CLIENT),
            intermediates=[],
            anchors=[],
            purpose=Purpose.GATEWAY_CLIENT,
            at=T0,
        )


# --------------------------------------------------------------------------- constraints


def test_leaf_name_outside_the_ca_subtree_is_refused(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT, organization="Another Hospital")
    with refused(R.NAME_CONSTRAINT):
        verify(h, leaf, Purpose.GATEWAY_CLIENT)


def test_service_leaf_for_a_foreign_host_is_refused(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.SERVICE_TLS, sans=("bank.example",))
    with refused(R.NAME_CONSTRAINT):
        verify(h, leaf, Purpose.SERVICE_TLS)


def test_service_leaf_for_a_foreign_ip_is_refused(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.SERVICE_TLS, sans=("localhost", "10.0.0.1"))
    with refused(R.NAME_CONSTRAINT):
        verify(h, leaf, Purpose.SERVICE_TLS)


def test_gateway_ca_may_not_certify_any_ip_address(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT, sans=("127.0.0.1",))
    with refused(R.NAME_CONSTRAINT):
        verify(h, leaf, Purpose.GATEWAY_CLIENT)


def test_issuing_ca_cannot_mint_a_sub_ca(h: Hierarchy) -> None:
    # pathLen 0 on the issuing CA: a CA certificate it signs must not be usable as an issuer.
    gw_ca, gw_key = h.cas[CaRole.GATEWAY]
    sub_key = crypto.generate_signing_key(crypto.COSE_ES256)
    sub = build_issuing_ca(
        sub_key.public_key(),
        role=CaRole.GATEWAY,
        organization=ORG,
        common_name="sub CA",
        issuer_cert=gw_ca,
        issuer_key=gw_key,
        not_before=T0 - DAY,
        not_after=T0 + DAY,
    )
    leaf = build_leaf(
        crypto.generate_signing_key(crypto.COSE_ES256).public_key(),
        purpose=Purpose.GATEWAY_CLIENT,
        common_name="gw-deep",
        issuer_cert=sub,
        issuer_key=sub_key,
        not_before=T0 - DAY,
        not_after=T0 + DAY,
    )
    # The path would be 4 long; our PKI never issues that, so the walk stops at 3.
    with pytest.raises(CertificateError) as info:
        verify_chain(
            leaf,
            intermediates=[sub, gw_ca],
            anchors=[h.root],
            purpose=Purpose.GATEWAY_CLIENT,
            at=T0,
        )
    assert info.value.reason in {R.WRONG_ISSUER, R.PATH_LENGTH}
    # Anchored at the gateway CA (3 certificates), pathLen 0 is what refuses it.
    with refused(R.PATH_LENGTH):
        verify_chain(
            leaf, intermediates=[sub], anchors=[gw_ca], purpose=Purpose.GATEWAY_CLIENT, at=T0
        )


# --------------------------------------------------------------------------- revocation


def test_revoked_leaf_is_refused_after_the_revocation_time(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.DEVICE_CREDENTIAL)
    entry = RevokedEntry(
        serial=leaf.serial_number, revoked_at=T0, reason=x509.ReasonFlags.cessation_of_operation
    )
    crls = [*h.all_crls()[:1], h.crl(CaRole.DEVICE, [entry])]
    with refused(R.REVOKED):
        verify(h, leaf, Purpose.DEVICE_CREDENTIAL, at=T0 + DAY, crls=crls)
    # Sealed before an ordinary revocation: still verifies (ingest passes the seal time).
    verify(h, leaf, Purpose.DEVICE_CREDENTIAL, at=T0 - timedelta(hours=1), crls=crls)


def test_key_compromise_revokes_regardless_of_time(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.DEVICE_CREDENTIAL)
    entry = RevokedEntry(
        serial=leaf.serial_number, revoked_at=T0, reason=x509.ReasonFlags.key_compromise
    )
    crls = [*h.all_crls()[:1], h.crl(CaRole.DEVICE, [entry])]
    with refused(R.REVOKED):
        verify(h, leaf, Purpose.DEVICE_CREDENTIAL, at=T0 - timedelta(hours=1), crls=crls)


def test_revoked_issuing_ca_is_refused(h: Hierarchy) -> None:
    gw_ca, _ = h.cas[CaRole.GATEWAY]
    root_crl = build_crl(
        issuer_cert=h.root,
        issuer_key=h.root_key,
        revoked=[
            RevokedEntry(
                serial=gw_ca.serial_number,
                revoked_at=T0 - DAY,
                reason=x509.ReasonFlags.ca_compromise,
            )
        ],
        this_update=T0 - DAY,
        next_update=T0 + 90 * DAY,
        crl_number=2,
    )
    crls = [root_crl, h.crl(CaRole.GATEWAY, [])]
    with refused(R.REVOKED):
        verify(h, h.leaf(Purpose.GATEWAY_CLIENT), Purpose.GATEWAY_CLIENT, crls=crls)


def test_expired_crl_is_refused(h: Hierarchy) -> None:
    crls = [h.all_crls()[0], h.crl(CaRole.GATEWAY, [], this=T0 - 10 * DAY, days=7)]
    with refused(R.CRL_EXPIRED):
        verify(h, h.leaf(Purpose.GATEWAY_CLIENT), Purpose.GATEWAY_CLIENT, crls=crls)


def test_crl_from_the_future_is_invalid(h: Hierarchy) -> None:
    crls = [h.all_crls()[0], h.crl(CaRole.GATEWAY, [], this=T0 + DAY)]
    with refused(R.CRL_INVALID):
        verify(h, h.leaf(Purpose.GATEWAY_CLIENT), Purpose.GATEWAY_CLIENT, crls=crls)


def test_crl_signed_by_a_rogue_ca_with_our_name_is_invalid(h: Hierarchy) -> None:
    rogue = make_hierarchy()
    crls = [h.all_crls()[0], rogue.crl(CaRole.GATEWAY, [])]
    with refused(R.CRL_INVALID):
        verify(h, h.leaf(Purpose.GATEWAY_CLIENT), Purpose.GATEWAY_CLIENT, crls=crls)


def test_missing_crl_is_refused_when_revocation_is_demanded(h: Hierarchy) -> None:
    with refused(R.CRL_MISSING):
        verify(h, h.leaf(Purpose.GATEWAY_CLIENT), Purpose.GATEWAY_CLIENT, crls=[])


def test_newest_crl_wins_when_several_are_current(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT)
    cert, key = h.cas[CaRole.GATEWAY]
    entry = RevokedEntry(
        serial=leaf.serial_number, revoked_at=T0 - DAY, reason=x509.ReasonFlags.superseded
    )
    older = build_crl(
        issuer_cert=cert,
        issuer_key=key,
        revoked=[],
        this_update=T0 - 2 * DAY,
        next_update=T0 + 5 * DAY,
        crl_number=1,
    )
    newer = build_crl(
        issuer_cert=cert,
        issuer_key=key,
        revoked=[entry],
        this_update=T0 - DAY,
        next_update=T0 + 6 * DAY,
        crl_number=2,
    )
    with refused(R.REVOKED):
        verify(h, leaf, Purpose.GATEWAY_CLIENT, crls=[h.all_crls()[0], older, newer])


def test_crl_pem_round_trip_and_check(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT)
    entry = RevokedEntry(
        serial=leaf.serial_number, revoked_at=T0 - DAY, reason=x509.ReasonFlags.key_compromise
    )
    bundle = b"".join(crl_pem(c) for c in [h.all_crls()[0], h.crl(CaRole.GATEWAY, [entry])])
    crls = load_crls(bundle)
    assert len(crls) == 2
    check_crl(crls[1], h.cas[CaRole.GATEWAY][0], T0)
    revoked = crls[1].get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert revoked is not None
    assert revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    with refused(R.REVOKED):
        verify(h, leaf, Purpose.GATEWAY_CLIENT, crls=crls)


def test_garbage_crl_bundle_is_refused() -> None:
    with refused(R.CRL_INVALID):
        load_crls(b"not a crl")
    with refused(R.CRL_INVALID):
        load_crls(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")


# --------------------------------------------------------------------------- CSR, kids, PEM


@pytest.mark.parametrize("alg", [crypto.COSE_EDDSA, crypto.COSE_ES256])
def test_csr_proves_possession_and_names_nobody(alg: int) -> None:
    key = crypto.generate_signing_key(alg)
    pem = build_device_csr(key)
    public = csr_public_key(pem)
    assert crypto.public_key_pem(public) == crypto.public_key_pem(key.public_key())
    csr = x509.load_pem_x509_csr(pem)
    assert csr.subject.rfc4514_string() == "CN=phd-device-credential"


def test_csr_with_a_swapped_public_key_fails_proof_of_possession() -> None:
    # Sign a CSR with key A, then splice key B's SubjectPublicKeyInfo into it.
    a = crypto.generate_signing_key(crypto.COSE_EDDSA)
    b = crypto.generate_signing_key(crypto.COSE_EDDSA)
    csr_a = x509.load_pem_x509_csr(build_device_csr(a))
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw_a = a.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raw_b = b.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    der = csr_a.public_bytes(Encoding.DER).replace(raw_a, raw_b)
    forged = x509.load_der_x509_csr(der).public_bytes(Encoding.PEM)
    with refused(R.BAD_CSR):
        csr_public_key(forged)


def test_csr_garbage_oversize_and_rsa_are_refused() -> None:
    with refused(R.BAD_CSR):
        csr_public_key(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
    with refused(R.BAD_CSR):
        csr_public_key(b"A" * 5000)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # only for the test
    from cryptography.hazmat.primitives import hashes

    rsa_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=x"))
        .sign(rsa_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    with refused(R.UNSUPPORTED_KEY):
        csr_public_key(rsa_csr.public_bytes(Encoding.PEM))


def test_kid_fingerprint_serial_and_pem_helpers(h: Hierarchy) -> None:
    leaf = h.leaf(Purpose.GATEWAY_CLIENT)
    kid = certificate_kid(leaf)
    assert kid == crypto.sha256(certificate_der(leaf))
    assert len(kid) == 32
    assert fingerprint(leaf) == kid.hex(":").upper()
    assert int(serial_hex(leaf), 16) == leaf.serial_number
    assert load_certificate(certificate_pem(leaf)) == leaf
    chain = load_certificates(certificates_pem([leaf, h.root]))
    assert chain == [leaf, h.root]
    other = h.leaf(Purpose.GATEWAY_CLIENT)
    assert certificate_kid(other) != kid


def test_pem_loaders_refuse_garbage_and_counts() -> None:
    with refused(R.MALFORMED):
        load_certificate(b"garbage")
    h = make_hierarchy()
    with refused(R.MALFORMED):
        load_certificate(certificates_pem([h.root, h.root]))
    with refused(R.MALFORMED):
        load_certificates(b"-" * (1024 * 1024 + 1))


def test_unknown_critical_extension_is_refused(h: Hierarchy) -> None:
    from cryptography.hazmat.primitives import hashes

    _, gw_key = h.cas[CaRole.GATEWAY]
    key = crypto.generate_signing_key(crypto.COSE_ES256)
    base = h.leaf(Purpose.GATEWAY_CLIENT, key=key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(base.subject)
        .issuer_name(base.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - DAY)
        .not_valid_after(T0 + DAY)
    )
    for ext in base.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    builder = builder.add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
        critical=True,
    )
    assert isinstance(gw_key, ec.EllipticCurvePrivateKey)
    odd = builder.sign(gw_key, hashes.SHA256())
    with refused(R.MALFORMED):
        verify(h, odd, Purpose.GATEWAY_CLIENT)
    verify(h, base, Purpose.GATEWAY_CLIENT)


_FUZZ_H = make_hierarchy()
_FUZZ_LEAF_DER = certificate_der(_FUZZ_H.leaf(Purpose.GATEWAY_CLIENT))


@given(st.integers(0, len(_FUZZ_LEAF_DER) - 1), st.integers(1, 255))
def test_any_single_byte_tampering_is_refused_with_a_certificate_error(
    offset: int, xor: int
) -> None:
    data = bytearray(_FUZZ_LEAF_DER)
    data[offset] ^= xor
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(data))
    pem += b"-----END CERTIFICATE-----\n"
    # Through the product's own loader: refusal at parsing must be a CertificateError too.
    with pytest.raises(CertificateError):
        _load_and_verify(pem)


def _load_and_verify(pem: bytes) -> None:
    verify(_FUZZ_H, load_certificate(pem), Purpose.GATEWAY_CLIENT, crls=_FUZZ_H.all_crls())


def test_a_repeated_extension_is_refused_as_malformed() -> None:
    # Regression found by the fuzz test above: turning the AuthorityKeyIdentifier OID
    # (2.5.29.35) into SubjectKeyIdentifier (2.5.29.14) repeats an extension, and cryptography
    # raises DuplicateExtension (not a ValueError) when the extensions are first read.
    data = bytearray(_FUZZ_LEAF_DER)
    at = data.index(b"\x06\x03\x55\x1d\x23") + 4
    data[at] = 0x0E
    tampered = x509.load_der_x509_certificate(bytes(data))
    with refused(R.MALFORMED):
        verify(_FUZZ_H, tampered, Purpose.GATEWAY_CLIENT, crls=_FUZZ_H.all_crls())


def test_signature_declaring_unused_bits_is_refused_as_malformed() -> None:
    # Regression found by the fuzz test above: the signature BIT STRING's unused-bits byte
    # set to 1 still verifies (the signature covers only tbsCertificate) when the last bit of
    # the signature is 0, yet gives the same certificate a different DER and so a different kid.
    leaf = _FUZZ_H.leaf(Purpose.GATEWAY_CLIENT)
    while certificate_der(leaf)[-1] & 1:  # ECDSA is randomised: find an even last byte
        leaf = _FUZZ_H.leaf(Purpose.GATEWAY_CLIENT)
    data = bytearray(certificate_der(leaf))
    unused_at = len(data) - len(leaf.signature) - 1  # BIT STRING: 03 len unused signature
    assert data[unused_at - 2 : unused_at + 1] == bytes([0x03, len(leaf.signature) + 1, 0])
    data[unused_at] = 1
    tampered = x509.load_der_x509_certificate(bytes(data))
    assert tampered.signature == leaf.signature  # cryptography reads the same value
    with refused(R.MALFORMED):
        verify(_FUZZ_H, tampered, Purpose.GATEWAY_CLIENT, crls=_FUZZ_H.all_crls())
    verify(_FUZZ_H, leaf, Purpose.GATEWAY_CLIENT, crls=_FUZZ_H.all_crls())


def test_a_non_positive_serial_is_refused_at_loading() -> None:
    # Regression found by the fuzz test above: a serial with its sign bit set parses (with a
    # deprecation warning) although RFC 5280 requires a positive serial.
    data = bytearray(_FUZZ_LEAF_DER)
    assert data[13:15] == b"\x02\x14"  # serialNumber INTEGER, 20 bytes, after the version
    data[15] |= 0x80
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(data))
    pem += b"-----END CERTIFICATE-----\n"
    with refused(R.MALFORMED):
        load_certificate(pem)


def test_a_name_attribute_of_the_wrong_string_type_is_refused_as_malformed() -> None:
    # Regression found by an exhaustive single-byte sweep: the organisation name's UTF8String
    # tag (0x0c) turned into BIT STRING (0x03) makes cryptography raise TypeError when the
    # issuer name is first read, which escaped as an unexpected error.
    data = bytearray(_FUZZ_LEAF_DER)
    at = data.index(b"\x06\x03\x55\x04\x0a\x0c") + 5  # organizationName, UTF8String
    data[at] = 0x03
    tampered = x509.load_der_x509_certificate(bytes(data))
    with refused(R.MALFORMED):
        verify(_FUZZ_H, tampered, Purpose.GATEWAY_CLIENT, crls=_FUZZ_H.all_crls())


def test_an_invalid_version_is_refused_as_malformed() -> None:
    # Regression found by the fuzz test: version 3 (v4) raises InvalidVersion, no ValueError.
    data = bytearray(_FUZZ_LEAF_DER)
    at = data.index(b"\xa0\x03\x02\x01\x02") + 4
    data[at] = 0x03
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(data))
    with refused(R.MALFORMED):
        load_certificate(pem + b"-----END CERTIFICATE-----\n")
