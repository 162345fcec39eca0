"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from hospital_server.models import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_type", AutoString(length=32), nullable=False),
        sa.Column("actor", AutoString(length=64), nullable=False),
        sa.Column("subject", AutoString(length=64), nullable=True),
        sa.Column("detail", AutoString(length=2000), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_event_type"), ["event_type"], unique=False)

    op.create_table(
        "gateway",
        sa.Column("id", AutoString(length=64), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "patient",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("mrn_index", AutoString(length=64), nullable=False),
        sa.Column("name_ct", sa.LargeBinary(), nullable=False),
        sa.Column("mrn_ct", sa.LargeBinary(), nullable=False),
        sa.Column("dob_ct", sa.LargeBinary(), nullable=True),
        sa.Column("contact_ct", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mrn_index"),
    )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_status"), ["status"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", AutoString(length=64), nullable=False),
        sa.Column("reason", AutoString(length=32), nullable=False),
        sa.Column("gateway_id", AutoString(length=64), nullable=False),
        sa.Column("device_id", AutoString(length=36), nullable=True),
        sa.Column("kid", AutoString(length=64), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quarantine_reason"), ["reason"], unique=False)

    op.create_table(
        "staff_user",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("username", AutoString(length=64), nullable=False),
        sa.Column("password_hash", AutoString(length=256), nullable=False),
        sa.Column("role", AutoString(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "consent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", AutoString(length=36), nullable=False),
        sa.Column("kind", AutoString(length=32), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("recorded_by", AutoString(length=36), nullable=False),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.create_index("ix_consent_patient_kind", ["patient_id", "kind", "id"], unique=False)

    op.create_table(
        "device",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("patient_id", AutoString(length=36), nullable=False),
        sa.Column("kind", AutoString(length=32), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("info_ct", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "patient_key",
        sa.Column("patient_id", AutoString(length=36), nullable=False),
        sa.Column("kek_id", AutoString(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
        ),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    op.create_table(
        "credential",
        sa.Column("kid", AutoString(length=64), nullable=False),
        sa.Column("device_id", AutoString(length=36), nullable=False),
        sa.Column("serial", AutoString(length=64), nullable=False),
        sa.Column("cert_der", sa.LargeBinary(), nullable=False),
        sa.Column("not_before", UTCDateTime(timezone=True), nullable=False),
        sa.Column("not_after", UTCDateTime(timezone=True), nullable=False),
        sa.Column("issued_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.PrimaryKeyConstraint("kid"),
    )
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credential_device_id"), ["device_id"], unique=False)

    op.create_table(
        "enrollment_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", AutoString(length=36), nullable=False),
        sa.Column("handle", AutoString(length=4), nullable=False),
        sa.Column("code_hash", AutoString(length=64), nullable=False),
        sa.Column("state", AutoString(length=16), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("issued_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    with op.batch_alter_table("enrollment_code", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_enrollment_code_device_id"), ["device_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_enrollment_code_handle"), ["handle"], unique=False)

    op.create_table(
        "ingested_envelope",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("device_id", AutoString(length=36), nullable=False),
        sa.Column("patient_id", AutoString(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("signed_digest", AutoString(length=64), nullable=False),
        sa.Column("kid", AutoString(length=64), nullable=False),
        sa.Column("recipient_kid", AutoString(length=64), nullable=False),
        sa.Column("gateway_id", AutoString(length=64), nullable=False),
        sa.Column("sealed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.Column("signed_ct", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kid", "seq", name="uq_envelope_credential_seq"),
    )
    with op.batch_alter_table("ingested_envelope", schema=None) as batch_op:
        batch_op.create_index("ix_envelope_device_seq", ["device_id", "seq"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ingested_envelope_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "observation",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("patient_id", AutoString(length=36), nullable=False),
        sa.Column("device_id", AutoString(length=36), nullable=False),
        sa.Column("envelope_id", AutoString(length=36), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("content_id", AutoString(length=64), nullable=False),
        sa.Column("mdc_code", sa.Integer(), nullable=False),
        sa.Column("quality", AutoString(length=16), nullable=False),
        sa.Column("measured_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["ingested_envelope.id"],
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_id", "device_id", name="uq_observation_device_content"),
    )
    with op.batch_alter_table("observation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_observation_envelope_id"), ["envelope_id"], unique=False
        )
        batch_op.create_index(
            "ix_observation_patient_time", ["patient_id", "measured_at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("observation", schema=None) as batch_op:
        batch_op.drop_index("ix_observation_patient_time")
        batch_op.drop_index(batch_op.f("ix_observation_envelope_id"))

    op.drop_table("observation")
    with op.batch_alter_table("ingested_envelope", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingested_envelope_patient_id"))
        batch_op.drop_index("ix_envelope_device_seq")

    op.drop_table("ingested_envelope")
    with op.batch_alter_table("enrollment_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollment_code_handle"))
        batch_op.drop_index(batch_op.f("ix_enrollment_code_device_id"))

    op.drop_table("enrollment_code")
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credential_device_id"))

    op.drop_table("credential")
    op.drop_table("patient_key")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_patient_id"))

    op.drop_table("device")
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_patient_kind")

    op.drop_table("consent")
    op.drop_table("staff_user")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_reason"))

    op.drop_table("quarantine")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_status"))

    op.drop_table("patient")
    op.drop_table("gateway")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_event_type"))
        batch_op.drop_index(batch_op.f("ix_audit_event_at"))

    op.drop_table("audit_event")
