"""Shared makers for the envelope tests (no tests here): keys, signers, sample batches.

Observation dicts have the shape of ``Observation.to_wire()`` (docs/ARCHITECTURE.md
"Observation wire dict"); the envelope layer treats them as bounded maps.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from phd_protocol import crypto
from phd_protocol.envelope import DeviceSigner, IngestKey, KeyRing, RawRecord, RecipientKey
from phd_protocol.policy import CredentialRecord

DEVICE_ID = "6f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b"
T0 = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def ingest_kid(n: int) -> bytes:
    return bytes([n]) * 16


def blood_pressure(i: int) -> dict[str, Any]:
    return {
        "id": f"{i:064x}",
        "mdc_code": 150020,
        "value": None,
        "unit": "mm[Hg]",
        "unit_mdc": 3872,
        "time": f"2026-01-15T09:2{i % 10}:00Z",
        "time_source": "device",
        "loinc": "85354-9",
        "device_time": f"2026-01-15T09:1{i % 10}:00Z",
        "clock_corrected": True,
        "flags": ["irregular_pulse"],
        "components": [
            {"mdc_code": 150021, "value": Decimal("120.5"), "loinc": "8480-6"},
            {"mdc_code": 150022, "value": Decimal("80"), "loinc": "8462-4"},
            {"mdc_code": 150023, "value": Decimal("93.5"), "loinc": "8478-0"},
        ],
        "char": "2A35",
    }


def glucose(i: int) -> dict[str, Any]:
    return {
        "id": f"{i + 1000:064x}",
        "mdc_code": 160184,
        "value": Decimal("5.4"),
        "unit": "mmol/L",
        "unit_mdc": 4722,
        "time": f"2026-01-15T08:0{i % 10}:00Z",
        "time_source": "device",
        "char": "2A18",
    }


def sample_observations(n: int = 10) -> list[dict[str, Any]]:
    return [blood_pressure(i) if i % 2 else glucose(i) for i in range(n)]


def sample_raw(n: int = 10) -> list[RawRecord]:
    return [RawRecord(uuid="2A35", t=T0_MS - i, b=bytes(range(19))) for i in range(n)]


SAMPLE_PHD = {"model": "BP-7000", "manufacturer": "Example", "system_id": b"\x01" * 8}


@dataclass(frozen=True)
class Party:
    """A device credential and the hospital record of it."""

    signer: DeviceSigner
    record: CredentialRecord


def make_party(
    alg: int = crypto.COSE_EDDSA,
    *,
    device_id: str = DEVICE_ID,
    key: crypto.SigningKey | None = None,
    revoked_at: datetime | None = None,
    enrollment_ended_at: datetime | None = None,
    not_before: datetime = T0 - timedelta(days=30),
    not_after: datetime = T0 + timedelta(days=365),
) -> Party:
    key = key or crypto.generate_signing_key(alg)
    kid = crypto.sha256(b"certificate of " + uuid.uuid4().bytes)
    signer = DeviceSigner(device_id=device_id, kid=kid, key=key)
    record = CredentialRecord(
        kid=kid,
        device_id=device_id,
        public_key=key.public_key(),
        not_before=not_before,
        not_after=not_after,
        revoked_at=revoked_at,
        enrollment_ended_at=enrollment_ended_at,
    )
    return Party(signer=signer, record=record)


def make_ingest(n: int = 1) -> IngestKey:
    return IngestKey(kid=ingest_kid(n), private_key=crypto.generate_hpke_key())


def ring(*keys: IngestKey) -> KeyRing:
    return KeyRing(keys)


def recipient(key: IngestKey) -> RecipientKey:
    return key.recipient
