"""Append-only audit events (the audit issue adds hash chaining and signed checkpoints).

Entries name actors and records by id and carry reason codes; they never hold clinical
values, names, MRNs or serials. :func:`record` only adds a row to the caller's session, so the
event commits or rolls back together with the action it describes. Nothing here updates or
deletes a row.
"""

from __future__ import annotations

import json
import re

from sqlmodel import Session

from hospital_server.models import AuditEvent, utcnow

__all__ = ["EVENT_TYPES", "record"]

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
        "consent.changed",
        "export.created",
        "export.destroyed",
        "patient.erased",
        "retention.disposed",
        "key.rotated",
        "user.changed",
    }
)

# Detail values must look like ids or codes: a guard against a caller passing a value or name.
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{0,128}$")


def record(
    session: Session,
    event_type: str,
    *,
    actor: str,
    subject: str | None = None,
    **detail: str | int | bool | None,
) -> AuditEvent:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {event_type!r}")
    for key, value in detail.items():
        if isinstance(value, str) and not _SAFE.match(value):
            raise ValueError(f"audit detail {key!r} must be an id or a code")
    event = AuditEvent(
        at=utcnow(),
        event_type=event_type,
        actor=actor,
        subject=subject,
        detail=json.dumps(detail, sort_keys=True, separators=(",", ":")),
    )
    session.add(event)
    return event
