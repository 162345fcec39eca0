"""The KEK life cycle over the database: what each KEK still wraps, and re-wrapping it all.

Six kinds of secret are stored wrapped by a key-encryption key (:mod:`hospital_server.keys`),
each bound by associated data to its owner, so a wrap copied onto another row does not open:

    kind              table.column                         bound to
    ----------------  -----------------------------------  -----------------
    patient keys      patient_key.wrapped                  the patient id
    TOTP secrets      staff_user.totp_wrapped              the staff user id
    token keys        token_signing_key.private_wrapped    the key's kid
    audit keys        audit_signing_key.private_wrapped    the key's kid
    export keys       export_signing_key.private_wrapped   the key's kid
    research keys     research_project.key_wrapped         the project id

Retiring a KEK takes three steps (``phd server kek rotate``, ``rewrap``, ``retire``; see
docs/OPERATIONS.md): a new current KEK is added to the key file, :func:`rewrap` re-wraps every
secret still under an older KEK (unwrap, wrap under the current one, in batches, each row
updated only if it still holds the wrap that was read, so a concurrent re-issue wins), and
:func:`usage` proves nothing is left under the old KEK before it is removed from the file.
The wrapped secrets themselves never change: data keys, TOTP secrets and signing keys stay
what they were, so no ciphertext, content MAC, second factor or access token is affected.

Reports carry KEK ids, kinds, row ids and counts; never a key or a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, func, update
from sqlalchemy import select as sa_select
from sqlmodel import SQLModel

from hospital_server.auth.tokens import signing_key_context
from hospital_server.db import SessionFactory
from hospital_server.fieldcrypt import patient_key_context
from hospital_server.keys import KeyProvider, KeyUnavailableError, WrappedKey
from hospital_server.models import (
    AuditSigningKey,
    ExportSigningKey,
    PatientKey,
    ResearchProject,
    StaffUser,
    TokenSigningKey,
    table_of,
)
from hospital_server.research import project_key_context
from hospital_server.signing_keys import AUDIT_KEYS, EXPORT_KEYS
from hospital_server.staff import totp_context

__all__ = ["KINDS", "RewrapReport", "WrappedKind", "rewrap", "usage"]


@dataclass(frozen=True, slots=True)
class WrappedKind:
    """One kind of wrapped secret: where it is stored and what its wrap is bound to."""

    name: str
    model: type[SQLModel]
    id_column: str
    kek_column: str
    blob_column: str
    context: Callable[[str], bytes]

    def columns(self) -> tuple[Column[Any], Column[Any], Column[Any]]:
        table = table_of(self.model)
        return table.c[self.id_column], table.c[self.kek_column], table.c[self.blob_column]


KINDS = (
    WrappedKind("patient keys", PatientKey, "patient_id", "kek_id", "wrapped", patient_key_context),
    WrappedKind("TOTP secrets", StaffUser, "id", "totp_kek_id", "totp_wrapped", totp_context),
    WrappedKind(
        "token keys", TokenSigningKey, "kid", "kek_id", "private_wrapped", signing_key_context
    ),
    WrappedKind(
        "audit keys", AuditSigningKey, "kid", "kek_id", "private_wrapped", AUDIT_KEYS.context
    ),
    WrappedKind(
        "export keys", ExportSigningKey, "kid", "kek_id", "private_wrapped", EXPORT_KEYS.context
    ),
    WrappedKind(
        "research keys", ResearchProject, "id", "kek_id", "key_wrapped", project_key_context
    ),
)


def usage(sessions: SessionFactory) -> dict[str, dict[str, int]]:
    """``{kek_id: {kind: rows}}`` for every KEK some stored secret is wrapped by."""
    out: dict[str, dict[str, int]] = {}
    with sessions() as session:
        for kind in KINDS:
            _id, kek, _blob = kind.columns()
            rows = session.connection().execute(
                sa_select(kek, func.count()).where(kek.is_not(None)).group_by(kek)
            )
            for kek_id, count in rows:
                out.setdefault(str(kek_id), {})[kind.name] = int(count)
    return out


@dataclass(slots=True)
class RewrapReport:
    """What :func:`rewrap` did: rows re-wrapped per kind, and the rows it could not open."""

    current: str
    rewrapped: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)  # kind, row id, KEK

    @property
    def total(self) -> int:
        return sum(self.rewrapped.values())


def rewrap(
    sessions: SessionFactory,
    provider: KeyProvider,
    *,
    batch: int = 200,
    progress: Callable[[str, int], None] | None = None,
) -> RewrapReport:
    """Re-wrap every stored secret not under the current KEK; one transaction per batch.

    A row whose wrap does not open (its KEK is gone from the key file, or it was tampered
    with) is left as it is and reported, never dropped. ``progress(kind, rows)`` follows each
    committed batch. Safe beside running servers and safe to run again (it resumes).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    current = provider.current_kek_id
    report = RewrapReport(current=current)
    for kind in KINDS:
        id_col, kek_col, blob_col = kind.columns()
        report.rewrapped[kind.name] = 0
        after = ""  # keyset paging by id: each row is visited once, unreadable ones included
        while True:
            with sessions() as session:
                connection = session.connection()
                rows = connection.execute(
                    sa_select(id_col, kek_col, blob_col)
                    .where(kek_col.is_not(None), kek_col != current, id_col > after)
                    .order_by(id_col)
                    .limit(batch)
                ).all()
                if not rows:
                    break
                done = 0
                for row_id, kek_id, blob in rows:
                    context = kind.context(row_id)
                    try:
                        secret = provider.unwrap(WrappedKey(kek_id, blob), context=context)
                    except KeyUnavailableError:
                        report.unreadable.append((kind.name, row_id, kek_id))
                        continue
                    new = provider.wrap(secret, context=context)
                    result = connection.execute(
                        update(kind.model.__table__)  # type: ignore[attr-defined] # table=True
                        .where(id_col == row_id, kek_col == kek_id, blob_col == blob)
                        .values({kek_col.name: new.kek_id, blob_col.name: new.blob})
                    )
                    done += result.rowcount  # 0: re-issued meanwhile, under the current KEK
                session.commit()
                after = rows[-1][0]
            report.rewrapped[kind.name] += done
            if progress is not None:
                progress(kind.name, done)
    return report
