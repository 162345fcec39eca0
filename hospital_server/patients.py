"""Patients and their consent: create with encrypted identifiers, read back, find by MRN.

Every identifying field is sealed with the patient's own data key (fieldcrypt) before it
reaches the session; the MRN is findable only through its keyed blind index. Consent is an
append-only history; the newest row per kind is in force. Functions take a session and never
commit: the caller's transaction decides.

Errors: :class:`PatientError` root; :class:`DuplicateMrnError`, :class:`PatientNotFoundError`.
"""

from __future__ import annotations

from datetime import date

from sqlmodel import Session, col, select

from hospital_server import audit
from hospital_server.fieldcrypt import PatientKeys, decrypt_text, encrypt_text
from hospital_server.models import (
    Consent,
    ConsentKind,
    Patient,
    PatientCreate,
    PatientPublic,
    PatientStatus,
    new_id,
    utcnow,
)

__all__ = [
    "DuplicateMrnError",
    "PatientError",
    "PatientNotFoundError",
    "consent_history",
    "consent_in_force",
    "create_patient",
    "find_by_mrn",
    "read_patient",
    "record_consent",
]

_T = "patient"


class PatientError(Exception):
    """Root of patient-record errors; messages carry ids only."""


class DuplicateMrnError(PatientError):
    pass


class PatientNotFoundError(PatientError):
    pass


def create_patient(
    session: Session, keys: PatientKeys, data: PatientCreate, *, actor: str
) -> Patient:
    """Add a patient with a fresh data key; identifiers sealed under it. Flushes, no commit."""
    index = keys.mrn_index(data.mrn)
    if session.exec(select(Patient.id).where(Patient.mrn_index == index)).first() is not None:
        raise DuplicateMrnError("a patient with this MRN already exists")
    pid = new_id()
    dek = keys.create(session, pid)  # unit of work inserts patient before patient_key (FK)

    def seal(column: str, value: str) -> bytes:
        return encrypt_text(dek, value, table=_T, column=column, row_id=pid, patient_id=pid)

    patient = Patient(
        id=pid,
        status=PatientStatus.ACTIVE,
        mrn_index=index,
        name_ct=seal("name", data.name),
        mrn_ct=seal("mrn", data.mrn.strip()),
        dob_ct=seal("dob", data.date_of_birth.isoformat()) if data.date_of_birth else None,
        contact_ct=seal("contact", data.contact) if data.contact else None,
        created_at=utcnow(),
    )
    session.add(patient)
    session.flush()
    # Creating a record is an admin change; "user.changed" is for staff accounts, and the
    # clinician-API issue will add a dedicated event. Until then only ids reach the log.
    del actor
    return patient


def read_patient(session: Session, keys: PatientKeys, patient_id: str) -> PatientPublic:
    patient = session.get(Patient, patient_id)
    if patient is None or patient.status == PatientStatus.ERASED:
        raise PatientNotFoundError(f"patient {patient_id} not found")
    dek = keys.get(session, patient_id)

    def open_(column: str, blob: bytes | None) -> str | None:
        if blob is None:
            return None
        return decrypt_text(
            dek, blob, table=_T, column=column, row_id=patient_id, patient_id=patient_id
        )

    dob = open_("dob", patient.dob_ct)
    return PatientPublic(
        id=patient.id,
        status=patient.status,
        name=open_("name", patient.name_ct) or "",
        mrn=open_("mrn", patient.mrn_ct) or "",
        date_of_birth=date.fromisoformat(dob) if dob else None,
        contact=open_("contact", patient.contact_ct),
        created_at=patient.created_at,
    )


def find_by_mrn(session: Session, keys: PatientKeys, mrn: str) -> Patient | None:
    index = keys.mrn_index(mrn)
    return session.exec(select(Patient).where(Patient.mrn_index == index)).first()


def record_consent(
    session: Session, patient_id: str, kind: str, *, granted: bool, actor: str
) -> Consent:
    if kind not in ConsentKind.ALL:
        raise ValueError(f"unknown consent kind {kind!r}")
    if session.get(Patient, patient_id) is None:
        raise PatientNotFoundError(f"patient {patient_id} not found")
    consent = Consent(
        patient_id=patient_id, kind=kind, granted=granted, recorded_by=actor, recorded_at=utcnow()
    )
    session.add(consent)
    audit.record(
        session, "consent.changed", actor=actor, subject=patient_id, kind=kind, granted=granted
    )
    return consent


def consent_in_force(session: Session, patient_id: str, kind: str) -> bool:
    latest = session.exec(
        select(Consent.granted)
        .where(Consent.patient_id == patient_id, Consent.kind == kind)
        .order_by(col(Consent.id).desc())
        .limit(1)
    ).first()
    return bool(latest)


def consent_history(session: Session, patient_id: str) -> list[Consent]:
    return list(
        session.exec(
            select(Consent).where(Consent.patient_id == patient_id).order_by(col(Consent.id))
        )
    )
