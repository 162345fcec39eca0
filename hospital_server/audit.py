"""The audit trail: append-only, hash-chained entries; ids and codes only.

Entries name actors and records by id and carry reason codes; they never hold clinical
values, names, MRNs or serials. :func:`record` (one entry) and :func:`append` (rows written
by ingest) add entries inside the caller's transaction, so an entry commits or rolls back
together with the action it describes. Nothing here updates or deletes an entry.

Each entry is a link of one chain::

    chain_hash(n) = SHA-256(CBOR["phd-audit-entry-v1", chain_hash(n-1), seq, at (µs since
                                 the epoch), event_type, actor, [subject] or [], detail])

with 32 zero bytes before the first entry. ``seq`` numbers entries 1, 2, ... in commit
order: an append locks the one ``audit_chain_head`` row (``FOR UPDATE`` on PostgreSQL; on
SQLite every write transaction already holds the database's write lock), so concurrent
servers and workers never fork the chain, and the lock is held only until their commit.
:mod:`hospital_server.auditlog` signs checkpoints of the chain and verifies it
(``phd audit verify``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from hospital_server.models import AuditChainHead, AuditEvent, table_of, utcnow
from phd_protocol import cbor, crypto

__all__ = ["EVENT_TYPES", "GENESIS", "append", "entry_hash", "record"]

# DESIGN.md section 7, public names.
EVENT_TYPES = frozenset(
    {
        "auth.login",
        "auth.failed",
        "authz.denied",
        "patient.read",
        "observation.read",
        "breakglass.granted",
        "device.enrolled",
        "device.revoked",
        "gateway.revoked",
        "ingest.rejected",
        "quarantine.released",  # this project's addition (docs/OPERATIONS.md, quarantine)
        "consent.changed",
        "export.project",
        "export.created",
        "export.destroyed",
        "patient.erased",
        "retention.disposed",
        "key.rotated",
        "user.changed",
    }
)

# Lines that are records in their own right (signed checkpoints, erasures): the copy outside
# the database that docs/audit.md and docs/disposal.md rely on. INFO on a logger whose level
# is pinned, so a server run at the default WARNING level still writes them. Ids only.
RECORDS = logging.getLogger("phd.records")
RECORDS.setLevel(logging.INFO)

# Detail values must look like ids or codes: a guard against a caller passing a value or name.
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{0,128}$")


def record(
    session: Session,
    event_type: str,
    *,
    actor: str,
    subject: str | None = None,
    **detail: str | int | bool | None,
) -> None:
    """Append one entry (validated: a known type, details that look like ids or codes)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {event_type!r}")
    for key, value in detail.items():
        if isinstance(value, str) and not _SAFE.match(value):
            raise ValueError(f"audit detail {key!r} must be an id or a code")
    append(
        session,
        [
            {
                "at": utcnow(),
                "event_type": event_type,
                "actor": actor,
                "subject": subject,
                "detail": json.dumps(detail, sort_keys=True, separators=(",", ":")),
            }
        ],
    )


def append(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Chain and insert ``rows`` (at, event_type, actor, subject, detail) in the session's
    transaction; the chain head stays locked until it ends."""
    if not rows:
        return
    # Pending ORM changes first, so the head is locked after the rows this transaction
    # writes. Callers write audit entries last in their transaction (after every other row
    # lock: hospital_server.disposal does), which keeps the head's lock short and out of
    # lock cycles with transactions that lock the same rows before auditing.
    session.flush()
    connection = session.connection()
    head = connection.execute(_HEAD).one_or_none()
    if head is None:
        raise RuntimeError("audit chain head missing: run `phd server migrate`")
    seq, prev = head[0], bytes.fromhex(head[1])
    chained = []
    for row in rows:
        seq += 1
        prev = entry_hash(prev, seq=seq, **row)
        chained.append({**row, "seq": seq, "chain_hash": prev.hex()})
    connection.execute(table_of(AuditEvent).insert(), chained)
    connection.execute(_ADVANCE, {"new_seq": seq, "new_hash": prev.hex()})


GENESIS = bytes(32)
_DOMAIN = "phd-audit-entry-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def entry_hash(
    prev: bytes,
    *,
    seq: int,
    at: datetime,
    event_type: str,
    actor: str,
    subject: str | None,
    detail: str,
) -> bytes:
    """The chain hash of one entry after the entry whose hash is ``prev``."""
    if at.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    subjects: list[cbor.Encodable] = [subject] if subject is not None else []
    micros = (at - _EPOCH) // _MICROSECOND
    fields: list[cbor.Encodable] = [_DOMAIN, prev, seq, micros, event_type, actor, subjects, detail]
    return crypto.sha256(cbor.encode(fields))


_HEAD = (
    sa_select(col(AuditChainHead.seq), col(AuditChainHead.chain_hash))
    .where(col(AuditChainHead.id) == 1)
    .with_for_update()
)
_ADVANCE = (
    update(table_of(AuditChainHead))
    .where(table_of(AuditChainHead).c.id == 1)
    .values(seq=bindparam("new_seq"), chain_hash=bindparam("new_hash"))
)
