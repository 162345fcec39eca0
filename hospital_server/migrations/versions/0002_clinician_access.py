"""clinician access: second factor, refresh tokens, care teams, break-glass

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from hospital_server.models import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_signing_key",
        sa.Column("kid", AutoString(length=64), nullable=False),
        sa.Column("public_pem", sa.LargeBinary(), nullable=False),
        sa.Column("private_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "break_glass",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("user_id", AutoString(length=36), nullable=False),
        sa.Column("patient_id", AutoString(length=36), nullable=False),
        sa.Column("reason_ct", sa.LargeBinary(), nullable=False),
        sa.Column("granted_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("break_glass", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_break_glass_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(
            "ix_break_glass_user_patient", ["user_id", "patient_id", "expires_at"], unique=False
        )

    op.create_table(
        "care_team_member",
        sa.Column("patient_id", AutoString(length=36), nullable=False),
        sa.Column("user_id", AutoString(length=36), nullable=False),
        sa.Column("added_by", AutoString(length=36), nullable=False),
        sa.Column("added_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_user.id"],
        ),
        sa.PrimaryKeyConstraint("patient_id", "user_id"),
    )
    with op.batch_alter_table("care_team_member", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_care_team_member_user_id"), ["user_id"], unique=False)

    op.create_table(
        "refresh_token",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("user_id", AutoString(length=36), nullable=False),
        sa.Column("family_id", AutoString(length=36), nullable=False),
        sa.Column("token_hash", AutoString(length=64), nullable=False),
        sa.Column("issued_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("refresh_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refresh_token_family_id"), ["family_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_refresh_token_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("staff_user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_wrapped", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("totp_kek_id", AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
        # Existing accounts start with no failed logins.
        batch_op.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("locked_until", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_table("token_signing_key")
    with op.batch_alter_table("staff_user", schema=None) as batch_op:
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("totp_kek_id")
        batch_op.drop_column("totp_wrapped")

    with op.batch_alter_table("refresh_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_token_user_id"))
        batch_op.drop_index(batch_op.f("ix_refresh_token_family_id"))

    op.drop_table("refresh_token")
    with op.batch_alter_table("care_team_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_care_team_member_user_id"))

    op.drop_table("care_team_member")
    with op.batch_alter_table("break_glass", schema=None) as batch_op:
        batch_op.drop_index("ix_break_glass_user_patient")
        batch_op.drop_index(batch_op.f("ix_break_glass_patient_id"))

    op.drop_table("break_glass")
