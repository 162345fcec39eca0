"""What is inside the encrypted ingest columns, and the one place that seals and opens them.

``observation.value_ct`` is one AES-256-GCM ciphertext (:mod:`hospital_server.fieldcrypt`,
associated data ``observation | value | row id | patient id``) over the compact CBOR
(:mod:`phd_protocol.cbor`) of the observation wire dict exactly as the device signed it, after
``Observation.from_wire`` accepted it: every clinical field of the row (value, components,
unit, flags, device time, content id) in one AEAD. ``ingested_envelope.raw_ct`` is the CBOR
map ``{"raw": [{"uuid", "t", "b"}...], "phd": {...}}`` (raw characteristic bytes and PHD
information), sealed the same way with column ``raw``.

Readers use :func:`open_observation` (which re-validates through ``from_wire``) or
:func:`open_raw`. Never log what these return.
"""

from __future__ import annotations

from typing import Any, cast

from hospital_server.fieldcrypt import decrypt_field, encrypt_field
from phd_protocol import cbor
from phd_protocol.errors import ParseError
from phd_protocol.observation import Observation

__all__ = [
    "RecordError",
    "open_observation",
    "open_observation_wire",
    "open_raw",
    "seal_observation",
    "seal_raw",
]

_OBS_TABLE, _OBS_COLUMN = "observation", "value"
_ENV_TABLE, _RAW_COLUMN = "ingested_envelope", "raw"


class RecordError(Exception):
    """A decrypted record is not the CBOR shape it must be (a bug or a foreign writer)."""


def seal_observation(key: bytes, wire: dict[str, Any], *, row_id: str, patient_id: str) -> bytes:
    return encrypt_field(
        key,
        cbor.encode(wire),
        table=_OBS_TABLE,
        column=_OBS_COLUMN,
        row_id=row_id,
        patient_id=patient_id,
    )


def open_observation_wire(
    key: bytes, blob: bytes, *, row_id: str, patient_id: str
) -> dict[str, Any]:
    """The stored wire dict; FieldDecryptError if moved, tampered or crypto-shredded."""
    plain = decrypt_field(
        key, blob, table=_OBS_TABLE, column=_OBS_COLUMN, row_id=row_id, patient_id=patient_id
    )
    try:
        wire = cbor.decode(plain)
    except ParseError as exc:
        raise RecordError("observation.value: not CBOR") from exc
    if not isinstance(wire, dict) or not all(isinstance(k, str) for k in wire):
        raise RecordError("observation.value: not a map with text keys")
    return cast("dict[str, Any]", wire)


def open_observation(key: bytes, blob: bytes, *, row_id: str, patient_id: str) -> Observation:
    wire = open_observation_wire(key, blob, row_id=row_id, patient_id=patient_id)
    try:
        return Observation.from_wire(wire)
    except ParseError as exc:
        raise RecordError("observation.value: not a valid observation") from exc


def seal_raw(key: bytes, record: dict[str, Any], *, row_id: str, patient_id: str) -> bytes:
    return encrypt_field(
        key,
        cbor.encode(record),
        table=_ENV_TABLE,
        column=_RAW_COLUMN,
        row_id=row_id,
        patient_id=patient_id,
    )


def open_raw(key: bytes, blob: bytes, *, row_id: str, patient_id: str) -> dict[str, Any]:
    plain = decrypt_field(
        key, blob, table=_ENV_TABLE, column=_RAW_COLUMN, row_id=row_id, patient_id=patient_id
    )
    try:
        record = cbor.decode(plain)
    except ParseError as exc:
        raise RecordError("ingested_envelope.raw: not CBOR") from exc
    if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
        raise RecordError("ingested_envelope.raw: not a map with text keys")
    return cast("dict[str, Any]", record)
