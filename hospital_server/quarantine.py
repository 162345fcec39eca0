"""Review and release of quarantined envelopes (``phd server quarantine``).

Ingest keeps every refused envelope in the ``quarantine`` table, still HPKE-sealed, with its
public reason (hospital_server.ingest.process). This module reads that table by metadata only
(digest, reason, gateway, device, credential, size, time: never the sealed bytes) and
*releases* rows: their kept bytes go through the real :class:`Ingestor` again, under the gateway
id recorded on the row, so every check applies as it does today. A row whose envelope is now
stored (or was stored meanwhile: duplicate) leaves quarantine; one refused again stays, with
the reason it is refused for now. Each release run appends one ``quarantine.released`` audit
entry naming the actor, the released digests and counts. Functions here never log.
"""

from __future__ import annotations

import enum
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from hospital_server import audit
from hospital_server.ingest.process import Ingestor
from hospital_server.models import Quarantine, table_of, utcnow
from hospital_server.staff import USERNAME
from phd_protocol import crypto
from phd_protocol.errors import RejectReason
from phd_protocol.wire import AckStatus

__all__ = [
    "EVENT",
    "MAX_RELEASE",
    "MEANINGS",
    "MIN_PREFIX",
    "AmbiguousDigestError",
    "DigestNotFoundError",
    "Entry",
    "Filters",
    "Outcome",
    "Released",
    "count_by_reason",
    "entries",
    "find",
    "release",
]

EVENT = "quarantine.released"
# One run's audit entry names every digest it released, in a detail column of 2,000
# characters: 50 digests of 32 hex digits and the counts fit.
MAX_RELEASE = 50
MIN_PREFIX = 8
_AUDIT_DIGEST = 32  # as ingest.rejected names an envelope
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # an id or a code, as audit details must be
# The digest of zero bytes: an empty envelope kept whole, not an erased patient's.
_EMPTY = crypto.sha256(b"").hex()

# What each public reason means at the hospital, from docs/envelope.md ("Refusals") and the
# check list of hospital_server/ingest/process.py. Nothing here goes beyond those documents.
MEANINGS: dict[RejectReason, str] = {
    RejectReason.TOO_LARGE: "the envelope is longer than the ingest size bound "
    "(PHD_SERVER_MAX_ENVELOPE_BYTES, 64 KiB by default)",
    RejectReason.GATEWAY_REVOKED: "the gateway that relayed it is revoked in the database",
    RejectReason.MALFORMED: "the framing, the COSE_Sign1, the signed payload or its "
    "observation/raw sections do not parse as the profile requires",
    RejectReason.UNKNOWN_RECIPIENT_KEY: "it is sealed to a recipient key id not in the ingest "
    "key ring, or the signed payload names another recipient than the framing",
    RejectReason.DECRYPT_FAILED: "HPKE open failed (encapsulated key, ciphertext, tag or key "
    "do not match)",
    RejectReason.UNKNOWN_CREDENTIAL: "the COSE key id names no credential the hospital knows",
    RejectReason.BAD_SIGNATURE: "the signature does not verify with the credential's key, or "
    "the algorithm does not match the credential's key type",
    RejectReason.CREDENTIAL_REVOKED: "the credential was revoked at or before the sealing time",
    RejectReason.CREDENTIAL_EXPIRED: "the sealing time is outside the certificate's validity",
    RejectReason.NOT_ENROLLED: "the payload's device id differs from the certificate's, or the "
    "device is not enrolled, its patient is not active, or there is no collection consent",
    RejectReason.CLOCK_SKEW: "the sealing time is outside [received - max age, received + "
    "allowed skew] (PHD_SERVER_MAX_ENVELOPE_AGE 30 days, PHD_SERVER_CLOCK_SKEW_FUTURE 5 "
    "minutes, by default)",
    RejectReason.REPLAY: "an envelope with the same credential and seq is already stored with "
    "different signed content",
}


class DigestNotFoundError(LookupError):
    """No quarantined envelope has a digest starting with the prefix."""


