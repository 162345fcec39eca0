"""Destruction and disposal: erasing a patient, and disposing of readings past retention.

**Erasure** (:func:`erase_patient`) crypto-shreds: the patient's wrapped data key is deleted,
so every ciphertext ever written under it (readings, raw bytes, name, MRN, date of birth,
contact, device information, break-glass reasons) is noise from that commit on, in this
database *and in every backup taken before* (the wrapped key in an old backup still opens with
the key file: see "Backups" in docs/disposal.md). Then the rows go: readings, envelopes,
quarantined envelopes of the patient's devices (sealed to the ingest key, which still opens
them), break-glass grants, care-team memberships. The patient row stays as a tombstone
(status ``erased``, identifiers emptied, the MRN's blind index replaced, so the MRN can be
registered again and no longer matches); the devices stay revoked with their information
removed; consent records stay (ids, kinds and times: the legal basis of what was done). One
``patient.erased`` audit entry with counts is the destruction record.

**Retention** (:func:`dispose_expired`) deletes envelopes (with their readings) sealed before
``now - retention_readings`` and quarantined envelopes received before ``now -
retention_quarantine``, in batches, each batch its own transaction with a
``retention.disposed`` entry. Retention is never shorter than the maximum envelope age plus
the future skew (settings validate it), so a disposed envelope replayed later is refused as
too old: deleting its (credential, seq) row cannot re-open it to replay.

Reports carry ids and counts, never content.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_
from sqlmodel import Session, SQLModel, col, select

from hospital_server import audit
from hospital_server.audit import RECORDS
from hospital_server.db import SessionFactory
from hospital_server.devices import revoke_device
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.models import (
    BreakGlass,
    CareTeamMember,
    Credential,
    Device,
    DeviceStatus,
    IngestedEnvelope,
    Observation,
    Patient,
    PatientStatus,
    Quarantine,
    table_of,
    utcnow,
)
from hospital_server.patients import PatientNotFoundError

__all__ = [
    "AlreadyErasedError",
    "DisposalReport",
    "ErasureReason",
    "ErasureReport",
    "dispose_expired",
    "erase_patient",
]


class ErasureReason(enum.StrEnum):
    """Why a patient is erased (recorded in the audit entry; no free text)."""

    PATIENT_REQUEST = "patient_request"  # right to erasure (GDPR art. 17 and the like)
    RETENTION_ENDED = "retention_ended"
    LEGAL_ORDER = "legal_order"
    ENROLLED_IN_ERROR = "enrolled_in_error"
    # Erased before, brought back by restoring a backup: erased again (docs/disposal.md).
    REAPPLIED = "reapplied_after_restore"


class AlreadyErasedError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ErasureReport:
    patient_id: str
    devices_revoked: int
    envelopes: int
    observations: int
    quarantined: int
    break_glass: int
    care_team: int
    # Certificate serials of the credentials revoked now: the caller adds them to the CRL
    # after the commit, as a device revocation does.
    serials: tuple[str, ...] = ()


def erase_patient(
    session: Session,
    keys: PatientKeys,
    patient_id: str,
    *,
    actor: str,
    reason: ErasureReason,
) -> ErasureReport:
    """Erase one patient in the session's transaction (the caller commits).

    The patient row is locked first (``FOR UPDATE`` on PostgreSQL): an ingest batch writing
    readings of this patient holds it shared until its commit (hospital_server.ingest), so
    either that batch commits first and its rows are deleted here, or it waits and then finds
    the patient erased. Audit entries are written last, after every row lock."""
    patient = session.get(Patient, patient_id, with_for_update=True)
    if patient is None:
        raise PatientNotFoundError(patient_id)
    if patient.status == PatientStatus.ERASED:
        raise AlreadyErasedError(patient_id)
    devices = list(session.exec(select(Device).where(Device.patient_id == patient_id)))
    revoked: list[str] = []
    serials: list[str] = []
    kids: list[str] = []
    for device in devices:
        if device.status != DeviceStatus.REVOKED:
            credentials = revoke_device(session, device.id, actor=actor, record=False)
            serials += [c.serial for c in credentials]
            revoked.append(device.id)
        device.info_ct = None  # sealed under the shredded key anyway: noise, so drop it
        session.add(device)
    device_ids = [d.id for d in devices]
    if device_ids:
        kids = list(
            session.exec(select(Credential.kid).where(col(Credential.device_id).in_(device_ids)))
        )
    # The key first: from this transaction's commit on, nothing of the patient opens.
    keys.destroy(session, patient_id)
    counts = {
        "observations": _delete(session, Observation, col(Observation.patient_id) == patient_id),
        "envelopes": _delete(
            session, IngestedEnvelope, col(IngestedEnvelope.patient_id) == patient_id
        ),
        # By device, and by credential for rows refused before they were attributed (a
        # revoked gateway's): the ingest key would still open them.
        "quarantined": _delete(
            session,
            Quarantine,
            or_(col(Quarantine.device_id).in_(device_ids), col(Quarantine.kid).in_(kids)),
        )
        if device_ids
        else 0,
        "break_glass": _delete(session, BreakGlass, col(BreakGlass.patient_id) == patient_id),
        "care_team": _delete(session, CareTeamMember, col(CareTeamMember.patient_id) == patient_id),
    }
    patient.status = PatientStatus.ERASED
    patient.name_ct = patient.mrn_ct = b""
    patient.dob_ct = patient.contact_ct = None
    patient.mrn_index = f"erased-{patient_id}"  # unique, and matches no MRN
    session.add(patient)
    session.flush()
    for device_id in revoked:
        audit.record(session, "device.revoked", actor=actor, subject=device_id)
    audit.record(
        session,
        "patient.erased",
        actor=actor,
        subject=patient_id,
        reason=reason.value,
        devices_revoked=len(revoked),
        **counts,
    )
    # The destruction record outside the database too: a restored backup brings the patient
    # back, and this line is what tells the operator to erase them again.
    RECORDS.info("patient %s erased (%s)", patient_id, reason.value)
    return ErasureReport(
        patient_id=patient_id, devices_revoked=len(revoked), serials=tuple(serials), **counts
    )


@dataclass(slots=True)
class DisposalReport:
    envelopes: int = 0
    observations: int = 0
    quarantined: int = 0
    batches: int = 0


def dispose_expired(
    sessions: SessionFactory,
    *,
    readings: timedelta,
    quarantine: timedelta,
    batch: int = 500,
    now: datetime | None = None,
    progress: Callable[[DisposalReport], None] | None = None,
) -> DisposalReport:
    """Delete what is past its retention, ``batch`` envelopes per transaction."""
    now = now or utcnow()
    readings_cutoff, quarantine_cutoff = now - readings, now - quarantine
    report = DisposalReport()
    while True:
        with sessions() as session:
            ids = list(
                session.exec(
                    select(IngestedEnvelope.id)
                    .where(col(IngestedEnvelope.sealed_at) < readings_cutoff)
                    .limit(batch)
                )
            )
            if not ids:
                break
            observations = _delete(session, Observation, col(Observation.envelope_id).in_(ids))
            envelopes = _delete(session, IngestedEnvelope, col(IngestedEnvelope.id).in_(ids))
            audit.record(
                session,
                "retention.disposed",
                actor="retention",
                what="readings",
                envelopes=envelopes,
                observations=observations,
                sealed_before=int(readings_cutoff.timestamp()),
            )
            session.commit()
        report.envelopes += envelopes
        report.observations += observations
        report.batches += 1
        if progress is not None:
            progress(report)
    with sessions() as session:
        quarantined = _delete(session, Quarantine, col(Quarantine.received_at) < quarantine_cutoff)
        if quarantined:
            audit.record(
                session,
                "retention.disposed",
                actor="retention",
                what="quarantine",
                quarantined=quarantined,
                received_before=int(quarantine_cutoff.timestamp()),
            )
        session.commit()
    report.quarantined = quarantined
    return report


def _delete(session: Session, model: type[SQLModel], condition: ColumnElement[bool]) -> int:
    """Delete the matching rows (Core: no ORM load of what is about to go); the row count."""
    result = session.connection().execute(delete(table_of(model)).where(condition))
    return int(result.rowcount)
