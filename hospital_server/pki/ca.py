"""The hospital CA: create a PKI directory, issue, revoke, publish CRLs, list what exists.

This module creates the PKI and issues; revocation, CRLs and listing are in
:mod:`hospital_server.pki.crl` and the shared file handling in :mod:`hospital_server.pki.files`,
both re-exported here so that callers have one entry point.

Every file is located through :class:`~hospital_server.pki.layout.PkiLayout`; certificate and
CRL contents come from the pure builders in :mod:`phd_protocol.pki`, keys from
:mod:`phd_protocol.crypto`. This module adds the decisions (validity periods, which CA signs
what, what counts as "already there") and the files. It never logs or prints key material and
never overwrites an existing private key unless ``force`` is set.

Keys: CAs and TLS identities are P-256 (what OpenSSL-based peers such as mosquitto verify
everywhere and quickly); the audit signing key is Ed25519; the ingest key is X25519 (HPKE).
With a passphrase, the CA keys (root and issuing) are encrypted; service keys stay plain
because daemons load them unattended (protect them with file modes and the host).

Entry points: :func:`init_pki`, :func:`issue_gateway`, :func:`issue_client_certificate`,
:func:`issue_device_certificate`, :func:`revoke`, :func:`generate_crls`, :func:`show`.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hospital_server.pki.crl import (
    CRL_NEXT_UPDATE,
    REVOCATION_REASONS,
    ROOT_CRL_NEXT_UPDATE,
    CrlStatus,
    crl_status,
    generate_crls,
    generate_crls_locked,
    revoke,
    show,
)
from hospital_server.pki.errors import (
    PkiError,
    PkiErrorReason,
    PkiNotInitialisedError,
)
from hospital_server.pki.files import (
    BACKDATE,
    CertificateRecord,
    add_records,
    inventory_record,
    issuer,
    load_cert,
    load_inventory,
    load_key,
    now_utc,
    relative,
    same_key,
)
from hospital_server.pki.layout import PkiLayout
from hospital_server.pki.store import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    locked,
    read_json,
    write_atomic,
    write_json,
)
from phd_protocol import crypto
from phd_protocol.enrollment import ingest_key_id
from phd_protocol.pki import (
    CaRole,
    Purpose,
    build_issuing_ca,
    build_leaf,
    build_root_ca,
    certificate_pem,
    certificates_pem,
    csr_public_key,
    load_certificate,
    serial_hex,
)
from phd_protocol.pki.purpose import leaf_eku

__all__ = [
    "CA_DAYS",
    "CRL_NEXT_UPDATE",
    "DEFAULT_HOSTS",
    "DEFAULT_INGEST_WORKERS",
    "DEVICE_DAYS",
    "LEAF_DAYS",
    "REVOCATION_REASONS",
    "ROOT_CRL_NEXT_UPDATE",
    "ROOT_DAYS",
    "SERVER_EKU",
    "CertificateRecord",
    "CrlStatus",
    "InitReport",
    "IssuedCredential",
    "crl_status",
    "generate_crls",
    "init_pki",
    "issue_client_certificate",
    "issue_device_certificate",
    "issue_gateway",
    "load_inventory",
    "revoke",
    "rotate_ingest_key",
    "show",
]

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
DEFAULT_INGEST_WORKERS: tuple[str, ...] = ("ingest-1", "ingest-2")
DEFAULT_ORGANIZATION = "PHD Telemetry Hospital"

ROOT_DAYS = 3650
CA_DAYS = 1825
LEAF_DAYS = 397  # CA/Browser Forum ceiling for TLS leaves; also our gateway default
DEVICE_DAYS = 365
# server.crt: HTTPS server and MQTT client of the broker (control channel).
SERVER_EKU: tuple[x509.ObjectIdentifier, ...] = (
    *leaf_eku(Purpose.SERVICE_TLS),
    ExtendedKeyUsageOID.CLIENT_AUTH,
)

# Gateway and worker names become certificate CNs, MQTT identities and file names.
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True, slots=True)
class InitReport:
    root: Path
    created: tuple[str, ...]  # files written (relative to root)
    kept: tuple[str, ...]  # files that already existed and were left alone


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    cert: Path
    key: Path
    chain: Path
    serial: int


# --------------------------------------------------------------------------- helpers


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise PkiError(
            PkiErrorReason.INVALID_REQUEST,
            "names are 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
        )
    return name


@dataclass(slots=True)
class _Init:
    """Book-keeping of one init run: what was created, what was kept, which keys are fresh."""

    layout: PkiLayout
    passphrase: bytes | None
    force: bool
    now: datetime
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def key(self, path: Path, *, algorithm: int, encrypt: bool) -> tuple[crypto.SigningKey, bool]:
        if path.exists() and not self.force:
            self.kept.append(relative(self.layout, path))
            return load_key(path, self.layout, self.passphrase if encrypt else None), False
        key = crypto.generate_signing_key(algorithm)
        pem = crypto.private_key_pem(key, passphrase=self.passphrase if encrypt else None)
        write_atomic(path, pem, mode=PRIVATE_MODE)
        self.created.append(relative(self.layout, path))
        return key, True

    def cert(
        self,
        path: Path,
        key: crypto.SigningKey,
        *,
        fresh_key: bool,
        issuer_fresh: bool,
        wanted: Any,
        build: Any,
        name: str,
        kind: str,
        ca: str,
    ) -> x509.Certificate:
        cert: x509.Certificate | None = None
        if path.exists() and not fresh_key and not issuer_fresh:
            existing = load_certificate(path.read_bytes())
            if (
                same_key(existing, key)
                and existing.not_valid_after_utc > self.now
                and wanted(existing)
            ):
                cert = existing
                self.kept.append(relative(self.layout, path))
        if cert is None:
            cert = build()
            write_atomic(path, certificate_pem(cert), mode=PUBLIC_MODE)
            self.created.append(relative(self.layout, path))
        self.records.append(inventory_record(self.layout, cert, path, name=name, kind=kind, ca=ca))
        return cert


def _eku_set(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _san_set(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in san}


def _split_hosts(
    hosts: Sequence[str],
) -> tuple[list[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    dns: list[str] = []
    ips: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for h in hosts:
        try:
            ips.append(ipaddress.ip_network(h))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", h):
                raise PkiError(PkiErrorReason.INVALID_REQUEST, "invalid host name") from None
            dns.append(h.lower())
    return dns, ips


def _constraints_match(cert: x509.Certificate, dns: Sequence[str], ips: Sequence[Any]) -> bool:
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return False
    have = {
        str(n.value) for n in nc.permitted_subtrees or () if not isinstance(n, x509.DirectoryName)
    }
    return have == {*dns, *(str(i) for i in ips)}


# --------------------------------------------------------------------------- init


def init_pki(
    layout: PkiLayout,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    passphrase: bytes | None = None,
    force: bool = False,
    now: datetime | None = None,
    organization: str = DEFAULT_ORGANIZATION,
    ingest_workers: Sequence[str] = DEFAULT_INGEST_WORKERS,
) -> InitReport:
    """Create (or complete) a PKI directory; see certs/README.md for every file.

    Idempotent: existing keys are kept unless ``force``; an existing certificate is kept when
    it matches its key, is unexpired and has the wanted names (so adding ``--host`` reissues
    the broker/server certificates and the service CA's constraints under the same keys).
    """
    t = now_utc(now)
    hosts = list(dict.fromkeys(hosts))
    if not hosts:
        raise PkiError(PkiErrorReason.INVALID_REQUEST, "at least one host is needed")
    dns, ips = _split_hosts(hosts)
    for w in ingest_workers:
        _check_name(w)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    with locked(layout.root):
        run = _Init(layout=layout, passphrase=passphrase, force=force, now=t)
        start = t - BACKDATE
        es256 = crypto.COSE_ES256

        root_offline = (
            layout.root_ca_cert.exists() and not layout.root_ca_key.exists() and not force
        )
        root_key: crypto.SigningKey | None
        if root_offline:
            # Production: the root key was moved offline after the first init. Never mint a
            # new root in its place; work with the published root certificate.
            root = load_cert(layout.root_ca_cert, layout)
            root_key = None
            run.kept.append(relative(layout, layout.root_ca_cert))
            run.records.append(
                inventory_record(
                    layout, root, layout.root_ca_cert, name="root-ca", kind="root-ca", ca="root"
                )
            )
        else:
            root_key, root_fresh = run.key(layout.root_ca_key, algorithm=es256, encrypt=True)
            signing_root = root_key
            root = run.cert(
                layout.root_ca_cert,
                root_key,
                fresh_key=root_fresh,
                issuer_fresh=False,
                wanted=lambda c: True,
                build=lambda: build_root_ca(
                    signing_root,
                    organization=organization,
                    common_name="PHD Root CA",
                    not_before=start,
                    not_after=t + timedelta(days=ROOT_DAYS),
                ),
                name="root-ca",
                kind="root-ca",
                ca="root",
            )
        root_changed = relative(layout, layout.root_ca_cert) in run.created

        cas: dict[CaRole, tuple[x509.Certificate, crypto.SigningKey, bool]] = {}
        for role in CaRole:
            key, fresh = run.key(layout.ca_key(role.value), algorithm=es256, encrypt=True)
            path = layout.ca_cert(role.value)

            def build_ca(key: crypto.SigningKey = key, role: CaRole = role) -> x509.Certificate:
                if root_key is None:
                    raise PkiError(
                        PkiErrorReason.INVALID_REQUEST,
                        f"root-ca.key is offline; mount it to issue the {role.value} CA",
                    )
                return build_issuing_ca(
                    key.public_key(),
                    role=role,
                    organization=organization,
                    common_name=f"PHD {role.value.capitalize()} CA",
                    issuer_cert=root,
                    issuer_key=root_key,
                    not_before=start,
                    not_after=t + timedelta(days=CA_DAYS),
                    permitted_dns=dns,
                    permitted_ip=ips,
                )

            def wanted_ca(c: x509.Certificate, role: CaRole = role) -> bool:
                return c.issuer == root.subject and (
                    role is not CaRole.SERVICE or _constraints_match(c, dns, ips)
                )

            cert = run.cert(
                path,
                key,
                fresh_key=fresh,
                issuer_fresh=root_changed,
                wanted=wanted_ca,
                build=build_ca,
                name=f"{role.value}-ca",
                kind="issuing-ca",
                ca="root",
            )
            cas[role] = (cert, key, relative(layout, path) in run.created)

        service_cert, service_key, service_changed = cas[CaRole.SERVICE]
        leaves: list[tuple[str, str, Path, Path, Path, Purpose, Sequence[str]]] = [
            (
                "broker",
                "broker",
                layout.broker_cert,
                layout.broker_key,
                layout.broker_chain,
                Purpose.SERVICE_TLS,
                hosts,
            ),
            (
                "server",
                "server",
                layout.server_cert,
                layout.server_key,
                layout.server_chain,
                Purpose.SERVICE_TLS,
                hosts,
            ),
        ]
        # The hospital server is also an MQTT client of the broker (its control channel), so
        # its certificate adds clientAuth; the broker's does not (it is never a client).
        ekus: dict[str, tuple[x509.ObjectIdentifier, ...]] = {"server": SERVER_EKU}
        leaves += [
            (
                w,
                "ingest-worker",
                layout.ingest_worker_cert(w),
                layout.ingest_worker_key(w),
                layout.ingest_worker_chain(w),
                Purpose.INGEST_CLIENT,
                (),
            )
            for w in ingest_workers
        ]
        for name, kind, cert_path, key_path, chain_path, purpose, sans in leaves:
            key, fresh = run.key(key_path, algorithm=es256, encrypt=False)

            eku = ekus.get(name, leaf_eku(purpose))

            def build_service_leaf(
                key: crypto.SigningKey = key,
                name: str = name,
                purpose: Purpose = purpose,
                sans: Sequence[str] = sans,
                eku: tuple[x509.ObjectIdentifier, ...] = eku,
            ) -> x509.Certificate:
                return build_leaf(
                    key.public_key(),
                    purpose=purpose,
                    common_name=name,
                    issuer_cert=service_cert,
                    issuer_key=service_key,
                    not_before=start,
                    not_after=t + timedelta(days=LEAF_DAYS),
                    sans=sans,
                    eku=eku,
                )

            def wanted_leaf(
                c: x509.Certificate,
                sans: Sequence[str] = sans,
                eku: tuple[x509.ObjectIdentifier, ...] = eku,
            ) -> bool:
                want = {str(ipaddress.ip_address(s)) if _is_ip(s) else s for s in sans}
                return (
                    c.issuer == service_cert.subject
                    and _san_set(c) == want
                    and _eku_set(c) == set(eku)
                )

            leaf = run.cert(
                cert_path,
                key,
                fresh_key=fresh,
                issuer_fresh=service_changed,
                wanted=wanted_leaf,
                build=build_service_leaf,
                name=name,
                kind=kind,
                ca=CaRole.SERVICE.value,
            )
            write_atomic(chain_path, certificates_pem([leaf, service_cert]), mode=PUBLIC_MODE)

        _ensure_audit_key(run)
        _ensure_ingest_key(run)
        _write_bundles(layout, root, {r: c for r, (c, _, _) in cas.items()})
        add_records(layout, run.records)
        if not layout.revocations.exists():
            write_json(layout.revocations, {"revoked": [], "crl_numbers": {}})
        generate_crls_locked(layout, t, passphrase, root_key=root_key, cas=cas)
    return InitReport(root=layout.root, created=tuple(run.created), kept=tuple(run.kept))


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _ensure_audit_key(run: _Init) -> None:
    layout = run.layout
    key, _fresh = run.key(layout.audit_signing_key, algorithm=crypto.COSE_EDDSA, encrypt=False)
    write_atomic(layout.audit_verify_key, crypto.public_key_pem(key.public_key()), mode=PUBLIC_MODE)


def _ensure_ingest_key(run: _Init) -> None:
    layout = run.layout
    path = layout.ingest_hpke_key
    keyring = read_json(layout.ingest_keyring, [])
    if path.exists() and not run.force and keyring:
        run.kept.append(relative(layout, path))
        return
    key = crypto.generate_hpke_key()
    write_atomic(path, crypto.private_key_pem(key), mode=PRIVATE_MODE)
    public = crypto.x25519_public_raw(key)
    # The entry of the key file being replaced (by --force) goes with it; entries of older,
    # rotated-out keys stay so envelopes sealed to them can still be opened.
    entries = [e for e in keyring if isinstance(e, dict) and e.get("private_file") != path.name]
    entries.append(
        {
            "kid": ingest_key_id(public).hex(),
            "public": public.hex(),
            "private_file": path.name,
            "status": "active",
            "created": run.now.isoformat(),
        }
    )
    write_json(layout.ingest_keyring, entries)
    run.created.append(relative(layout, path))


def rotate_ingest_key(layout: PkiLayout, *, now: datetime | None = None) -> str:
    """Start an ingest key rotation; returns the new kid (hex).

    The current key file is renamed to ``ingest-hpke-<kid>.key`` and marked ``retiring`` (ingest
    still opens envelopes sealed to it); a new key becomes ``active`` at the standard path.
    Agents learn the new key at their next enrollment/renewal; once no envelope sealed to the
    old key can still arrive, mark it ``retired`` (kept for re-reading quarantined envelopes).
    """
    t = now_utc(now)
    with locked(layout.root):
        keyring = read_json(layout.ingest_keyring, None)
        if not isinstance(keyring, list) or not layout.ingest_hpke_key.exists():
            raise PkiNotInitialisedError("no ingest key ring; run `phd pki init`")
        for entry in keyring:
            if entry.get("status") == "active":
                old_name = f"ingest-hpke-{entry['kid'][:16]}.key"
                old = layout.ingest_hpke_key.with_name(old_name)
                write_atomic(old, layout.ingest_hpke_key.read_bytes(), mode=PRIVATE_MODE)
                entry["private_file"] = old_name
                entry["status"] = "retiring"
        key = crypto.generate_hpke_key()
        write_atomic(layout.ingest_hpke_key, crypto.private_key_pem(key), mode=PRIVATE_MODE)
        public = crypto.x25519_public_raw(key)
        kid = ingest_key_id(public).hex()
        keyring.append(
            {
                "kid": kid,
                "public": public.hex(),
                "private_file": layout.ingest_hpke_key.name,
                "status": "active",
                "created": t.isoformat(),
            }
        )
        write_json(layout.ingest_keyring, keyring)
    return kid


def _write_bundles(
    layout: PkiLayout, root: x509.Certificate, cas: dict[CaRole, x509.Certificate]
) -> None:
    write_atomic(
        layout.ca_bundle,
        certificates_pem([root, *(cas[r] for r in CaRole)]),
        mode=PUBLIC_MODE,
    )
    write_atomic(
        layout.client_ca_bundle,
        certificates_pem([root, cas[CaRole.GATEWAY], cas[CaRole.SERVICE]]),
        mode=PUBLIC_MODE,
    )


# --------------------------------------------------------------------------- issuance


def issue_client_certificate(
    layout: PkiLayout,
    name: str,
    *,
    ca: CaRole | str = CaRole.GATEWAY,
    purpose: Purpose = Purpose.GATEWAY_CLIENT,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    sans: Sequence[str] = (),
    now: datetime | None = None,
    days: int = LEAF_DAYS,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    passphrase: bytes | None = None,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    chain_path: Path | None = None,
    kind: str = "extra",
) -> IssuedCredential:
    """Issue a key pair and certificate from an issuing CA, with every knob exposed.

    For operators' one-off clients and for tests that need odd certificates: expired or
    not-yet-valid (``not_before``/``not_after``), the wrong EKU (``eku``), the wrong CA
    (``ca``). Files default to ``extra/NAME.{crt,key}`` and ``extra/NAME-chain.crt``. A rogue
    CA is simply another PKI directory: ``init_pki(PkiLayout(tmp))`` then issue from it.
    """
    role = CaRole(ca)
    _check_name(name)
    t = now_utc(now)
    start = not_before or (t - BACKDATE)
    end = not_after or (t + timedelta(days=days))
    if end <= start:
        raise PkiError(PkiErrorReason.INVALID_REQUEST, "not_after must be after not_before")
    cert_path = cert_path or layout.extra_cert(name)
    key_path = key_path or layout.extra_key(name)
    chain_path = chain_path or layout.extra_chain(name)
    with locked(layout.root):
        issuer_cert, issuer_key = issuer(layout, role, passphrase)
        key = crypto.generate_signing_key(crypto.COSE_ES256)
        cert = build_leaf(
            key.public_key(),
            purpose=purpose,
            common_name=name,
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            not_before=start,
            not_after=end,
            sans=sans,
            role=role,
            eku=eku,
        )
        write_atomic(key_path, crypto.private_key_pem(key), mode=PRIVATE_MODE)
        write_atomic(cert_path, certificate_pem(cert), mode=PUBLIC_MODE)
        write_atomic(chain_path, certificates_pem([cert, issuer_cert]), mode=PUBLIC_MODE)
        add_records(
            layout, [inventory_record(layout, cert, cert_path, name=name, kind=kind, ca=role.value)]
        )
    return IssuedCredential(
        cert=cert_path, key=key_path, chain=chain_path, serial=cert.serial_number
    )


def issue_gateway(
    layout: PkiLayout,
    name: str,
    *,
    now: datetime | None = None,
    days: int = LEAF_DAYS,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    passphrase: bytes | None = None,
) -> Path:
    """Issue ``gateways/NAME.{crt,key}`` and ``NAME-chain.crt``; CN = NAME = MQTT identity.

    Re-issuing a name replaces its files with a new key (the old certificate stays valid until
    revoked: revoke it with ``phd pki revoke`` when the gateway is replaced, not renewed).
    """
    issued = issue_client_certificate(
        layout,
        name,
        ca=CaRole.GATEWAY,
        purpose=Purpose.GATEWAY_CLIENT,
        now=now,
        days=days,
        not_before=not_before,
        not_after=not_after,
        passphrase=passphrase,
        cert_path=layout.gateway_cert(name),
        key_path=layout.gateway_key(name),
        chain_path=layout.gateway_chain(name),
        kind="gateway",
    )
    return issued.cert


def issue_device_certificate(
    layout: PkiLayout,
    csr_pem: bytes,
    device_id: uuid.UUID,
    *,
    now: datetime | None = None,
    days: int = DEVICE_DAYS,
    passphrase: bytes | None = None,
) -> tuple[bytes, bytes]:
    """Certify the key in a device CSR (proof of possession checked) for ``device_id``.

    Returns ``(certificate_pem, chain_pem)`` where the chain is leaf + device CA. The subject
    is ``CN=<device id>``; nothing about the patient or the PHD enters the certificate. The
    caller (the enrollment endpoint) has already redeemed the one-time code. Raises
    :class:`phd_protocol.pki.CertificateError` (``bad_csr``/``unsupported_key``) for a bad CSR.
    """
    public = csr_public_key(csr_pem)
    t = now_utc(now)
    with locked(layout.root):
        issuer_cert, issuer_key = issuer(layout, CaRole.DEVICE, passphrase)
        cert = build_leaf(
            public,
            purpose=Purpose.DEVICE_CREDENTIAL,
            common_name=str(device_id),
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            not_before=t - BACKDATE,
            not_after=t + timedelta(days=days),
        )
        path = layout.device_cert(f"{device_id}-{serial_hex(cert)}")
        write_atomic(path, certificate_pem(cert), mode=PUBLIC_MODE)
        add_records(
            layout,
            [inventory_record(layout, cert, path, name=str(device_id), kind="device", ca="device")],
        )
    return certificate_pem(cert), certificates_pem([cert, issuer_cert])
