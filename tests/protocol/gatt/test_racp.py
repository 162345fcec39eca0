"""RACP as a record-access server uses it: selecting stored records, answering bad requests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from phd_protocol import gatt
from phd_protocol.gatt import (
    DateTime,
    GlucoseMeasurement,
    GlucoseSampleLocation,
    GlucoseType,
    RacpError,
    RacpFilterType,
    RacpOpCode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
)


def _record(sequence: int, hour: int, offset: int | None = None) -> GlucoseMeasurement:
    return GlucoseMeasurement(
        sequence_number=sequence,
        base_time=DateTime(year=2026, month=11, day=22, hours=hour),
        time_offset=offset,
        concentration=Decimal("0.001"),
        type=GlucoseType.CAPILLARY_PLASMA,
        sample_location=GlucoseSampleLocation.FINGER,
    )


STORED = [
    _record(7, 9),
    _record(5, 7),
    _record(6, 8, offset=120),
    GlucoseMeasurement(sequence_number=8, base_time=DateTime()),  # date unknown
]
REPORT = RacpOpCode.REPORT_STORED_RECORDS


def _seqs(request: RacpRequest) -> list[int]:
    return [r.sequence_number for r in request.select(STORED)]


def test_user_facing_time_adds_the_offset() -> None:
    assert _record(6, 8, offset=120).user_facing_time == datetime(2026, 11, 22, 10)  # noqa: DTZ001
    assert STORED[3].user_facing_time is None


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (RacpRequest(op_code=REPORT, operator=RacpOperator.ALL_RECORDS), [5, 6, 7, 8]),
        (RacpRequest(op_code=REPORT, operator=RacpOperator.FIRST_RECORD), [5]),
        (RacpRequest(op_code=REPORT, operator=RacpOperator.LAST_RECORD), [8]),
        (
            RacpRequest(
                op_code=REPORT,
                operator=RacpOperator.GREATER_THAN_OR_EQUAL,
                filter_type=RacpFilterType.SEQUENCE_NUMBER,
                minimum=6,
            ),
            [6, 7, 8],
        ),
        (
            RacpRequest(
                op_code=REPORT,
                operator=RacpOperator.LESS_THAN_OR_EQUAL,
                filter_type=RacpFilterType.SEQUENCE_NUMBER,
                maximum=6,
            ),
            [5, 6],
        ),
        (
            RacpRequest(
                op_code=REPORT,
                operator=RacpOperator.WITHIN_RANGE,
                filter_type=RacpFilterType.USER_FACING_TIME,
                minimum=DateTime(year=2026, month=11, day=22, hours=8),
                maximum=DateTime(year=2026, month=11, day=22, hours=9, minutes=30),
            ),
            [7],  # record 6 is at 10:00 once its offset is applied; 8 has no date
        ),
    ],
)
def test_select(request_: RacpRequest, expected: list[int]) -> None:
    assert _seqs(request_) == expected
    # The request survives the wire unchanged.
    assert gatt.decode(0x2A52, request_.encode()) == request_


def test_a_malformed_request_yields_the_exact_response() -> None:
    with pytest.raises(RacpError) as info:
        gatt.decode(0x2A52, bytes([0x01, 0x03, 0x07, 0x05, 0x00]))
    response = RacpResponse.for_error(info.value)
    assert response == RacpResponse(
        request_op_code=1, response_code=RacpResponseCode.OPERAND_NOT_SUPPORTED
    )
    assert response.encode() == bytes([0x06, 0x00, 0x01, 0x09])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"op_code": RacpOpCode.RESPONSE_CODE},
        {"op_code": REPORT},  # null operator
        {"op_code": RacpOpCode.ABORT_OPERATION, "operator": RacpOperator.ALL_RECORDS},
        {"op_code": REPORT, "operator": RacpOperator.ALL_RECORDS, "minimum": 1},
        {"op_code": REPORT, "operator": RacpOperator.WITHIN_RANGE, "minimum": 1, "maximum": 2},
        {
            "op_code": REPORT,
            "operator": RacpOperator.WITHIN_RANGE,
            "filter_type": RacpFilterType.SEQUENCE_NUMBER,
            "minimum": 3,
            "maximum": 2,
        },
        {
            "op_code": REPORT,
            "operator": RacpOperator.GREATER_THAN_OR_EQUAL,
            "filter_type": RacpFilterType.USER_FACING_TIME,
            "minimum": 5,
        },
    ],
)
def test_invalid_requests_cannot_be_built(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        RacpRequest(**kwargs)  # type: ignore[arg-type]  # deliberately wrong
