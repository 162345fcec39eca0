"""Field-level encryption at rest: seal and open one column value with a patient's data key.

The associated data binds ``table``, ``column``, ``row id`` and ``patient id``, so a
ciphertext copied to another row, another column or another patient's record fails to open
(:class:`FieldDecryptError`), as does any bit flip. The blob is ``version(1) || nonce || ct ||
tag`` so the format can evolve. Also here: :class:`PatientKeys`, which creates, wraps, stores
and unwraps per-patient data keys through a :class:`~hospital_server.keys.KeyProvider`, and
:func:`content_mac`, the keyed form of an observation's content id that the database stores
for idempotence (the raw content id is a hash of the reading and would let anyone holding the
database recover values by hashing every plausible one).

Never log plaintext or keys; error messages name the table and column only.
"""

from __future__ import annotations

import hmac

from sqlmodel import Session

from hospital_server.keys import (
    DataKeyCache,
    KeyProvider,
    KeyUnavailableError,
    WrappedKey,
    blind_index,
    new_data_key,
)
from hospital_server.models import PatientKey, utcnow
from phd_protocol.crypto import CryptoError, aead_decrypt, aead_encrypt, hmac_sha256

__all__ = [
    "FieldDecryptError",
    "PatientKeys",
    "content_mac",
    "content_mac_key",
    "decrypt_field",
    "decrypt_text",
    "encrypt_field",
    "encrypt_text",
    "field_aad",
    "patient_key_context",
]

_VERSION = b"\x01"
_LABEL = b"phd-field-v1"
_CONTENT_KEY_LABEL = b"phd-obs-content-key-v1"
_CONTENT_MAC_LABEL = b"phd-obs-content-mac-v1\x00"


class FieldDecryptError(Exception):
    """A stored field does not open: tampered, moved, or its patient key is gone."""


def field_aad(*, table: str, column: str, row_id: str, patient_id: str) -> bytes:
    parts = (table, column, row_id, patient_id)
    if any("\x00" in p for p in parts):
        raise ValueError("identifiers in associated data must not contain NUL")
    return _LABEL + b"\x00" + "\x00".join(parts).encode()


def encrypt_field(
    key: bytes, plaintext: bytes, *, table: str, column: str, row_id: str, patient_id: str
) -> bytes:
    aad = field_aad(table=table, column=column, row_id=row_id, patient_id=patient_id)
    return _VERSION + aead_encrypt(key, plaintext, aad=aad)


def decrypt_field(
    key: bytes, blob: bytes, *, table: str, column: str, row_id: str, patient_id: str
) -> bytes:
    if not blob.startswith(_VERSION):
        raise FieldDecryptError(f"{table}.{column}: unknown ciphertext version")
    aad = field_aad(table=table, column=column, row_id=row_id, patient_id=patient_id)
    try:
        return aead_decrypt(key, blob[1:], aad=aad)
    except CryptoError as exc:
        raise FieldDecryptError(f"{table}.{column}: does not decrypt for this row") from exc


def encrypt_text(
    key: bytes, text: str, *, table: str, column: str, row_id: str, patient_id: str
) -> bytes:
    return encrypt_field(
        key, text.encode(), table=table, column=column, row_id=row_id, patient_id=patient_id
    )


def decrypt_text(
    key: bytes, blob: bytes, *, table: str, column: str, row_id: str, patient_id: str
) -> str:
    return decrypt_field(
        key, blob, table=table, column=column, row_id=row_id, patient_id=patient_id
    ).decode()


def content_mac_key(data_key: bytes) -> bytes:
    """The patient's content-MAC key, derived from the patient's own data key.

    Per patient rather than one global key: crypto-shredding a patient (deleting the wrapped
    data key) then also destroys the means to test guesses against that patient's stored
    MACs, even for someone holding the database *and* the key file. A KEK rotation does not
    change it (the data key stays the same), so idempotence survives rotation.
    """
    return hmac_sha256(data_key, _CONTENT_KEY_LABEL)


def content_mac(mac_key: bytes, *, device_id: str, content_id: str) -> str:
    """HMAC-SHA256 of (device id, content id) under :func:`content_mac_key`, 64 hex digits.

    Equal for the same reading of the same device (so the unique (device, MAC) constraint
    keeps a re-downloaded reading once), and useless without the key: a stolen database
    cannot be searched by hashing candidate values, unlike the raw content id.
    """
    if "\x00" in device_id:
        raise ValueError("device id must not contain NUL")
    message = _CONTENT_MAC_LABEL + device_id.encode() + b"\x00" + content_id.encode()
    # hmac.digest: the same HMAC-SHA256 as crypto.hmac_sha256 through OpenSSL's one-shot
    # path (ingest computes one per reading; the HMAC object costs twice as much).
    return hmac.digest(mac_key, message, "sha256").hex()


def patient_key_context(patient_id: str) -> bytes:
    """Associated data of a patient's wrapped data key: the key opens for that patient only."""
    return b"patient\x00" + patient_id.encode()


class PatientKeys:
    """Per-patient data keys: create (wrapped by the current KEK), fetch, destroy (re-wrapping
    under a new KEK: :mod:`hospital_server.kek`)."""

    def __init__(self, provider: KeyProvider, cache: DataKeyCache | None = None) -> None:
        self._provider = provider
        self._cache = cache if cache is not None else DataKeyCache()

    def mrn_index(self, mrn: str) -> str:
        return blind_index(self._provider.blind_index_key(), mrn)

    def create(self, session: Session, patient_id: str) -> bytes:
        """Add a new wrapped data key for a patient to the session and return the key."""
        key = new_data_key()
        wrapped = self._provider.wrap(key, context=patient_key_context(patient_id))
        session.add(
            PatientKey(
                patient_id=patient_id,
                kek_id=wrapped.kek_id,
                wrapped=wrapped.blob,
                created_at=utcnow(),
            )
        )
        self._cache.put(patient_id, key)
        return key

    def get(self, session: Session, patient_id: str) -> bytes:
        cached = self._cache.get(patient_id)
        if cached is not None:
            return cached
        row = session.get(PatientKey, patient_id)
        if row is None:
            raise KeyUnavailableError(f"patient {patient_id} has no data key")
        key = self._provider.unwrap(
            WrappedKey(row.kek_id, row.wrapped), context=patient_key_context(patient_id)
        )
        self._cache.put(patient_id, key)
        return key

    def destroy(self, session: Session, patient_id: str) -> None:
        """Crypto-shred: delete the wrapped key; every ciphertext of the patient is now noise."""
        row = session.get(PatientKey, patient_id)
        if row is not None:
            session.delete(row)
        self._cache.forget(patient_id)
