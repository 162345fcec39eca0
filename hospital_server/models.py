"""Database tables (SQLModel) and the API's ``*Create`` / ``*Public`` schemas.

Storage rule (DESIGN.md section 5): plaintext columns are only what queries need: surrogate
ids, codes, states, times and keyed hashes. Everything clinical or identifying (names, MRN,
date of birth, contact, device serials and information, observation values, raw device bytes)
lives in a ``*_ct`` column sealed by :mod:`hospital_server.fieldcrypt` with the patient's data
key and associated data binding table, column, row and patient. MRN lookups use
``mrn_index``, a keyed blind index; observation idempotence uses ``observation.content_id``, a
keyed MAC of the reading's content id (never the content id itself, an unkeyed hash of the
value). ``*Public`` models are what the API returns; they never include a ``*_ct`` column or a
hash, so a response schema cannot leak one by accident.

Timestamps are stored as UTC and read back timezone-aware on both backends (:class:`UTCDateTime`).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    Table,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

__all__ = [
    "AuditEvent",
    "BreakGlass",
    "CareTeamMember",
    "Consent",
    "ConsentCreate",
    "ConsentKind",
    "ConsentPublic",
    "Credential",
    "Device",
    "DeviceCreate",
    "DevicePublic",
    "DeviceStatus",
    "EnrollmentCode",
    "Gateway",
    "GatewayPublic",
    "IngestedEnvelope",
    "Observation",
    "Patient",
    "PatientCreate",
    "PatientKey",
    "PatientPublic",
    "PatientStatus",
    "Quarantine",
    "RefreshToken",
    "StaffUser",
    "TokenSigningKey",
    "UTCDateTime",
    "new_id",
    "new_ids",
    "utcnow",
]


def new_id() -> str:
    """Random surrogate id (UUID4, 36 chars): carries nothing about the person or device."""
    return str(uuid.uuid4())


def new_ids(count: int) -> list[str]:
    """``count`` time-ordered ids (UUID version 7, RFC 9562) for the rows ingest writes.

    48 bits of Unix time in milliseconds, then 74 random bits. Ingest writes several rows per
    envelope, each into unique indexes on its id (and observations into one on the envelope's
    id); with random (version 4) ids every insert landed on a random B-tree page, so each batch
    dirtied hundreds of pages and SQLite wrote each one to the WAL (in the end-to-end bench the
    commit thread's CPU per envelope fell from 472 to 332 µs with these ids; PostgreSQL pays
    the same scattering in full-page writes). Time-ordered ids append at the right edge of the index
    instead. What the prefix reveals, the time a row was written, is already stored in plain
    text beside it (``received_at``) and is not about the person. One read of the OS
    generator for the whole batch (building each through ``uuid`` cost more than encrypting
    the row).
    """
    stamp = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    raw = bytearray(secrets.token_bytes(16 * count))
    for base in range(0, 16 * count, 16):
        raw[base : base + 6] = stamp
        raw[base + 6] = (raw[base + 6] & 0x0F) | 0x70  # version 7
        raw[base + 8] = (raw[base + 8] & 0x3F) | 0x80  # RFC 9562 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-"
        f"{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive input is refused, not guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zone type: store naive UTC there, aware elsewhere.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite: the text SQLAlchemy's SQLite DATETIME stores ("YYYY-MM-DD HH:MM:SS.ffffff",
        # always with microseconds), made in one step; ingest binds several per reading and
        # the two-step form (this type, then the dialect's formatting) cost more than the row.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(UTCDateTime(), nullable=nullable, index=index),
    )


def _blob(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(LargeBinary, nullable=nullable))


class PatientStatus:
    ACTIVE = "active"
    DISCHARGED = "discharged"
    ERASED = "erased"
    ALL = frozenset({ACTIVE, DISCHARGED, ERASED})


class DeviceStatus:
    PENDING = "pending"  # registered, enrollment code issued, no credential yet
    ENROLLED = "enrolled"
    REVOKED = "revoked"
    ALL = frozenset({PENDING, ENROLLED, REVOKED})


class ConsentKind:
    COLLECTION = "collection"  # remote-monitoring collection: ingest refuses without it
    AI_RESEARCH = "ai_research"  # secondary use: pseudonymised export
    ALL = frozenset({COLLECTION, AI_RESEARCH})


# --------------------------------------------------------------------------- patients


class Patient(SQLModel, table=True):
    __tablename__ = "patient"

    id: str = Field(primary_key=True, max_length=36)
    status: str = Field(max_length=16, index=True)
    mrn_index: str = Field(max_length=64, unique=True)  # HMAC blind index, hex
    name_ct: bytes = _blob()
    mrn_ct: bytes = _blob()
    dob_ct: bytes | None = _blob(nullable=True)
    contact_ct: bytes | None = _blob(nullable=True)
    created_at: datetime = _ts()


class PatientKey(SQLModel, table=True):
    """The patient's data key, wrapped by a key-encryption key. Deleting it crypto-shreds."""

    __tablename__ = "patient_key"

    patient_id: str = Field(primary_key=True, foreign_key="patient.id", max_length=36)
    kek_id: str = Field(max_length=64)
    wrapped: bytes = _blob()
    created_at: datetime = _ts()


