"""The bulk inserter (COPY on PostgreSQL, executemany on SQLite) stores what the ORM would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlmodel import col, select

from hospital_server.db import IntegrityError, SessionFactory
from hospital_server.ingest.bulk import BulkInserter
from hospital_server.models import Quarantine

T0 = datetime(2026, 11, 23, 10, 30, 15, 123456, tzinfo=UTC)


def _row(n: int, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": n,
        "digest": f"{n:064x}",
        "reason": "bad_signature",
        "gateway_id": "gw-1",
        "device_id": None if n % 2 else f"dev-{n}",
        "kid": None,
        "size": 100 + n,
        "sealed": bytes(range(n % 256)) + b"\x00\\\n\t",  # COPY's escapes in text format
        "received_at": T0 + timedelta(seconds=n),
    }
    return row | over


def _inserter(sessions: SessionFactory) -> BulkInserter:
    with sessions() as s:
        dialect = s.connection().dialect
    return BulkInserter(Quarantine.__table__, dialect)  # type: ignore[attr-defined]


def test_rows_read_back_through_the_orm_exactly(sessions: SessionFactory) -> None:
    bulk = _inserter(sessions)
    # An aware time in another zone is stored as the same instant in UTC.
    east = (T0 + timedelta(hours=1)).astimezone(timezone(timedelta(hours=5)))
    rows = [_row(1), _row(2), _row(3, received_at=east)]
    with sessions() as s:
        bulk.insert(s.connection(), rows)
        s.commit()
    with sessions() as s:
        stored = list(s.exec(select(Quarantine).order_by(col(Quarantine.id))))
    assert [q.model_dump() for q in stored] == [
        _row(1),
        _row(2),
        _row(3, received_at=T0 + timedelta(hours=1)),
    ]
    assert stored[2].received_at.tzinfo is not None


def test_a_unique_violation_is_an_integrity_error_and_nothing_of_the_batch_stays(
    sessions: SessionFactory,
) -> None:
    bulk = _inserter(sessions)
    with sessions() as s:
        bulk.insert(s.connection(), [_row(1)])
        s.commit()
    with sessions() as s:
        with pytest.raises(IntegrityError):
            bulk.insert(s.connection(), [_row(2), _row(3, digest=_row(1)["digest"])])
        s.rollback()
        assert [q.id for q in s.exec(select(Quarantine))] == [1]


def test_a_naive_time_is_refused_not_guessed(sessions: SessionFactory) -> None:
    bulk = _inserter(sessions)
    with sessions() as s, pytest.raises(ValueError, match="naive"):
        bulk.insert(s.connection(), [_row(1, received_at=T0.replace(tzinfo=None))])


def test_repeated_times_convert_once_per_value_and_a_naive_twin_is_still_refused(
    sessions: SessionFactory,
) -> None:
    # The inserter converts each distinct time once per call: the same instant given in two
    # zones is one value (stored as that instant), and a naive time with the same wall clock
    # as an aware one already converted is not taken for it.
    bulk = _inserter(sessions)
    east = T0.astimezone(timezone(timedelta(hours=5)))
    with sessions() as s:
        bulk.insert(s.connection(), [_row(1, received_at=T0), _row(2, received_at=east)])
        s.commit()
    with sessions() as s:
        assert [q.received_at for q in s.exec(select(Quarantine))] == [T0, T0]
    with sessions() as s, pytest.raises(ValueError, match="naive"):
        bulk.insert(
            s.connection(), [_row(3, received_at=T0), _row(4, received_at=T0.replace(tzinfo=None))]
        )


def test_a_missing_column_is_refused_before_anything_is_sent(sessions: SessionFactory) -> None:
    bulk = _inserter(sessions)
    row = _row(1)
    del row["size"]
    with sessions() as s, pytest.raises(KeyError):
        bulk.insert(s.connection(), [row])
    assert bulk.columns[0] == "id"


@pytest.mark.parametrize(
    "moment",
    [
        T0,
        T0.replace(microsecond=0),  # isoformat would drop the fraction without timespec
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    ],
)
def test_sqlite_time_text_is_what_sqlalchemy_itself_would_store(moment: datetime) -> None:
    from sqlalchemy.dialects.sqlite import DATETIME
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    from hospital_server.models import UTCDateTime

    dialect = SQLiteDialect_pysqlite()
    fast = UTCDateTime().bind_processor(dialect)
    standard = DATETIME().bind_processor(dialect)  # type: ignore[no-untyped-call]
    assert fast is not None
    assert standard is not None
    assert fast(moment) == standard(moment.astimezone(UTC).replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive"):
        fast(moment.replace(tzinfo=None))