class AmbiguousDigestError(LookupError):
    """More than one quarantined envelope has a digest starting with the prefix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Filters:
    reason: RejectReason | None = None
    device_id: str | None = None
    gateway_id: str | None = None
    since: datetime | None = None  # received at or after

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.reason is not None:
            clauses.append(col(Quarantine.reason) == self.reason.value)
        if self.device_id is not None:
            clauses.append(col(Quarantine.device_id) == self.device_id)
        if self.gateway_id is not None:
            clauses.append(col(Quarantine.gateway_id) == self.gateway_id)
        if self.since is not None:
            clauses.append(col(Quarantine.received_at) >= self.since)
        return clauses


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A quarantine row's metadata (never its sealed bytes)."""

    digest: str
    reason: str
    gateway_id: str
    device_id: str | None
    kid: str | None
    size: int
    received_at: datetime

    @property
    def kept(self) -> bool:
        """Whether the sealed bytes are kept (not for an erased patient's envelope)."""
        return self.size > 0 or self.digest == _EMPTY

    @property
    def meaning(self) -> str | None:
        try:
            return MEANINGS[RejectReason(self.reason)]
        except ValueError:
            return None


_COLUMNS = (
    col(Quarantine.digest),
    col(Quarantine.reason),
    col(Quarantine.gateway_id),
    col(Quarantine.device_id),
    col(Quarantine.kid),
    col(Quarantine.size),
    col(Quarantine.received_at),
)


def _entry(row: Sequence[Any]) -> Entry:
    digest, reason, gateway_id, device_id, kid, size, received_at = row
    return Entry(
        digest=digest,
        reason=reason,
        gateway_id=gateway_id,
        device_id=device_id,
        kid=kid,
        size=size,
        received_at=received_at,
    )


def entries(
    session: Session, filters: Filters, *, limit: int, oldest_first: bool = False
) -> list[Entry]:
    """Matching rows, newest first (or oldest first), at most ``limit``."""
    received, row_id = col(Quarantine.received_at), col(Quarantine.id)
    order = (received, row_id) if oldest_first else (received.desc(), row_id.desc())
    statement = sa_select(*_COLUMNS).where(*filters.where()).order_by(*order).limit(limit)
    return [_entry(row) for row in session.connection().execute(statement)]


def count_by_reason(session: Session, filters: Filters) -> dict[str, int]:
    """How many rows match, per reason code (largest first)."""
    statement = (
        sa_select(col(Quarantine.reason), func.count())
        .where(*filters.where())
        .group_by(col(Quarantine.reason))
    )
    counts = {reason: int(n) for reason, n in session.connection().execute(statement)}
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def find(session: Session, prefix: str) -> Entry:
    """The one row whose digest starts with ``prefix`` (8 to 64 hex digits).

    Raises ValueError for a malformed prefix, :class:`DigestNotFoundError` or
    :class:`AmbiguousDigestError`."""
    prefix = prefix.lower()
    if not _HEX.match(prefix):
        raise ValueError(f"a digest prefix is {MIN_PREFIX} to 64 hex digits")
    statement = (
        sa_select(*_COLUMNS)
        .where(col(Quarantine.digest).startswith(prefix, autoescape=True))
        .limit(2)
    )
    rows = session.connection().execute(statement).all()
    if not rows:
        raise DigestNotFoundError(prefix)
    if len(rows) > 1:
        raise AmbiguousDigestError(prefix)
    return _entry(rows[0])


class Outcome(enum.StrEnum):
    STORED = "stored"  # released
    DUPLICATE = "duplicate"  # released: it had been stored already
    REFUSED = "refused"  # stays: refused again
    NOT_KEPT = "not_kept"  # stays: its patient was erased, no bytes to release
    RETRY_LATER = "retry_later"  # stays: a transient database error
    GONE = "gone"  # no longer in quarantine (released or disposed meanwhile)


_LEAVES = frozenset({Outcome.STORED, Outcome.DUPLICATE})


