"""Envelope v1 known answers: stored envelopes (fixed keys, see the vector's provenance) open
to the stored payload; EdDSA signing reproduces the stored COSE bytes exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from phd_protocol import cbor, cose, crypto
from phd_protocol.envelope import EnvelopeError, IngestKey, KeyRing, open_envelope
from phd_protocol.errors import RejectReason
from phd_protocol.policy import CredentialRecord, open_and_verify

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "envelope" / "envelope_v1.json").read_text("utf-8")
)
INGEST = IngestKey(
    kid=bytes.fromhex(VECTORS["ingest_kid"]),
    private_key=crypto.load_x25519_private_raw(bytes.fromhex(VECTORS["ingest_private_raw"])),
)
SEALED_AT = datetime.fromtimestamp(VECTORS["ts"] / 1000, tz=UTC)


def _record(case: dict[str, Any]) -> CredentialRecord:
    key = crypto.load_private_key_pem(case["device_key_pem"].encode())
    assert isinstance(key, crypto.SigningKey)
    return CredentialRecord(
        kid=bytes.fromhex(case["device_kid"]),
        device_id=VECTORS["device_id"],
        public_key=key.public_key(),
        not_before=SEALED_AT - timedelta(days=1),
        not_after=SEALED_AT + timedelta(days=1),
    )


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["alg"])
def test_stored_envelope_opens_to_the_stored_payload(case: dict[str, Any]) -> None:
    record = _record(case)
    verified = open_and_verify(
        bytes.fromhex(case["envelope"]),
        keyring=KeyRing([INGEST]),
        credentials={record.kid: record}.get,
        received_at=SEALED_AT + timedelta(minutes=1),
    )
    payload = verified.payload
    assert payload.encode().hex() == case["payload_cbor"]
    assert (payload.device_id, payload.seq, payload.ts) == (
        VECTORS["device_id"],
        VECTORS["seq"],
        VECTORS["ts"],
    )
    assert payload.rcpt == INGEST.kid
    assert cbor.encode(list(verified.observations)).hex() == VECTORS["observations_cbor"]
    assert [(r.uuid, r.t, r.b.hex()) for r in verified.raw] == [
        (r["uuid"], r["t"], r["b"]) for r in VECTORS["raw"]
    ]
    assert payload.phd["system_id"] == bytes.fromhex(VECTORS["phd"]["system_id"]["hex"])
    opened = open_envelope(bytes.fromhex(case["envelope"]), KeyRing([INGEST]))
    assert opened.message.payload.hex() == case["payload_cbor"]


def test_eddsa_cose_layer_is_reproducible() -> None:
    case = next(c for c in VECTORS["cases"] if c["alg"] == "EdDSA")
    key = crypto.load_private_key_pem(case["device_key_pem"].encode())
    assert isinstance(key, crypto.SigningKey)
    signed = cose.sign1(
        key, kid=bytes.fromhex(case["device_kid"]), payload=bytes.fromhex(case["payload_cbor"])
    )
    assert signed.hex() == case["cose_sign1"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["alg"])
def test_stored_envelope_refused_by_another_ingest_key(case: dict[str, Any]) -> None:
    other = IngestKey(kid=INGEST.kid, private_key=crypto.generate_hpke_key())
    with pytest.raises(EnvelopeError) as info:
        open_envelope(bytes.fromhex(case["envelope"]), KeyRing([other]))
    assert info.value.reason is RejectReason.DECRYPT_FAILED