class PatientCreate(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    mrn: str = Field(min_length=1, max_length=64)
    date_of_birth: date | None = None
    contact: str | None = Field(default=None, max_length=500)


class PatientPublic(SQLModel):
    id: str
    status: str
    name: str
    mrn: str
    date_of_birth: date | None
    contact: str | None
    created_at: datetime


class Consent(SQLModel, table=True):
    """Append-only consent history; the newest row per (patient, kind) is in force."""

    __tablename__ = "consent"
    __table_args__ = (Index("ix_consent_patient_kind", "patient_id", "kind", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: str = Field(foreign_key="patient.id", max_length=36)
    kind: str = Field(max_length=32)
    granted: bool
    recorded_by: str = Field(max_length=36)
    recorded_at: datetime = _ts()


class ConsentCreate(SQLModel):
    kind: Literal["collection", "ai_research"]
    granted: bool


class ConsentPublic(SQLModel):
    id: int
    patient_id: str
    kind: str
    granted: bool
    recorded_by: str
    recorded_at: datetime


# --------------------------------------------------------------------------- devices


class Device(SQLModel, table=True):
    __tablename__ = "device"

    id: str = Field(primary_key=True, max_length=36)  # the device id named in its certificate
    patient_id: str = Field(foreign_key="patient.id", max_length=36, index=True)
    kind: str = Field(max_length=32)  # coarse device type code, e.g. "blood_pressure"
    status: str = Field(max_length=16)
    info_ct: bytes | None = _blob(nullable=True)  # PHD information (model, serial, system id)
    created_at: datetime = _ts()
    enrolled_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


class DeviceCreate(SQLModel):
    kind: str = Field(regex=r"^[a-z_]{1,32}$")


class DevicePublic(SQLModel):
    id: str
    patient_id: str
    kind: str
    status: str
    created_at: datetime
    enrolled_at: datetime | None
    revoked_at: datetime | None


class EnrollmentCode(SQLModel, table=True):
    """A one-time enrollment code (phd_protocol.enrollment.CodeRecord): never the code itself.

    ``handle`` (first code group) finds the record; ``code_hash`` is HMAC-SHA256 with a pepper
    kept outside the database, so a stolen table cannot be used to test guesses offline.
    """

    __tablename__ = "enrollment_code"

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="device.id", max_length=36, index=True)
    handle: str = Field(max_length=4, index=True)
    code_hash: str = Field(max_length=64, unique=True)
    state: str = Field(max_length=16)
    failed_attempts: int = 0
    max_attempts: int
    issued_at: datetime = _ts()
    expires_at: datetime = _ts()


class Credential(SQLModel, table=True):
    """A device credential certificate; ``kid`` is SHA-256 of its DER (the COSE kid)."""

    __tablename__ = "credential"

    kid: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(foreign_key="device.id", max_length=36, index=True)
    serial: str = Field(max_length=64)
    cert_der: bytes = _blob()
    not_before: datetime = _ts()
    not_after: datetime = _ts()
    issued_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)


class Gateway(SQLModel, table=True):
    __tablename__ = "gateway"

    id: str = Field(primary_key=True, max_length=64)  # certificate CN = MQTT identity
    status: str = Field(max_length=16)  # active | revoked
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)


class GatewayPublic(SQLModel):
    id: str
    status: str
    created_at: datetime
    revoked_at: datetime | None


# --------------------------------------------------------------------------- ingest


