"""What is inside the encrypted ingest column, and the one place that seals and opens it.

``ingested_envelope.signed_ct`` is one AES-256-GCM ciphertext (:mod:`hospital_server.fieldcrypt`,
associated data ``ingested_envelope | signed | envelope id | patient id``) over the envelope's
COSE_Sign1 exactly as the device signed it: every clinical field of every reading (values,
components, units, flags, device times, content ids), the raw characteristic bytes and the
PHD information, *and the device's signature over them*. So a stored record can be checked
again, years later, against the certificate that sealed it (:meth:`StoredEnvelope.verify`),
and what the hospital keeps is byte for byte what the device sent, not a re-encoding of it.

An ``observation`` row holds only what queries need in plaintext (codes, times, quality, the
keyed content MAC) and ``item``, the reading's position in its envelope's observation section.
:func:`open_observation` takes the envelope's plaintext and checks that the reading found at
``item`` is the row's (its content MAC must match the row's ``content_id``), so a row pointed
at another reading, or another envelope, is refused, as a moved ciphertext is refused by the
associated data. One AEAD per envelope instead of one per reading is also what lets one ingest
worker keep up with its verification (docs/server.md, "Speed").

Never log what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hospital_server.fieldcrypt import content_mac, content_mac_key, decrypt_field, encrypt_field
from phd_protocol import cbor, cose, crypto
from phd_protocol.envelope import EnvelopeError, Payload, RawRecord
from phd_protocol.errors import ParseError
from phd_protocol.observation import Observation

__all__ = [
    "RecordError",
    "StoredEnvelope",
    "open_envelope_record",
    "open_observation",
    "reading_at",
    "seal_envelope_record",
]

_TABLE, _COLUMN = "ingested_envelope", "signed"


class RecordError(Exception):
    """A decrypted record is not what it must be (a bug, a foreign writer, or a moved row)."""


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    """A stored envelope, decrypted: the device's signed message and its parsed payload."""

    message: cose.Sign1
    payload: Payload

    def observations(self) -> tuple[dict[str, cbor.CborValue], ...]:
        """The observation wire dicts, in the order the device signed them."""
        try:
            return self.payload.observations()
        except EnvelopeError as exc:
            raise RecordError("ingested_envelope.signed: observations do not parse") from exc

    def raw_records(self) -> tuple[RawRecord, ...]:
        try:
            return self.payload.raw_records()
        except EnvelopeError as exc:
            raise RecordError("ingested_envelope.signed: raw records do not parse") from exc

    def verify(self, key: crypto.VerifyingKey) -> None:
        """Check the device's signature again (CryptoError if it does not verify)."""
        cose.verify_sign1(self.message, key)


def seal_envelope_record(key: bytes, signed: bytes, *, envelope_id: str, patient_id: str) -> bytes:
    return encrypt_field(
        key, signed, table=_TABLE, column=_COLUMN, row_id=envelope_id, patient_id=patient_id
    )


def open_envelope_record(
    key: bytes, blob: bytes, *, envelope_id: str, patient_id: str
) -> StoredEnvelope:
    """FieldDecryptError if moved, tampered or crypto-shredded; RecordError if not a record."""
    plain = decrypt_field(
        key, blob, table=_TABLE, column=_COLUMN, row_id=envelope_id, patient_id=patient_id
    )
    try:
        message = cose.Sign1.decode(plain)
        payload = Payload.decode(message.payload)
    except (cose.CoseError, EnvelopeError) as exc:
        raise RecordError("ingested_envelope.signed: not a signed envelope") from exc
    return StoredEnvelope(message=message, payload=payload)


def open_observation(
    key: bytes, record: StoredEnvelope, *, item: int, device_id: str, content_id: str
) -> Observation:
    """The reading at ``item`` of ``record``, checked against its row's ``content_id``."""
    return reading_at(
        content_mac_key(key),
        record.observations(),
        item=item,
        device_id=device_id,
        content_id=content_id,
    )


def reading_at(
    mac_key: bytes,
    readings: Sequence[dict[str, cbor.CborValue]],
    *,
    item: int,
    device_id: str,
    content_id: str,
) -> Observation:
    """:func:`open_observation` over an envelope's readings parsed once
    (:meth:`StoredEnvelope.observations`) with the patient's content-MAC key
    (:func:`hospital_server.fieldcrypt.content_mac_key`): for reading many rows of one
    envelope."""
    if not 0 <= item < len(readings):
        raise RecordError("observation: item outside its envelope")
    try:
        reading = Observation.from_wire(readings[item])
    except ParseError as exc:
        raise RecordError("observation: not a valid observation") from exc
    mac = content_mac(mac_key, device_id=device_id, content_id=reading.id)
    if mac != content_id:
        raise RecordError("observation: row does not match the reading in its envelope")
    return reading
