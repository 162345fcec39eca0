"""research export: projects, exports, the manifest signing key

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from hospital_server.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "export_signing_key",
        sa.Column("kid", AutoString(length=64), nullable=False),
        sa.Column("public_pem", sa.LargeBinary(), nullable=False),
        sa.Column("private_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "research_project",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("name", AutoString(length=100), nullable=False),
        sa.Column("purpose", AutoString(length=500), nullable=False),
        sa.Column("approval_ref", AutoString(length=100), nullable=False),
        sa.Column("date_profile", AutoString(length=16), nullable=False),
        sa.Column("k_anonymity", sa.Integer(), nullable=False),
        sa.Column("created_by", AutoString(length=36), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "research_export",
        sa.Column("id", AutoString(length=36), nullable=False),
        sa.Column("project_id", AutoString(length=36), nullable=False),
        sa.Column("created_by", AutoString(length=36), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("suppressed_patients", sa.Integer(), nullable=False),
        sa.Column("path", AutoString(length=1000), nullable=False),
        sa.Column("sha256", AutoString(length=64), nullable=False),
        sa.Column("destroyed_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["research_project.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("research_export", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_research_export_project_id"), ["project_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("research_export")
    op.drop_table("research_project")
    op.drop_table("export_signing_key")
