"""hospital_server.pki.ca: files, modes, idempotence, passphrase, issuance, revocation, CRLs.

Certificates made here are also checked by OpenSSL (``openssl verify``), an implementation
independent of ours and the one mosquitto uses: that is a test of our output, not a shell-out
in product code.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hospital_server.pki.ca import (
    CRL_NEXT_UPDATE,
    crl_status,
    generate_crls,
    init_pki,
    issue_client_certificate,
    issue_device_certificate,
    issue_gateway,
    load_inventory,
    revoke,
    rotate_ingest_key,
    show,
)
from hospital_server.pki.errors import (
    PkiError,
    PkiNotInitialisedError,
    PkiPassphraseError,
    UnknownCertificateError,
)
from hospital_server.pki.layout import PkiLayout
from phd_protocol import crypto
from phd_protocol.enrollment import ingest_key_id
from phd_protocol.pki import (
    CaRole,
    CertificateError,
    CertificateReason,
    Purpose,
    build_device_csr,
    load_certificate,
    load_certificates,
    load_crls,
    verify_chain,
)

OPENSSL = shutil.which("openssl")
DAY = timedelta(days=1)


def _verify(
    layout: PkiLayout,
    chain_pem: bytes,
    purpose: Purpose,
    *,
    at: datetime | None = None,
    with_crls: bool = True,
) -> None:
    certs = load_certificates(chain_pem)
    verify_chain(
        certs[0],
        intermediates=certs[1:],
        anchors=[load_certificate(layout.root_ca_cert.read_bytes())],
        purpose=purpose,
        at=at or datetime.now(UTC),
        crls=load_crls(layout.crl_bundle.read_bytes()) if with_crls else None,
    )


def _refused(reason: CertificateReason) -> pytest.RaisesExc[CertificateError]:
    return pytest.raises(CertificateError, check=lambda e: e.reason is reason)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- init


def test_init_creates_every_file_of_the_layout(dev_pki: PkiLayout) -> None:
    L = dev_pki
    expected = [
        L.root_ca_cert, L.root_ca_key, L.ca_bundle, L.client_ca_bundle, L.crl_bundle, L.root_crl,
        L.broker_cert, L.broker_key, L.broker_chain, L.server_cert, L.server_key, L.server_chain,
        L.ingest_hpke_key, L.ingest_keyring, L.audit_signing_key, L.audit_verify_key,
        L.revocations, L.inventory,
        *(L.ca_cert(r.value) for r in CaRole), *(L.ca_key(r.value) for r in CaRole),
        *(L.crl(r.value) for r in CaRole),
        *(p for w in ("ingest-1", "ingest-2")
          for p in (L.ingest_worker_cert(w), L.ingest_worker_key(w), L.ingest_worker_chain(w))),
        *(p for g in ("gw-1", "gw-2")
          for p in (L.gateway_cert(g), L.gateway_key(g), L.gateway_chain(g))),
    ]  # fmt: skip
    missing = [str(p) for p in expected if not p.is_file()]
    assert missing == []


def test_private_keys_are_0600_and_public_files_are_not_secret(dev_pki: PkiLayout) -> None:
    keys = sorted(dev_pki.root.rglob("*.key"))
    assert len(keys) == 12  # root, 3 CAs, broker, server, 2 workers, audit, ingest, 2 gateways
    assert {p.name: _mode(p) for p in keys} == {p.name: 0o600 for p in keys}
    assert _mode(dev_pki.root) == 0o700
    assert _mode(dev_pki.broker_cert) == 0o644
    assert _mode(dev_pki.crl_bundle) == 0o644


def test_service_and_gateway_chains_verify_for_their_purpose(dev_pki: PkiLayout) -> None:
    _verify(dev_pki, dev_pki.broker_chain.read_bytes(), Purpose.SERVICE_TLS)
    _verify(dev_pki, dev_pki.server_chain.read_bytes(), Purpose.SERVICE_TLS)
    _verify(dev_pki, dev_pki.ingest_worker_chain("ingest-2").read_bytes(), Purpose.INGEST_CLIENT)
    _verify(dev_pki, dev_pki.gateway_chain("gw-1").read_bytes(), Purpose.GATEWAY_CLIENT)


def test_gateway_cn_is_its_name_and_broker_sans_cover_the_hosts(dev_pki: PkiLayout) -> None:
    gw = load_certificate(dev_pki.gateway_cert("gw-2").read_bytes())
    cn = gw.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "gw-2"
    broker = load_certificate(dev_pki.broker_cert.read_bytes())
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(v) for v in san.get_values_for_type(x509.DNSName)} == {"localhost"}
    assert {str(v) for v in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    eku = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_gateway_certificate_is_not_a_device_credential(dev_pki: PkiLayout) -> None:
    with _refused(CertificateReason.WRONG_PURPOSE):
        _verify(dev_pki, dev_pki.gateway_chain("gw-1").read_bytes(), Purpose.DEVICE_CREDENTIAL)


def test_ingest_keyring_and_audit_key(dev_pki: PkiLayout) -> None:
    ring = json.loads(dev_pki.ingest_keyring.read_text())
    assert len(ring) == 1
    (entry,) = ring
    assert entry["status"] == "active"
    assert entry["private_file"] == dev_pki.ingest_hpke_key.name
    key = crypto.load_private_key_pem(dev_pki.ingest_hpke_key.read_bytes())
    public = crypto.x25519_public_raw(key)  # type: ignore[arg-type]  # X25519 by construction
    assert entry["public"] == public.hex()
    assert entry["kid"] == ingest_key_id(public).hex()
    audit = crypto.load_private_key_pem(dev_pki.audit_signing_key.read_bytes())
    assert crypto.signature_algorithm(audit) == crypto.COSE_EDDSA  # type: ignore[arg-type]
    pub = crypto.load_public_key_pem(dev_pki.audit_verify_key.read_bytes())
    sig = crypto.sign(audit, b"checkpoint")  # type: ignore[arg-type]
    crypto.verify(pub, sig, b"checkpoint")  # type: ignore[arg-type]


def test_init_twice_keeps_every_key_and_certificate(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "pki")
    first = init_pki(layout)
    before = {p: p.read_bytes() for p in layout.root.rglob("*") if p.suffix in {".key", ".crt"}}
    second = init_pki(layout)
    assert second.created == ()
    assert set(second.kept) == set(first.created)
    after = {p: p.read_bytes() for p in layout.root.rglob("*") if p.suffix in {".key", ".crt"}}
    assert after == before


def test_force_replaces_keys(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "pki")
    init_pki(layout)
    old_root = layout.root_ca_key.read_bytes()
    old_ingest = layout.ingest_hpke_key.read_bytes()
    init_pki(layout, force=True)
    assert layout.root_ca_key.read_bytes() != old_root
    assert layout.ingest_hpke_key.read_bytes() != old_ingest
    _verify(layout, layout.broker_chain.read_bytes(), Purpose.SERVICE_TLS)


def test_adding_a_host_reissues_service_certs_under_the_same_keys(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "pki")
    init_pki(layout)
    broker_key = layout.broker_key.read_bytes()
    root = layout.root_ca_cert.read_bytes()
    report = init_pki(layout, hosts=("localhost", "127.0.0.1", "::1", "broker.hospital.test"))
    assert "broker.crt" in report.created
    assert "service-ca.crt" in report.created
    assert layout.broker_key.read_bytes() == broker_key
    assert layout.root_ca_cert.read_bytes() == root
    broker = load_certificate(layout.broker_cert.read_bytes())
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.hospital.test" in san.get_values_for_type(x509.DNSName)
    _verify(layout, layout.broker_chain.read_bytes(), Purpose.SERVICE_TLS)


# --------------------------------------------------------------------------- passphrase


def test_passphrase_encrypts_ca_keys_and_is_required_to_issue(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "pki")
    init_pki(layout, passphrase=b"correct horse battery staple")
    assert b"ENCRYPTED PRIVATE KEY" in layout.root_ca_key.read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in layout.ca_key("gateway").read_bytes()
    # Daemon keys stay loadable unattended.
    assert b"ENCRYPTED" not in layout.broker_key.read_bytes()
    with pytest.raises(PkiPassphraseError):
        issue_gateway(layout, "gw-9")
    with pytest.raises(PkiPassphraseError):
        issue_gateway(layout, "gw-9", passphrase=b"wrong")
    issue_gateway(layout, "gw-9", passphrase=b"correct horse battery staple")
    _verify(layout, layout.gateway_chain("gw-9").read_bytes(), Purpose.GATEWAY_CLIENT)
    # Re-running init with the passphrase keeps the encrypted keys.
    report = init_pki(layout, passphrase=b"correct horse battery staple")
    assert report.created == ()
    with pytest.raises(PkiPassphraseError):
        init_pki(layout)


# --------------------------------------------------------------------------- issuance


def test_device_certificate_names_the_device_id_only(dev_pki: PkiLayout) -> None:
    key = crypto.generate_signing_key(crypto.COSE_EDDSA)
    device_id = uuid.uuid4()
    cert_pem, chain_pem = issue_device_certificate(dev_pki, build_device_csr(key), device_id)
    cert = load_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == str(device_id)
    assert crypto.public_key_pem(key.public_key()) == crypto.public_key_pem(
        cert.public_key()  # type: ignore[arg-type]  # Ed25519 here
    )
    _verify(dev_pki, chain_pem, Purpose.DEVICE_CREDENTIAL)
    with _refused(CertificateReason.WRONG_PURPOSE):
        _verify(dev_pki, chain_pem, Purpose.GATEWAY_CLIENT)


def test_device_issuance_refuses_a_bad_csr(dev_pki: PkiLayout) -> None:
    with _refused(CertificateReason.BAD_CSR):
        issue_device_certificate(dev_pki, b"-----BEGIN CERTIFICATE REQUEST-----\n", uuid.uuid4())


def test_expired_and_not_yet_valid_gateways_are_refused(fresh_pki: PkiLayout) -> None:
    now = datetime.now(UTC)
    issue_gateway(fresh_pki, "old", not_before=now - 10 * DAY, not_after=now - DAY)
    issue_gateway(fresh_pki, "later", not_before=now + DAY, not_after=now + 10 * DAY)
    with _refused(CertificateReason.EXPIRED):
        _verify(fresh_pki, fresh_pki.gateway_chain("old").read_bytes(), Purpose.GATEWAY_CLIENT)
    with _refused(CertificateReason.NOT_YET_VALID):
        _verify(fresh_pki, fresh_pki.gateway_chain("later").read_bytes(), Purpose.GATEWAY_CLIENT)


def test_rogue_pki_with_the_same_names_is_refused(dev_pki: PkiLayout, rogue_pki: PkiLayout) -> None:
    with _refused(CertificateReason.WRONG_ISSUER):
        _verify(dev_pki, rogue_pki.gateway_chain("gw-1").read_bytes(), Purpose.GATEWAY_CLIENT)


def test_wrong_eku_client_certificate(fresh_pki: PkiLayout) -> None:
    issued = issue_client_certificate(
        fresh_pki,
        "server-as-client",
        ca="service",
        purpose=Purpose.SERVICE_TLS,
        sans=("localhost",),
    )
    with _refused(CertificateReason.WRONG_PURPOSE):
        _verify(fresh_pki, issued.chain.read_bytes(), Purpose.GATEWAY_CLIENT)
    assert _mode(issued.key) == 0o600


def test_bad_names_are_refused(fresh_pki: PkiLayout) -> None:
    for bad in ("", "../x", "GW", "a" * 64, "gw 1"):
        with pytest.raises(PkiError):
            issue_gateway(fresh_pki, bad)


def test_operations_on_a_missing_pki_say_so(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "nothing")
    with pytest.raises(PkiNotInitialisedError):
        issue_gateway(layout, "gw-1")
    with pytest.raises(PkiNotInitialisedError):
        show(layout)


# --------------------------------------------------------------------------- revocation, CRLs


def test_revoke_by_name_round_trips_through_the_crl(fresh_pki: PkiLayout) -> None:
    chain = fresh_pki.gateway_chain("gw-1").read_bytes()
    _verify(fresh_pki, chain, Purpose.GATEWAY_CLIENT)
    records = revoke(fresh_pki, "gw-1", "keyCompromise")
    assert [r.name for r in records] == ["gw-1"]
    with _refused(CertificateReason.REVOKED):
        _verify(fresh_pki, chain, Purpose.GATEWAY_CLIENT)
    _verify(fresh_pki, fresh_pki.gateway_chain("gw-2").read_bytes(), Purpose.GATEWAY_CLIENT)
    crl = load_crls(fresh_pki.crl("gateway").read_bytes())[0]
    serial = load_certificates(chain)[0].serial_number
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    statuses = {r.name: r.status(datetime.now(UTC)) for r in show(fresh_pki)}
    assert statuses["gw-1"] == "revoked"
    assert statuses["gw-2"] == "valid"


def test_revoke_by_serial_and_unknown(fresh_pki: PkiLayout) -> None:
    cert = load_certificate(fresh_pki.gateway_cert("gw-2").read_bytes())
    revoke(fresh_pki, format(cert.serial_number, "x"), "superseded")
    with _refused(CertificateReason.REVOKED):
        _verify(fresh_pki, fresh_pki.gateway_chain("gw-2").read_bytes(), Purpose.GATEWAY_CLIENT)
    with pytest.raises(UnknownCertificateError):
        revoke(fresh_pki, "gw-2", "superseded")  # already revoked
    with pytest.raises(UnknownCertificateError):
        revoke(fresh_pki, "deadbeef", "superseded")
    with pytest.raises(PkiError):
        revoke(fresh_pki, "gw-1", "becauseISaidSo")


def test_revoke_device_by_serial(fresh_pki: PkiLayout) -> None:
    cert_pem, chain = issue_device_certificate(
        fresh_pki, build_device_csr(crypto.generate_signing_key()), uuid.uuid4()
    )
    revoke(fresh_pki, load_certificate(cert_pem).serial_number, "keyCompromise")
    with _refused(CertificateReason.REVOKED):
        _verify(fresh_pki, chain, Purpose.DEVICE_CREDENTIAL)


def test_revoking_an_issuing_ca_cuts_off_its_leaves(fresh_pki: PkiLayout) -> None:
    revoke(fresh_pki, "gateway-ca", "cACompromise")
    with _refused(CertificateReason.REVOKED):
        _verify(fresh_pki, fresh_pki.gateway_chain("gw-1").read_bytes(), Purpose.GATEWAY_CLIENT)
    _verify(fresh_pki, fresh_pki.broker_chain.read_bytes(), Purpose.SERVICE_TLS)


def test_crl_expiry_and_renewal(fresh_pki: PkiLayout) -> None:
    now = datetime.now(UTC)
    later = now + CRL_NEXT_UPDATE + DAY
    chain = fresh_pki.gateway_chain("gw-1").read_bytes()
    with _refused(CertificateReason.CRL_EXPIRED):
        _verify(fresh_pki, chain, Purpose.GATEWAY_CLIENT, at=later)
    assert {c.state(now + CRL_NEXT_UPDATE - DAY) for c in crl_status(fresh_pki)} >= {"renew soon"}
    generate_crls(fresh_pki, now=later - timedelta(hours=1))
    _verify(fresh_pki, chain, Purpose.GATEWAY_CLIENT, at=later)
    numbers = {c.name: c.number for c in crl_status(fresh_pki)}
    assert numbers["gateway"] >= 2  # CRL numbers increase on each generation


def test_revocations_survive_crl_regeneration(fresh_pki: PkiLayout) -> None:
    revoke(fresh_pki, "gw-1", "keyCompromise")
    generate_crls(fresh_pki)
    with _refused(CertificateReason.REVOKED):
        _verify(fresh_pki, fresh_pki.gateway_chain("gw-1").read_bytes(), Purpose.GATEWAY_CLIENT)
    assert any(r.name == "gw-1" and r.revoked_at for r in load_inventory(fresh_pki))


def test_ingest_key_rotation_keeps_the_old_key_retiring(fresh_pki: PkiLayout) -> None:
    old = json.loads(fresh_pki.ingest_keyring.read_text())[0]
    old_private = fresh_pki.ingest_hpke_key.read_bytes()
    kid = rotate_ingest_key(fresh_pki)
    ring = json.loads(fresh_pki.ingest_keyring.read_text())
    assert [e["status"] for e in ring] == ["retiring", "active"]
    assert ring[1]["kid"] == kid != old["kid"]
    retired_file = fresh_pki.ingest_hpke_key.with_name(ring[0]["private_file"])
    assert retired_file.read_bytes() == old_private
    assert _mode(retired_file) == 0o600
    # init afterwards does not disturb the ring.
    init_pki(fresh_pki)
    assert json.loads(fresh_pki.ingest_keyring.read_text()) == ring


# --------------------------------------------------------------------------- OpenSSL agrees


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None, "openssl is part of the test environment"
    return subprocess.run(
        [OPENSSL, "verify", *map(str, args)], capture_output=True, text=True, check=False
    )


def test_openssl_verifies_our_leaves_for_their_tls_purposes(dev_pki: PkiLayout) -> None:
    L = dev_pki
    ok = [
        ("sslserver", L.ca_cert("service"), L.broker_cert, ("-verify_hostname", "localhost")),
        ("sslserver", L.ca_cert("service"), L.server_cert, ("-verify_ip", "::1")),
        ("sslclient", L.ca_cert("gateway"), L.gateway_cert("gw-1"), ()),
        ("sslclient", L.ca_cert("service"), L.ingest_worker_cert("ingest-1"), ()),
    ]
    for purpose, inter, leaf, extra in ok:
        result = _openssl("-purpose", purpose, "-CAfile", L.root_ca_cert, "-untrusted", inter,
                          *extra, leaf)  # fmt: skip
        assert result.returncode == 0, (leaf.name, result.stdout, result.stderr)


def test_openssl_refuses_what_we_refuse(
    dev_pki: PkiLayout, rogue_pki: PkiLayout, tmp_path: Path
) -> None:
    L = dev_pki
    # A device credential is not a TLS client certificate.
    device_pem, _ = issue_device_certificate(
        L, build_device_csr(crypto.generate_signing_key()), uuid.uuid4()
    )
    device = tmp_path / "device.crt"
    device.write_bytes(device_pem)
    cases = [
        ("-purpose", "sslclient", "-untrusted", L.ca_cert("device"), device),
        ("-purpose", "sslclient", "-untrusted", rogue_pki.ca_cert("gateway"),
         rogue_pki.gateway_cert("gw-1")),
        ("-purpose", "sslserver", "-untrusted", L.ca_cert("gateway"), L.gateway_cert("gw-1")),
    ]  # fmt: skip
    for case in cases:
        result = _openssl("-CAfile", L.root_ca_cert, *case)
        assert result.returncode != 0, case


def test_openssl_honours_our_crl_bundle(fresh_pki: PkiLayout) -> None:
    L = fresh_pki
    revoke(L, "gw-1", "keyCompromise")
    args = ("-crl_check", "-CAfile", L.ca_bundle, "-CRLfile", L.crl_bundle)
    revoked = _openssl(*args, L.gateway_cert("gw-1"))
    assert revoked.returncode != 0
    assert "revoked" in revoked.stdout + revoked.stderr
    assert _openssl(*args, L.gateway_cert("gw-2")).returncode == 0
    full = _openssl("-crl_check_all", "-CAfile", L.ca_bundle, "-CRLfile", L.crl_bundle,
                    L.broker_cert)  # fmt: skip
    assert full.returncode == 0, full.stdout + full.stderr


def test_openssl_enforces_the_service_ca_name_constraints(fresh_pki: PkiLayout) -> None:
    issued = issue_client_certificate(
        fresh_pki, "evil", ca="service", purpose=Purpose.SERVICE_TLS, sans=("bank.example",)
    )
    result = _openssl("-CAfile", fresh_pki.root_ca_cert, "-untrusted",
                      fresh_pki.ca_cert("service"), issued.cert)  # fmt: skip
    assert result.returncode != 0
    assert "subtree violation" in result.stdout + result.stderr
    with _refused(CertificateReason.NAME_CONSTRAINT):
        _verify(fresh_pki, issued.chain.read_bytes(), Purpose.SERVICE_TLS)


def test_init_with_the_root_key_offline_never_mints_a_new_root(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "pki")
    init_pki(layout)
    root = layout.root_ca_cert.read_bytes()
    offline = tmp_path / "vault" / "root-ca.key"
    offline.parent.mkdir()
    layout.root_ca_key.rename(offline)
    report = init_pki(layout)
    assert report.created == ()
    assert layout.root_ca_cert.read_bytes() == root
    assert not layout.root_ca_key.exists()
    generate_crls(layout)  # issuing-CA CRLs need no root key
    _verify(layout, layout.broker_chain.read_bytes(), Purpose.SERVICE_TLS)
    # Re-issuing an issuing CA needs the root: refused with a clear message, nothing replaced.
    with pytest.raises(PkiError, match="offline"):
        init_pki(layout, hosts=("localhost", "new.hospital.test"))
    assert layout.root_ca_cert.read_bytes() == root


def test_server_certificate_is_also_an_mqtt_client_but_the_broker_is_not(
    dev_pki: PkiLayout,
) -> None:
    L = dev_pki
    common = (
        "-purpose",
        "sslclient",
        "-CAfile",
        L.root_ca_cert,
        "-untrusted",
        L.ca_cert("service"),
    )
    assert _openssl(*common, L.server_cert).returncode == 0
    assert _openssl(*common, L.broker_cert).returncode != 0
    _verify(L, L.server_chain.read_bytes(), Purpose.SERVICE_TLS)
    with _refused(CertificateReason.WRONG_PURPOSE):
        _verify(L, L.server_chain.read_bytes(), Purpose.GATEWAY_CLIENT)


def test_init_upgrades_a_server_certificate_that_lacks_client_auth(tmp_path: Path) -> None:
    from hospital_server.pki.ca import SERVER_EKU
    from phd_protocol.pki.purpose import leaf_eku

    layout = PkiLayout(tmp_path / "pki")
    init_pki(layout)
    issue_client_certificate(
        layout, "server", ca="service", purpose=Purpose.SERVICE_TLS,
        eku=leaf_eku(Purpose.SERVICE_TLS), sans=("localhost", "127.0.0.1", "::1"),
        cert_path=layout.server_cert, key_path=layout.server_key, chain_path=layout.server_chain,
    )  # fmt: skip
    report = init_pki(layout)
    assert report.created == ("server.crt",)
    eku = load_certificate(layout.server_cert.read_bytes()).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert set(eku.value) == set(SERVER_EKU)


def test_concurrent_issuance_keeps_every_record(fresh_pki: PkiLayout) -> None:
    from concurrent.futures import ThreadPoolExecutor

    names = [f"gw-c{i}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: issue_gateway(fresh_pki, n), names))
    recorded = {r.name for r in load_inventory(fresh_pki)}
    assert set(names) <= recorded
