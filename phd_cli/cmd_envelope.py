"""``phd envelope seal|open``: build or diagnose an Envelope v1 by hand (operator tool).

``seal`` signs a JSON batch of observations with a device credential directory as the agent
stores it and encrypts it to a hospital ingest key. ``open`` decrypts with one or more ingest
private keys, checks the signature against device certificates chained to a trust file, and
prints the verified payload as JSON (exit 0), or prints only the reason code (exit 2), the
same code the hospital would put in its ack. Exit 1 means the tool itself could not run (a
missing file, a bad key); it never prints key material.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phd_protocol.envelope import DeviceSigner, IngestKey, RecipientKey
    from phd_protocol.policy import CredentialRecord

EXIT_OK = 0
EXIT_TOOL_ERROR = 1
EXIT_REJECTED = 2
MAX_INPUT_BYTES = 4 * 1024 * 1024


class ToolError(Exception):
    """The tool cannot run (files, keys, arguments); the message is safe to print."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("envelope", help="seal or open an Envelope v1 by hand (diagnosis)")
    cmds = p.add_subparsers(dest="envelope_command", metavar="ACTION", required=True)

    s = cmds.add_parser("seal", help="sign a JSON batch with a device credential; encrypt it")
    s.add_argument("--credential", type=Path, required=True, help="agent credential directory")
    s.add_argument(
        "--recipient",
        type=Path,
        help="hospital ingest public key: ingest-keys.json ({'keys': [{kid, public_key}]}), "
        "the PKI keyring.json, or an X25519 public key PEM (default: the credential's "
        "ingest-keys.json); the first key listed is used",
    )
    s.add_argument("--in", dest="input", type=Path, required=True, help="batch.json")
    s.add_argument("--out", type=Path, required=True, help="where to write the envelope")
    s.add_argument(
        "--seq",
        type=int,
        required=True,
        help="sequence number to seal with; must exceed every seq this credential has used "
        "(the agent's state.json is not advanced: use a value above its seq_reserved)",
    )
    s.set_defaults(handler=run_seal)

    o = cmds.add_parser("open", help="decrypt and verify an envelope; print it or its reason")
    o.add_argument(
        "--ingest-key",
        type=Path,
        action="append",
        required=True,
        help="ingest X25519 private key PEM; repeat for a key ring during rotation",
    )
    o.add_argument("--trust", type=Path, required=True, help="root (or CA bundle) PEM")
    o.add_argument(
        "--device-certs",
        type=Path,
        required=True,
        help="directory of device certificates (*.crt, PEM; chain files accepted)",
    )
    o.add_argument("--crl", type=Path, action="append", help="CRL PEM to check revocation against")
    o.add_argument("--in", dest="input", type=Path, required=True, help="envelope file")
    o.add_argument("--max-age-days", type=float, default=30.0, help="oldest accepted sealing time")
    o.set_defaults(handler=run_open)


# --------------------------------------------------------------------------- files


def _read(path: Path, limit: int = MAX_INPUT_BYTES) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ToolError(f"{path} is larger than {limit} bytes")
    return data


@dataclass(frozen=True)
class CredentialDir:
    signer: DeviceSigner
    recipients: tuple[RecipientKey, ...]


def read_credential_dir(directory: Path) -> CredentialDir:
    """The agent's credential directory (device_agent/store.py documents the layout):
    ``device.key`` (PKCS#8 PEM), ``device.crt`` and ``ingest-keys.json``."""
    from phd_protocol import crypto, pki
    from phd_protocol.envelope import DeviceSigner

    try:
        key = crypto.load_private_key_pem(_read(directory / "device.key"))
    except ValueError as exc:
        raise ToolError(f"{directory}/device.key: {exc}") from None
    if not isinstance(key, crypto.SigningKey):
        raise ToolError(f"{directory}/device.key is not a signing key")
    cert = pki.load_certificate(_read(directory / "device.crt"))
    record = _record_from_cert(cert)
    signer = DeviceSigner(device_id=record.device_id, kid=record.kid, key=key)
    if crypto.public_key_pem(key.public_key()) != crypto.public_key_pem(record.public_key):
        raise ToolError(f"{directory}: device.key does not match device.crt")
    path = directory / "ingest-keys.json"
    recipients = _recipients_from_json(_read(path), path) if path.exists() else ()
    return CredentialDir(signer=signer, recipients=recipients)


