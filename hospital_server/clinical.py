"""Reading stored observations back for a clinician: query, decrypt, check, represent.

A query selects ``observation`` rows by their plaintext columns (patient, MDC code, time),
newest first; each envelope the rows point at is decrypted once
(:func:`hospital_server.records.open_envelope_record`) and each reading taken from it is
checked against its row's keyed content MAC (:func:`hospital_server.records.open_observation`),
so a row re-pointed at another reading, or a ciphertext moved between rows or patients, is
an integrity error, never a wrong value shown to a clinician.

Access control is the caller's (:mod:`hospital_server.access`): nothing here decides who may
read. Never log what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from hospital_server.fieldcrypt import FieldDecryptError, PatientKeys, content_mac_key
from hospital_server.keys import KeyUnavailableError
from hospital_server.models import IngestedEnvelope, Patient, PatientStatus
from hospital_server.models import Observation as ObservationRow
from hospital_server.records import RecordError, open_envelope_record, reading_at
from phd_protocol.cbor import CborValue
from phd_protocol.observation import Observation

__all__ = [
    "MAX_PAGE",
    "ReadingQuery",
    "RecordIntegrityError",
    "StoredReading",
    "observation_patient",
    "read_observation",
    "read_observations",
    "reading_wire",
]

MAX_PAGE = 1000


class RecordIntegrityError(Exception):
    """A stored record does not decrypt or does not match its row (message: ids only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingQuery:
    """Which readings of one patient: by MDC code, by measurement time, one page of them."""

    mdc_codes: frozenset[int] | None = None
    since: datetime | None = None  # measured at or after (readings without a time excluded)
    until: datetime | None = None  # measured before
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        if self.offset < 0:
            raise ValueError("offset must not be negative")
        for bound in (self.since, self.until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("time bounds must carry a time zone")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredReading:
    """One stored reading, decrypted and checked, with what the hospital knows about it."""

    id: str  # the observation row id
    patient_id: str
    device_id: str
    envelope_id: str
    quality: str  # ok | implausible | special (hospital_server.ingest.plausibility)
    received_at: datetime
    observation: Observation


_ROW_COLUMNS = (
    col(ObservationRow.id),
    col(ObservationRow.device_id),
    col(ObservationRow.envelope_id),
    col(ObservationRow.item),
    col(ObservationRow.content_id),
    col(ObservationRow.quality),
    col(ObservationRow.received_at),
)


def read_observations(
    session: Session, keys: PatientKeys, patient_id: str, query: ReadingQuery
) -> tuple[list[StoredReading], bool]:
    """One page of a patient's readings, newest measurement first; and whether more follow.

    An erased patient (or one whose key is gone) has no readings. RecordIntegrityError if a
    stored record fails its checks.
    """
    if not _readable(session, patient_id):
        return [], False
    statement = sa_select(*_ROW_COLUMNS).where(col(ObservationRow.patient_id) == patient_id)
    if query.mdc_codes is not None:
        statement = statement.where(col(ObservationRow.mdc_code).in_(sorted(query.mdc_codes)))
    if query.since is not None:
        statement = statement.where(col(ObservationRow.measured_at) >= query.since)
    if query.until is not None:
        statement = statement.where(col(ObservationRow.measured_at) < query.until)
    statement = (
        statement.order_by(
            col(ObservationRow.measured_at).desc().nulls_last(), col(ObservationRow.id)
        )
        .offset(query.offset)
        .limit(query.limit + 1)
    )
    rows = list(session.connection().execute(statement))
    more = len(rows) > query.limit
    return _open_rows(session, keys, patient_id, rows[: query.limit]), more


def observation_patient(session: Session, observation_id: str) -> str | None:
    """The patient a stored reading belongs to (for the access decision before reading it)."""
    found: str | None = session.connection().scalar(
        sa_select(col(ObservationRow.patient_id)).where(col(ObservationRow.id) == observation_id)
    )
    return found


def read_observation(
    session: Session, keys: PatientKeys, patient_id: str, observation_id: str
) -> StoredReading | None:
    """One reading of ``patient_id`` by row id; None if there is no such reading for them."""
    if not _readable(session, patient_id):
        return None
    rows = list(
        session.connection().execute(
            sa_select(*_ROW_COLUMNS).where(
                col(ObservationRow.id) == observation_id,
                col(ObservationRow.patient_id) == patient_id,
            )
        )
    )
    opened = _open_rows(session, keys, patient_id, rows)
    return opened[0] if opened else None


def _readable(session: Session, patient_id: str) -> bool:
    patient = session.get(Patient, patient_id)
    return patient is not None and patient.status != PatientStatus.ERASED


def _open_rows(
    session: Session, keys: PatientKeys, patient_id: str, rows: Iterable[Any]
) -> list[StoredReading]:
    rows = list(rows)
    if not rows:
        return []
    try:
        dek = keys.get(session, patient_id)
    except KeyUnavailableError:
        return []  # crypto-shredded: nothing is readable any more
    envelope_ids = sorted({row.envelope_id for row in rows})
    # Each envelope decrypted and its readings parsed once, however many rows point into it.
    records: dict[str, Sequence[dict[str, CborValue]]] = {}
    for envelope_id, blob in session.connection().execute(
        sa_select(col(IngestedEnvelope.id), col(IngestedEnvelope.signed_ct)).where(
            col(IngestedEnvelope.id).in_(envelope_ids),
            col(IngestedEnvelope.patient_id) == patient_id,
        )
    ):
        try:
            records[envelope_id] = open_envelope_record(
                dek, blob, envelope_id=envelope_id, patient_id=patient_id
            ).observations()
        except (FieldDecryptError, RecordError) as exc:
            raise RecordIntegrityError(f"envelope {envelope_id} fails its checks") from exc
    mac_key = content_mac_key(dek)
    readings = []
    for row in rows:
        record = records.get(row.envelope_id)
        if record is None:
            raise RecordIntegrityError(f"observation {row.id}: envelope not of this patient")
        try:
            observation = reading_at(
                mac_key, record, item=row.item, device_id=row.device_id, content_id=row.content_id
            )
        except RecordError as exc:
            raise RecordIntegrityError(f"observation {row.id} fails its checks") from exc
        readings.append(
            StoredReading(
                id=row.id,
                patient_id=patient_id,
                device_id=row.device_id,
                envelope_id=row.envelope_id,
                quality=row.quality,
                received_at=row.received_at,
                observation=observation,
            )
        )
    return readings


def reading_wire(reading: StoredReading) -> dict[str, Any]:
    """The native JSON form: the observation's wire dict (exact Decimals) plus storage facts.

    Write it with :func:`phd_protocol.observation.wire_json` to keep values exact.
    """
    wire = reading.observation.to_wire()
    wire.pop("id")  # the device-side content id; the API names readings by row id
    return {
        "id": reading.id,
        "patient_id": reading.patient_id,
        "device_id": reading.device_id,
        "quality": reading.quality,
        "received_at": reading.received_at.isoformat(),
        **wire,
    }