@dataclass(frozen=True, slots=True)
class Released:
    """One row's outcome; ``reason`` is the refusal reason now (REFUSED only)."""

    digest: str
    outcome: Outcome
    previous: str
    reason: str | None = None

    @property
    def left_quarantine(self) -> bool:
        return self.outcome in _LEAVES


def release(
    session: Session,
    ingestor: Ingestor,
    targets: Sequence[Entry],
    *,
    actor: str,
    selection: dict[str, str],
) -> list[Released]:
    """Re-run ingest on ``targets`` (at most :data:`MAX_RELEASE`) and settle their rows.

    Commits: the ingest of each gateway's envelopes is its own transaction (as from a
    worker); then one transaction deletes the released rows, records the current reason of
    those refused again, and appends the audit entry. ``selection`` (ids and codes: how the
    targets were chosen) goes into that entry."""
    if not USERNAME.match(actor):
        raise ValueError("actor must be 1-64 of [A-Za-z0-9_.-]")
    if not all(_SAFE.match(value) for value in selection.values()):
        raise ValueError("selection values must be ids or codes")
    if not 0 < len(targets) <= MAX_RELEASE:
        raise ValueError(f"release 1 to {MAX_RELEASE} envelopes per run")
    session.commit()  # ingest begins its own read transaction on this session
    outcomes: dict[str, Released] = {}
    sealed = _sealed(session, [t.digest for t in targets if t.kept])
    session.commit()
    by_gateway: dict[str, list[Entry]] = {}
    for target in targets:
        if target.digest in outcomes:
            continue
        if not target.kept:
            outcomes[target.digest] = Released(target.digest, Outcome.NOT_KEPT, target.reason)
        elif target.digest not in sealed:
            outcomes[target.digest] = Released(target.digest, Outcome.GONE, target.reason)
        else:
            by_gateway.setdefault(target.gateway_id, []).append(target)
    for gateway_id, group in by_gateway.items():
        results = ingestor.process(session, gateway_id, [sealed[t.digest] for t in group])
        for target, result in zip(group, results, strict=True):
            outcomes[target.digest] = _outcome(target, result.status, result.reason)
    done = [outcomes[digest] for digest in dict.fromkeys(t.digest for t in targets)]
    _settle(session, done, actor=actor, selection=selection)
    session.commit()
    return done


def _sealed(session: Session, digests: list[str]) -> dict[str, bytes]:
    if not digests:
        return {}
    statement = sa_select(col(Quarantine.digest), col(Quarantine.sealed)).where(
        col(Quarantine.digest).in_(digests)
    )
    return {digest: bytes(data) for digest, data in session.connection().execute(statement)}


def _outcome(target: Entry, status: AckStatus, reason: RejectReason | None) -> Released:
    if status is AckStatus.REJECTED and reason is not None:
        return Released(target.digest, Outcome.REFUSED, target.reason, reason.value)
    if status is AckStatus.STORED:
        return Released(target.digest, Outcome.STORED, target.reason)
    if status is AckStatus.DUPLICATE:
        return Released(target.digest, Outcome.DUPLICATE, target.reason)
    return Released(target.digest, Outcome.RETRY_LATER, target.reason)


def _settle(
    session: Session, done: list[Released], *, actor: str, selection: dict[str, str]
) -> None:
    table = table_of(Quarantine)
    released = [r.digest for r in done if r.left_quarantine]
    if released:
        session.connection().execute(delete(table).where(table.c.digest.in_(released)))
    for r in done:
        if r.outcome is Outcome.REFUSED and r.reason != r.previous:
            session.connection().execute(
                update(table).where(table.c.digest == r.digest).values(reason=r.reason)
            )
    counts = Counter(r.outcome.value for r in done)
    detail: dict[str, Any] = {
        **selection,
        "released": [d[:_AUDIT_DIGEST] for d in released],
        **{outcome.value: counts.get(outcome.value, 0) for outcome in Outcome},
    }
    audit.append(
        session,
        [
            {
                "at": utcnow(),
                "event_type": EVENT,
                "actor": actor,
                "subject": None,
                "detail": json.dumps(detail, sort_keys=True, separators=(",", ":")),
            }
        ],
    )