def _recipients_from_json(data: bytes, path: Path) -> tuple[RecipientKey, ...]:
    from phd_protocol.envelope import RecipientKey

    try:
        doc = json.loads(data)
        entries = doc["keys"] if isinstance(doc, dict) else doc
        out = []
        for entry in entries:
            if entry.get("status", "active") == "retired":
                continue
            public = entry.get("public_key", entry.get("public"))
            out.append(RecipientKey.from_raw(bytes.fromhex(entry["kid"]), bytes.fromhex(public)))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ToolError(f"{path}: not an ingest key list") from None
    if not out:
        raise ToolError(f"{path}: no usable ingest key")
    return tuple(out)


def read_recipient(path: Path) -> RecipientKey:
    from phd_protocol import crypto
    from phd_protocol.enrollment import ingest_key_id
    from phd_protocol.envelope import RecipientKey

    data = _read(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            public = crypto.load_public_key_pem(data)
            raw = crypto.x25519_public_raw(public)  # type: ignore[arg-type] # checked below
        except (ValueError, TypeError, AttributeError):
            raise ToolError(f"{path}: not an X25519 public key PEM") from None
        return RecipientKey.from_raw(ingest_key_id(raw), raw)
    return _recipients_from_json(data, path)[0]


def read_ingest_key(path: Path) -> IngestKey:
    from phd_protocol import crypto
    from phd_protocol.enrollment import ingest_key_id
    from phd_protocol.envelope import IngestKey

    try:
        key = crypto.load_private_key_pem(_read(path))
    except ValueError as exc:
        raise ToolError(f"{path}: {exc}") from None
    if isinstance(key, crypto.SigningKey):
        raise ToolError(f"{path}: not an X25519 (HPKE) private key")
    return IngestKey(kid=ingest_key_id(crypto.x25519_public_raw(key)), private_key=key)


def _record_from_cert(cert: Any) -> CredentialRecord:
    from phd_protocol.policy import credential_from_certificate

    try:
        return credential_from_certificate(cert)
    except ValueError as exc:
        raise ToolError(f"not a device certificate: {exc}") from None


# --------------------------------------------------------------------------- JSON


def _wire_numbers(obs: Any) -> Any:
    """``phd decode`` prints Decimals as JSON numbers; whole ones parse back as int."""
    if isinstance(obs, dict):
        out = {k: _wire_numbers(v) for k, v in obs.items()}
        if type(out.get("value")) is int:
            out["value"] = Decimal(out["value"])
        return out
    if isinstance(obs, list):
        return [_wire_numbers(v) for v in obs]
    return obs


def read_batch(path: Path) -> list[dict[str, Any]]:
    from phd_protocol.errors import ParseError
    from phd_protocol.observation import Observation

    try:
        batch = json.loads(_read(path), parse_float=Decimal)
    except ValueError:
        raise ToolError(f"{path}: not JSON") from None
    if not isinstance(batch, list):
        raise ToolError(f"{path}: expected a JSON list of observations")
    out = []
    for index, item in enumerate(batch):
        try:
            out.append(Observation.from_wire(_wire_numbers(item)).to_wire())
        except ParseError as exc:
            raise ToolError(f"{path}: observation {index}: {exc}") from None
    return out


def to_json(value: Any) -> str:
    """JSON with Decimals as exact numbers and bytes as hex strings."""
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}: {to_json(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value))
    if isinstance(value, bytes):
        return json.dumps(value.hex())
    return json.dumps(value)


# --------------------------------------------------------------------------- seal


