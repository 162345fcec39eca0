"""audit chain: entries hash-chained in commit order, signed checkpoints

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Entries already stored are chained in id order (their commit order is not known any more;
id order is how they were listed before), and the head row is set to the last of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

from hospital_server.audit import GENESIS, entry_hash
from hospital_server.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("chain_hash", AutoString(length=64), nullable=True))

    seq, prev = _chain_existing()

    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("chain_hash", existing_type=AutoString(length=64), nullable=False)
        batch_op.create_unique_constraint("uq_audit_event_seq", ["seq"])

    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": seq, "chain_hash": prev.hex()}])
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chain_hash", AutoString(length=64), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("kid", AutoString(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "audit_signing_key",
        sa.Column("kid", AutoString(length=64), nullable=False),
        sa.Column("public_pem", sa.LargeBinary(), nullable=False),
        sa.Column("private_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
    )


def _chain_existing() -> tuple[int, bytes]:
    """Chain the stored entries in id order; returns the last seq and hash."""
    connection = op.get_bind()
    events = sa.table(
        "audit_event",
        sa.column("id", sa.Integer()),
        sa.column("seq", sa.BigInteger()),
        sa.column("at", UTCDateTime(timezone=True)),
        sa.column("event_type", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("detail", sa.String()),
        sa.column("chain_hash", sa.String()),
    )
    rows = connection.execute(
        sa.select(
            events.c.id,
            events.c.at,
            events.c.event_type,
            events.c.actor,
            events.c.subject,
            events.c.detail,
        ).order_by(events.c.id)
    ).all()
    seq, prev = 0, GENESIS
    update = (
        events.update()
        .where(events.c.id == sa.bindparam("row_id"))
        .values(seq=sa.bindparam("new_seq"), chain_hash=sa.bindparam("new_hash"))
    )
    chained = []
    for row_id, at, event_type, actor, subject, detail in rows:
        seq += 1
        prev = entry_hash(
            prev,
            seq=seq,
            at=at,
            event_type=event_type,
            actor=actor,
            subject=subject,
            detail=detail,
        )
        chained.append({"row_id": row_id, "new_seq": seq, "new_hash": prev.hex()})
    if chained:
        connection.execute(update, chained)
    return seq, prev


def downgrade() -> None:
    op.drop_table("audit_signing_key")
    op.drop_table("audit_checkpoint")
    op.drop_table("audit_chain_head")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_constraint("uq_audit_event_seq", type_="unique")
        batch_op.drop_column("chain_hash")
        batch_op.drop_column("seq")
