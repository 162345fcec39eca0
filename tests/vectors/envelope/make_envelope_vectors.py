"""Regenerate envelope_v1.json (run from the repository root; only when the format changes).

    .venv/bin/python tests/vectors/envelope/make_envelope_vectors.py

Fixed inputs: the ingest X25519 private key is RFC 7748 section 6.1's Alice private key; the
EdDSA device key is RFC 8032 section 7.1 TEST 1; the ES256 device key is the P-256 private
scalar of RFC 6979 appendix A.2.5. HPKE encapsulation draws its ephemeral key inside
``cryptography``, so the stored envelopes are one sample each; the tests assert they open to
the stored payload (and, for EdDSA, that re-signing reproduces the stored COSE bytes).
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from phd_protocol import cbor, cose, crypto
from phd_protocol.envelope import (
    IngestKey,
    Payload,
    RawRecord,
    encrypt_signed,
)

INGEST_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
EDDSA_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
P256_SCALAR = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"
DEVICE_ID = "6f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b"
TS = 1768469400000  # 2026-01-15T09:30:00Z
OBSERVATIONS: list[dict[str, Any]] = [
    {
        "id": "3f" * 32,
        "mdc_code": 150020,
        "value": None,
        "unit": "mm[Hg]",
        "unit_mdc": 3872,
        "time": "2026-01-15T09:29:00Z",
        "time_source": "device",
        "components": [
            {"mdc_code": 150021, "value": Decimal("120.5")},
            {"mdc_code": 150022, "value": Decimal("80")},
        ],
        "char": "2A35",
    },
    {
        "id": "a1" * 32,
        "mdc_code": 188736,
        "value": "NaN",
        "unit": "kg",
        "unit_mdc": 1731,
        "time": None,
        "time_source": "agent",
    },
]
RAW = [RawRecord(uuid="2A35", t=TS - 1000, b=bytes.fromhex("1ef1007c00fa00"))]
PHD = {"model": "BP-7000", "system_id": bytes.fromhex("0102030405060708")}


def _keys() -> dict[str, crypto.SigningKey]:
    eddsa = crypto.load_private_key_pem(_pem_ed25519(bytes.fromhex(EDDSA_SEED)))
    es256 = crypto.load_private_key_pem(_pem_p256(int(P256_SCALAR, 16)))
    assert isinstance(eddsa, crypto.SigningKey)
    assert isinstance(es256, crypto.SigningKey)
    return {"EdDSA": eddsa, "ES256": es256}


def _pem_ed25519(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return crypto.private_key_pem(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def _pem_p256(scalar: int) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec

    return crypto.private_key_pem(ec.derive_private_key(scalar, ec.SECP256R1()))


def main() -> None:
    ingest = IngestKey(
        kid=bytes.fromhex("00112233445566778899aabbccddeeff"),
        private_key=crypto.load_x25519_private_raw(bytes.fromhex(INGEST_PRIVATE)),
    )
    cases = []
    for name, key in _keys().items():
        kid = crypto.sha256(f"example {name} device certificate DER".encode())
        payload = Payload.build(
            device_id=DEVICE_ID,
            seq=42,
            ts=TS,
            rcpt=ingest.kid,
            observations=OBSERVATIONS,
            raw=RAW,
            phd=PHD,
        )
        signed = cose.sign1(key, kid=kid, payload=payload.encode())
        cases.append(
            {
                "alg": name,
                "device_key_pem": crypto.private_key_pem(key).decode(),
                "device_kid": kid.hex(),
                "payload_cbor": payload.encode().hex(),
                "cose_sign1": signed.hex(),
                "envelope": encrypt_signed(signed, ingest.recipient).hex(),
            }
        )
    doc = {
        "provenance": __doc__,
        "ingest_kid": ingest.kid.hex(),
        "ingest_private_raw": INGEST_PRIVATE,
        "device_id": DEVICE_ID,
        "seq": 42,
        "ts": TS,
        "observations_cbor": cbor.encode(OBSERVATIONS).hex(),
        "raw": [{"uuid": r.uuid, "t": r.t, "b": r.b.hex()} for r in RAW],
        "phd": {"model": "BP-7000", "system_id": {"hex": "0102030405060708"}},
        "cases": cases,
    }
    out = Path(__file__).with_name("envelope_v1.json")
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