def run_seal(args: argparse.Namespace) -> int:
    from phd_protocol.envelope import EnvelopeError, seal

    try:
        credential = read_credential_dir(args.credential)
        if args.recipient is not None:
            recipient = read_recipient(args.recipient)
        elif credential.recipients:
            recipient = credential.recipients[0]
        else:
            raise ToolError("no --recipient and no ingest-keys.json in the credential")
        observations = read_batch(args.input)
        envelope = seal(
            signer=credential.signer,
            recipient=recipient,
            seq=args.seq,
            observations=observations,
        )
        args.out.write_bytes(envelope)
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    except EnvelopeError as exc:
        print(exc.reason.value)
        return EXIT_REJECTED
    except ValueError as exc:  # e.g. seq out of range; messages name fields only
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    print(
        f"sealed {len(observations)} observation(s), seq {args.seq}, "
        f"{len(envelope)} bytes, recipient kid {recipient.kid.hex()} -> {args.out}",
        file=sys.stderr,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- open


@dataclass(frozen=True)
class _Trust:
    anchors: list[Any]
    intermediates: list[Any]
    leaves: dict[bytes, Any]
    crls: list[Any] | None


def _load_trust(args: argparse.Namespace) -> _Trust:
    from phd_protocol import pki

    try:
        trusted = pki.load_certificates(_read(args.trust))
    except pki.CertificateError:
        raise ToolError(f"{args.trust}: no PEM certificates") from None
    anchors = [c for c in trusted if c.subject == c.issuer]
    intermediates = [c for c in trusted if c.subject != c.issuer]
    leaves: dict[bytes, Any] = {}
    if not args.device_certs.is_dir():
        raise ToolError(f"{args.device_certs} is not a directory")
    for path in sorted(args.device_certs.glob("*.crt")):
        try:
            certs = pki.load_certificates(_read(path))
        except pki.CertificateError:
            continue  # not a certificate file: skip, as a directory listing may hold others
        leaves[pki.certificate_kid(certs[0])] = certs[0]
        intermediates.extend(certs[1:])
    crls = None
    if args.crl:
        crls = []
        for path in args.crl:
            try:
                crls.extend(pki.load_crls(_read(path)))
            except pki.CertificateError:
                raise ToolError(f"{path}: no PEM CRLs") from None
    return _Trust(anchors=anchors, intermediates=intermediates, leaves=leaves, crls=crls)


def _chain_reason(trust: _Trust, cert: Any, sealed_ms: int) -> Any:
    """Full chain check at the sealing time; the RejectReason, or None when it passes."""
    from phd_protocol import pki
    from phd_protocol.errors import RejectReason

    at = datetime.fromtimestamp(sealed_ms / 1000, tz=UTC)
    try:
        pki.verify_chain(
            cert,
            intermediates=trust.intermediates,
            anchors=trust.anchors,
            purpose=pki.Purpose.DEVICE_CREDENTIAL,
            at=at,
            crls=trust.crls,
        )
    except pki.CertificateError as exc:
        reason = pki.CertificateReason
        if exc.reason is reason.REVOKED:
            return RejectReason.CREDENTIAL_REVOKED
        if exc.reason in {reason.EXPIRED, reason.NOT_YET_VALID}:
            return RejectReason.CREDENTIAL_EXPIRED
        return RejectReason.UNKNOWN_CREDENTIAL
    return None


def run_open(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from phd_protocol.envelope import EnvelopeError, KeyRing
    from phd_protocol.policy import VerificationPolicy, open_and_verify

    try:
        ring = KeyRing([read_ingest_key(p) for p in args.ingest_key])
        trust = _load_trust(args)
        data = _read(args.input)
        records = {kid: _record_from_cert(cert) for kid, cert in trust.leaves.items()}
    except (ToolError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    try:
        verified = open_and_verify(
            data,
            keyring=ring,
            credentials=records.get,
            received_at=datetime.now(UTC),
            policy=VerificationPolicy(
                max_age=timedelta(days=args.max_age_days), max_future=timedelta(minutes=5)
            ),
        )
    except EnvelopeError as exc:
        print(exc.reason.value)
        return EXIT_REJECTED
    payload = verified.payload
    reason = _chain_reason(trust, trust.leaves[verified.credential.kid], payload.ts)
    if reason is not None:
        print(reason.value)
        return EXIT_REJECTED
    print(
        to_json(
            {
                "recipient_kid": verified.recipient_kid,
                "credential_kid": verified.credential.kid,
                "alg": verified.alg,
                "v": 1,
                "dev": payload.device_id,
                "seq": payload.seq,
                "ts": payload.ts,
                "phd": dict(payload.phd),
                "obs": list(verified.observations),
                "raw": [{"uuid": r.uuid, "t": r.t, "b": r.b} for r in verified.raw],
            }
        )
    )
    return EXIT_OK
