"""retention: indexes on the times disposal selects by

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingested_envelope", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingested_envelope_sealed_at"), ["sealed_at"], unique=False
        )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantine_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_received_at"))
    with op.batch_alter_table("ingested_envelope", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingested_envelope_sealed_at"))
