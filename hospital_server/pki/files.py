"""The CA's files, read and written: keys, certificates, the inventory, the revocation list.

Shared by :mod:`hospital_server.pki.ca` (creating the PKI, issuing) and
:mod:`hospital_server.pki.crl` (revoking, publishing CRLs, listing). Every path comes from
:class:`~hospital_server.pki.layout.PkiLayout`; errors name files relative to the PKI root and
never carry key material.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography import x509

from hospital_server.pki.errors import (
    PkiError,
    PkiErrorReason,
    PkiNotInitialisedError,
    PkiPassphraseError,
)
from hospital_server.pki.layout import PkiLayout
from hospital_server.pki.store import read_json, write_json
from phd_protocol import crypto
from phd_protocol.pki import (
    CaRole,
    certificate_public_key,
    fingerprint,
    load_certificate,
    serial_hex,
)

__all__ = [
    "BACKDATE",
    "CertificateRecord",
    "add_records",
    "inventory_record",
    "inventory_rows",
    "issuer",
    "load_cert",
    "load_inventory",
    "load_key",
    "now_utc",
    "relative",
    "revocations",
    "same_key",
]

# Every validity period we write starts this much in the past: peers' clocks differ a little.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """One row of ``inventory.json`` with its revocation status."""

    name: str
    kind: str  # root-ca, issuing-ca, broker, server, ingest-worker, gateway, device, extra
    ca: str  # issuing CA role, or "root" for the root and the issuing CAs
    serial: int
    subject: str
    not_before: datetime
    not_after: datetime
    fingerprint: str
    file: str
    revoked_at: datetime | None = None
    revocation_reason: str | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if now > self.not_after:
            return "expired"
        if now < self.not_before:
            return "not yet valid"
        return "valid"


def now_utc(now: datetime | None) -> datetime:
    t = now or datetime.now(UTC)
    if t.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return t.astimezone(UTC)


def relative(layout: PkiLayout, path: Path) -> str:
    return str(path.relative_to(layout.root))


def load_key(path: Path, layout: PkiLayout, passphrase: bytes | None) -> crypto.SigningKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiNotInitialisedError(
            f"{relative(layout, path)} is missing; run `phd pki init`"
        ) from exc
    try:
        key = crypto.load_private_key_pem(data, passphrase=passphrase)
    except ValueError as exc:
        try:  # CA keys are encrypted, service keys are not: retry without the passphrase
            key = crypto.load_private_key_pem(data)
        except ValueError:
            raise PkiPassphraseError(
                f"{relative(layout, path)}: wrong or missing passphrase"
            ) from exc
    if not hasattr(key, "sign"):  # an X25519 key agrees but cannot sign
        raise PkiError(PkiErrorReason.CORRUPT, f"{relative(layout, path)} is not a signing key")
    return cast("crypto.SigningKey", key)


def load_cert(path: Path, layout: PkiLayout) -> x509.Certificate:
    try:
        return load_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise PkiNotInitialisedError(
            f"{relative(layout, path)} is missing; run `phd pki init`"
        ) from exc


def same_key(cert: x509.Certificate, key: crypto.SigningKey) -> bool:
    return crypto.public_key_pem(key.public_key()) == crypto.public_key_pem(
        certificate_public_key(cert)
    )


def issuer(
    layout: PkiLayout, role: CaRole, passphrase: bytes | None
) -> tuple[x509.Certificate, crypto.SigningKey]:
    cert = load_cert(layout.ca_cert(role.value), layout)
    key = load_key(layout.ca_key(role.value), layout, passphrase)
    if not same_key(cert, key):
        raise PkiError(PkiErrorReason.CORRUPT, f"{role.value} CA certificate and key differ")
    return cert, key


def inventory_record(
    layout: PkiLayout, cert: x509.Certificate, path: Path, *, name: str, kind: str, ca: str
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "ca": ca,
        "serial": serial_hex(cert),
        "subject": cert.subject.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "fingerprint": fingerprint(cert),
        "file": relative(layout, path),
    }


def inventory_rows(layout: PkiLayout) -> list[dict[str, Any]]:
    data = read_json(layout.inventory, {"certificates": []})
    certs = data.get("certificates") if isinstance(data, dict) else None
    if not isinstance(certs, list):
        raise PkiError(PkiErrorReason.CORRUPT, "inventory.json has no certificate list")
    return certs


def add_records(layout: PkiLayout, records: Sequence[dict[str, Any]]) -> None:
    certs = inventory_rows(layout)
    known = {(r["ca"], r["serial"]) for r in certs}
    certs.extend(r for r in records if (r["ca"], r["serial"]) not in known)
    write_json(layout.inventory, {"certificates": certs})


def revocations(layout: PkiLayout) -> dict[str, Any]:
    data = read_json(layout.revocations, {"revoked": [], "crl_numbers": {}})
    if not isinstance(data, dict) or not isinstance(data.get("revoked"), list):
        raise PkiError(PkiErrorReason.CORRUPT, "revocations.json is malformed")
    data.setdefault("crl_numbers", {})
    return data


def load_inventory(layout: PkiLayout) -> list[CertificateRecord]:
    """Every issued certificate with its revocation status (from the JSON indexes)."""
    if not layout.inventory.exists():
        raise PkiNotInitialisedError("inventory.json is missing; run `phd pki init`")
    revoked = {(e["ca"], int(e["serial"], 16)): e for e in revocations(layout)["revoked"]}
    out: list[CertificateRecord] = []
    for r in inventory_rows(layout):
        try:
            serial = int(r["serial"], 16)
            rev = revoked.get((r["ca"], serial))
            out.append(
                CertificateRecord(
                    name=str(r["name"]),
                    kind=str(r["kind"]),
                    ca=str(r["ca"]),
                    serial=serial,
                    subject=str(r["subject"]),
                    not_before=datetime.fromisoformat(r["not_before"]),
                    not_after=datetime.fromisoformat(r["not_after"]),
                    fingerprint=str(r["fingerprint"]),
                    file=str(r["file"]),
                    revoked_at=None if rev is None else datetime.fromisoformat(rev["revoked_at"]),
                    revocation_reason=None if rev is None else str(rev["reason"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PkiError(PkiErrorReason.CORRUPT, "inventory.json entry is malformed") from exc
    return out