class IngestedEnvelope(SQLModel, table=True):
    """One accepted envelope. The unique (credential, seq) pair makes redelivery idempotent.

    DESIGN.md says "idempotent on (device, seq)" and "seq strictly increasing per credential";
    a credential belongs to exactly one device, so (kid, seq) is that rule made exact: it also
    holds when an agent restarts its counter after a renewal.
    """

    __tablename__ = "ingested_envelope"
    __table_args__ = (
        UniqueConstraint("kid", "seq", name="uq_envelope_credential_seq"),
        Index("ix_envelope_device_seq", "device_id", "seq"),
    )

    id: str = Field(primary_key=True, max_length=36)
    device_id: str = Field(foreign_key="device.id", max_length=36)
    patient_id: str = Field(foreign_key="patient.id", max_length=36, index=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    # SHA-256 of the signed COSE_Sign1: tells a redelivery (same) from a replay (different).
    signed_digest: str = Field(max_length=64)
    kid: str = Field(max_length=64)
    recipient_kid: str = Field(max_length=64)
    gateway_id: str = Field(max_length=64)
    sealed_at: datetime = _ts(index=True)  # retention disposes by it
    received_at: datetime = _ts()
    observations: int
    # The COSE_Sign1 as the device signed it (readings, raw bytes, PHD info, signature), one
    # AEAD; hospital_server.records opens it.
    signed_ct: bytes = _blob()


class Observation(SQLModel, table=True):
    __tablename__ = "observation"
    __table_args__ = (
        # content_id (a keyed MAC, spread uniformly) leads: ingest looks readings up by it.
        UniqueConstraint("content_id", "device_id", name="uq_observation_device_content"),
        Index("ix_observation_patient_time", "patient_id", "measured_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    patient_id: str = Field(foreign_key="patient.id", max_length=36)
    device_id: str = Field(foreign_key="device.id", max_length=36)
    envelope_id: str = Field(foreign_key="ingested_envelope.id", max_length=36, index=True)
    item: int  # position of the reading in its envelope's observation section
    # NOT the observation's content id (a plain hash of device, type, value, unit, time and
    # flags: a stolen database would give values away to anyone hashing every plausible one)
    # but its keyed MAC, hospital_server.fieldcrypt.content_mac, under a key derived from the
    # patient's data key. Unique per device: a re-downloaded reading is stored once.
    content_id: str = Field(max_length=64)
    mdc_code: int
    # ok | implausible (outside plausibility range) | special (NaN, NRes, INF, reserved)
    quality: str = Field(max_length=16)
    measured_at: datetime | None = _ts(nullable=True)
    received_at: datetime = _ts()


class Quarantine(SQLModel, table=True):
    """Rejected envelopes kept sealed, with the public reason, for review."""

    __tablename__ = "quarantine"

    id: int | None = Field(default=None, primary_key=True)
    # SHA-256 of the envelope bytes: a redelivered rejected envelope is quarantined once.
    digest: str = Field(max_length=64, unique=True)
    reason: str = Field(max_length=32, index=True)
    gateway_id: str = Field(max_length=64)
    device_id: str | None = Field(default=None, max_length=36)
    kid: str | None = Field(default=None, max_length=64)
    size: int
    # Still HPKE-sealed: quarantine holds no plaintext. Empty when the envelope's patient was
    # erased (the ingest key would still open it; hospital_server.disposal).
    sealed: bytes = _blob()
    received_at: datetime = _ts(index=True)  # retention disposes by it


# --------------------------------------------------------------------------- staff, audit


class StaffUser(SQLModel, table=True):
    __tablename__ = "staff_user"

    id: str = Field(primary_key=True, max_length=36)
    username: str = Field(max_length=64, unique=True)
    password_hash: str = Field(max_length=256)
    role: str = Field(max_length=16)
    active: bool = True
    created_at: datetime = _ts()
    # TOTP (RFC 6238) secret, wrapped by the key provider's KEK with the user id as context;
    # None until the user enrolls a second factor. totp_last_step: the newest time step
    # accepted, so a code is good once (no replay within its validity window).
    totp_wrapped: bytes | None = _blob(nullable=True)
    totp_kek_id: str | None = Field(default=None, max_length=64)
    totp_last_step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Consecutive failed logins and the lockout they caused (online guessing bound).
    failed_logins: int = 0
    locked_until: datetime | None = _ts(nullable=True)


class RefreshToken(SQLModel, table=True):
    """One refresh token (stored as its SHA-256 only). Each use rotates it: the presented
    token is marked used and a new one of the same family issued; presenting a used token
    again revokes the whole family (theft detection, RFC 9700 section 4.14.2)."""

    __tablename__ = "refresh_token"

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="staff_user.id", max_length=36, index=True)
    family_id: str = Field(max_length=36, index=True)
    token_hash: str = Field(max_length=64, unique=True)
    issued_at: datetime = _ts()
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


class TokenSigningKey(SQLModel, table=True):
    """An ES256 key of the built-in token issuer. The private key is wrapped by the key
    provider's KEK (context: the kid), so every API instance sharing the database signs and
    verifies with the same keys. The newest active key signs; retired keys stay published in
    the JWKS until the last token they signed has expired."""

    __tablename__ = "token_signing_key"

    kid: str = Field(primary_key=True, max_length=64)
    public_pem: bytes = _blob()
    private_wrapped: bytes = _blob()
    kek_id: str = Field(max_length=64)
    created_at: datetime = _ts()
    retired_at: datetime | None = _ts(nullable=True)


class CareTeamMember(SQLModel, table=True):
    """A clinician or nurse on a patient's care team: the only staff who read that patient's
    data without break-glass."""

    __tablename__ = "care_team_member"

    patient_id: str = Field(primary_key=True, foreign_key="patient.id", max_length=36)
    user_id: str = Field(primary_key=True, foreign_key="staff_user.id", max_length=36, index=True)
    added_by: str = Field(max_length=36)
    added_at: datetime = _ts()


class BreakGlass(SQLModel, table=True):
    """Emergency access outside the care team: time-limited, flagged, reason kept encrypted
    (free text may name the person; it is sealed with the patient's data key)."""

    __tablename__ = "break_glass"
    __table_args__ = (Index("ix_break_glass_user_patient", "user_id", "patient_id", "expires_at"),)

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="staff_user.id", max_length=36)
    patient_id: str = Field(foreign_key="patient.id", max_length=36, index=True)
    reason_ct: bytes = _blob()
    granted_at: datetime = _ts()
    expires_at: datetime = _ts()


class AuditEvent(SQLModel, table=True):
    """Append-only audit entries: ids and codes only, never values or names.

    Hash-chained (:mod:`hospital_server.audit`): ``seq`` is the entry's place in the chain
    (1, 2, ... in commit order, unlike ``id``), ``chain_hash`` covers the previous entry's hash
    and every field of this one."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    at: datetime = _ts(index=True)
    event_type: str = Field(max_length=32, index=True)
    actor: str = Field(max_length=64)
    subject: str | None = Field(default=None, max_length=64)
    detail: str = Field(default="{}", max_length=2000)  # JSON of ids and reason codes
    chain_hash: str = Field(max_length=64)  # hex SHA-256


class AuditChainHead(SQLModel, table=True):
    """The chain's last entry (one row, id 1): the lock every append takes, in the same
    transaction as its entries, so entries are chained in commit order."""

    __tablename__ = "audit_chain_head"

    id: int = Field(primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    chain_hash: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement that the chain had ``chain_hash`` at ``seq``: an edit of any entry
    up to ``seq`` is detected even by someone who recomputed every hash after it."""

    __tablename__ = "audit_checkpoint"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    chain_hash: str = Field(max_length=64)
    at: datetime = _ts()
    kid: str = Field(max_length=64)
    signature: bytes = _blob()


class AuditSigningKey(SQLModel, table=True):
    """The Ed25519 key that signs checkpoints, wrapped by the KEK (bound to its kid)."""

    __tablename__ = "audit_signing_key"

    kid: str = Field(primary_key=True, max_length=64)
    public_pem: bytes = _blob()
    private_wrapped: bytes = _blob()
    kek_id: str = Field(max_length=64)
    created_at: datetime = _ts()


class ResearchProject(SQLModel, table=True):
    """A research project allowed pseudonymised exports (docs/export.md): purpose, ethics
    approval, expiry, the date profile and k of its exports, and its own pseudonym key
    (wrapped by the KEK, bound to the project id): pseudonyms differ between projects."""

    __tablename__ = "research_project"

    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(max_length=100, unique=True)
    purpose: str = Field(max_length=500)  # what the data is for; never about a patient
    approval_ref: str = Field(max_length=100)  # the ethics committee's reference
    date_profile: str = Field(max_length=16)  # safe_harbor | shifted
    k_anonymity: int
    created_by: str = Field(max_length=36)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    key_wrapped: bytes = _blob()
    kek_id: str = Field(max_length=64)


class ResearchExport(SQLModel, table=True):
    """One export file of a project: counts, where it was written, its digest; destroyed_at
    once the file is gone (project expiry or on request)."""

    __tablename__ = "research_export"

    id: str = Field(primary_key=True, max_length=36)
    project_id: str = Field(foreign_key="research_project.id", max_length=36, index=True)
    created_by: str = Field(max_length=36)
    created_at: datetime = _ts()
    rows: int
    patients: int
    suppressed_patients: int
    path: str = Field(max_length=1000)
    sha256: str = Field(max_length=64)
    destroyed_at: datetime | None = _ts(nullable=True)


class ExportSigningKey(SQLModel, table=True):
    """The Ed25519 key that signs research export manifests, wrapped by the KEK (bound to its
    kid); the same shape as :class:`AuditSigningKey`, a table of its own (one job per key)."""

    __tablename__ = "export_signing_key"

    kid: str = Field(primary_key=True, max_length=64)
    public_pem: bytes = _blob()
    private_wrapped: bytes = _blob()
    kek_id: str = Field(max_length=64)
    created_at: datetime = _ts()


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core table, for Core statements (bulk inserts skip the ORM's per-row
    bookkeeping; rows written that way are never read back in the same session)."""
    return cast("Table", model.__table__)  # type: ignore[attr-defined] # set by table=True
