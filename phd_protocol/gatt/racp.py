"""Record Access Control Point 0x2A52 (GLS 1.0 section 3.107 and 4.11; GSS "Record Access
Control Point"): requests for stored glucose records and the meter's responses.

Layout: ``op code (uint8) | operator (uint8) | operand (variable)``.

=====  ===================================  ==========  ========================================
op     meaning                              operator    operand
=====  ===================================  ==========  ========================================
1      Report stored records                1-6         filter (operators 2-4), else none
2      Delete stored records                1-6         filter (operators 2-4), else none
3      Abort operation                      0 (null)    none
4      Report number of stored records      1-6         filter (operators 2-4), else none
5      Number of stored records response    0 (null)    uint16 count
6      Response code                        0 (null)    request op code (uint8), response (uint8)
=====  ===================================  ==========  ========================================

Operators: 0 null, 1 all records, 2 less than or equal to, 3 greater than or equal to,
4 within range of (inclusive), 5 first record, 6 last record. A filter is a filter type byte
(1 sequence number: uint16 values; 2 user facing time: Date Time values) followed by the
maximum (operator 2), the minimum (operator 3) or the minimum and maximum (operator 4).
Response codes: 1 success, 2 op code not supported, 3 invalid operator, 4 operator not
supported, 5 invalid operand, 6 no records found, 7 abort unsuccessful, 8 procedure not
completed, 9 operand not supported.

Decoding a malformed request raises :class:`RacpError` (a ParseError) whose ``response_code``
is what a record-access server must answer (GLS 4.11.4), so a virtual meter can reply exactly.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from phd_protocol.errors import ParseError
from phd_protocol.gatt._codec import Characteristic, Reader, check_int
from phd_protocol.gatt.date_time import DateTime
from phd_protocol.gatt.glucose import GlucoseMeasurement

__all__ = [
    "RacpError",
    "RacpFilterType",
    "RacpNumberOfRecords",
    "RacpOpCode",
    "RacpOperator",
    "RacpRequest",
    "RacpResponse",
    "RacpResponseCode",
    "RacpValue",
    "decode_racp",
]

_LABEL = "Record Access Control Point (2A52)"


class RacpOpCode(enum.IntEnum):
    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(enum.IntEnum):
    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL = 2
    GREATER_THAN_OR_EQUAL = 3
    WITHIN_RANGE = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class RacpFilterType(enum.IntEnum):
    SEQUENCE_NUMBER = 1
    USER_FACING_TIME = 2


class RacpResponseCode(enum.IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


_REQUEST_OPS = frozenset(
    {
        RacpOpCode.REPORT_STORED_RECORDS,
        RacpOpCode.DELETE_STORED_RECORDS,
        RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
    }
)
_FILTERED = frozenset(
    {
        RacpOperator.LESS_THAN_OR_EQUAL,
        RacpOperator.GREATER_THAN_OR_EQUAL,
        RacpOperator.WITHIN_RANGE,
    }
)


class RacpError(ParseError):
    """A malformed RACP value; ``response_code`` is the answer GLS 4.11.4 prescribes.

    ``request_op_code`` is the op code to echo in the response (0 when there was none).
    """

    def __init__(self, message: str, *, response_code: RacpResponseCode, request_op_code: int):
        super().__init__(f"{_LABEL}: {message}")
        self.response_code = response_code
        self.request_op_code = request_op_code


FilterValue = int | DateTime


def _filter_key(value: FilterValue) -> tuple[int, ...]:
    if isinstance(value, DateTime):
        return (value.year, value.month, value.day, value.hours, value.minutes, value.seconds)
    return (value,)


def _check_filter_value(value: object, filter_type: RacpFilterType, field: str) -> None:
    if filter_type is RacpFilterType.SEQUENCE_NUMBER:
        check_int(value, 0, 0xFFFF, field)
    elif not isinstance(value, DateTime):
        raise ValueError(f"'{field}' must be a DateTime for a user facing time filter")


@dataclass(frozen=True, slots=True, kw_only=True)
class RacpRequest(Characteristic):
    """A request written by the collector (op codes 1-4)."""

    uuid: ClassVar[int] = 0x2A52
    name: ClassVar[str] = "Record Access Control Point"

    op_code: RacpOpCode
    operator: RacpOperator = RacpOperator.NULL
    filter_type: RacpFilterType | None = None
    minimum: FilterValue | None = None
    maximum: FilterValue | None = None

    def __post_init__(self) -> None:
        op_code: object = self.op_code
        operator: object = self.operator
        if not isinstance(op_code, RacpOpCode) or (
            op_code not in _REQUEST_OPS and op_code is not RacpOpCode.ABORT_OPERATION
        ):
            raise ValueError("'op_code' must be a request op code (1-4)")
        if not isinstance(operator, RacpOperator):
            raise ValueError("'operator' must be a RacpOperator")
        if self.op_code is RacpOpCode.ABORT_OPERATION:
            if self.operator is not RacpOperator.NULL or self.filter_type is not None:
                raise ValueError("abort takes the null operator and no operand")
            return
        if self.operator is RacpOperator.NULL:
            raise ValueError("this op code needs an operator other than null")
        if self.operator not in _FILTERED:
            if self.filter_type is not None or self.minimum is not None or self.maximum is not None:
                raise ValueError("this operator takes no operand")
            return
        if not isinstance(self.filter_type, RacpFilterType):
            raise ValueError("'filter_type' is required for operators 2-4")
        wants_min = self.operator is not RacpOperator.LESS_THAN_OR_EQUAL
        wants_max = self.operator is not RacpOperator.GREATER_THAN_OR_EQUAL
        if (self.minimum is not None) != wants_min or (self.maximum is not None) != wants_max:
            raise ValueError(
                "operator 2 takes 'maximum', 3 takes 'minimum', 4 takes both (inclusive)"
            )
        if self.minimum is not None:
            _check_filter_value(self.minimum, self.filter_type, "minimum")
        if self.maximum is not None:
            _check_filter_value(self.maximum, self.filter_type, "maximum")
        if (
            self.minimum is not None
            and self.maximum is not None
            and _filter_key(self.minimum) > _filter_key(self.maximum)
        ):
            raise ValueError("'minimum' is after 'maximum'")

    def select(self, records: Iterable[GlucoseMeasurement]) -> list[GlucoseMeasurement]:
        """The stored records this request addresses, oldest first (GLS 4.11.2-4.11.3).

        For a record-access server (a virtual meter): "first"/"last" are the lowest/highest
        sequence numbers; time filters compare the user facing time (base time + offset) and
        skip records whose date is unknown.
        """
        ordered = sorted(records, key=lambda r: r.sequence_number)
        op = self.operator
        if op is RacpOperator.ALL_RECORDS:
            return ordered
        if op is RacpOperator.FIRST_RECORD:
            return ordered[:1]
        if op is RacpOperator.LAST_RECORD:
            return ordered[-1:]
        if op is RacpOperator.NULL:
            return []
        low = None if self.minimum is None else _filter_key(self.minimum)
        high = None if self.maximum is None else _filter_key(self.maximum)
        selected = []
        for record in ordered:
            if self.filter_type is RacpFilterType.SEQUENCE_NUMBER:
                key: tuple[int, ...] = (record.sequence_number,)
            else:
                moment = record.user_facing_time
                if moment is None:
                    continue
                key = (
                    moment.year,
                    moment.month,
                    moment.day,
                    moment.hour,
                    moment.minute,
                    moment.second,
                )
            if (low is None or key >= low) and (high is None or key <= high):
                selected.append(record)
        return selected

    def encode(self) -> bytes:
        out = bytearray((self.op_code, self.operator))
        if self.filter_type is not None:
            out.append(self.filter_type)
            for value in (self.minimum, self.maximum):
                if value is None:
                    continue
                out += value.pack() if isinstance(value, DateTime) else struct.pack("<H", value)
        return bytes(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class RacpNumberOfRecords(Characteristic):
    """Number of stored records response (op code 5), indicated by the meter."""

    uuid: ClassVar[int] = 0x2A52
    name: ClassVar[str] = "Record Access Control Point"

    count: int

    def __post_init__(self) -> None:
        check_int(self.count, 0, 0xFFFF, "count")

    def encode(self) -> bytes:
        return struct.pack(
            "<BBH", RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, RacpOperator.NULL, self.count
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RacpResponse(Characteristic):
    """Response code (op code 6) to a request, indicated by the meter."""

    uuid: ClassVar[int] = 0x2A52
    name: ClassVar[str] = "Record Access Control Point"

    request_op_code: int  # echoed as received, even when it is not a supported op code
    response_code: RacpResponseCode

    def __post_init__(self) -> None:
        check_int(self.request_op_code, 0, 255, "request_op_code")
        if not isinstance(self.response_code, RacpResponseCode):
            raise ValueError("'response_code' must be a RacpResponseCode")

    def encode(self) -> bytes:
        return bytes(
            (RacpOpCode.RESPONSE_CODE, RacpOperator.NULL, self.request_op_code, self.response_code)
        )

    @classmethod
    def for_error(cls, error: RacpError) -> RacpResponse:
        """The response a record-access server sends for a request it could not parse."""
        return cls(request_op_code=error.request_op_code, response_code=error.response_code)


RacpValue = RacpRequest | RacpNumberOfRecords | RacpResponse


def _fail(message: str, code: RacpResponseCode, op: int) -> RacpError:
    return RacpError(message, response_code=code, request_op_code=op)


def _read_filter_value(reader: Reader, filter_type: RacpFilterType, field: str) -> FilterValue:
    if filter_type is RacpFilterType.SEQUENCE_NUMBER:
        return reader.u16(field)
    return reader.date_time(field)


def decode_racp(data: bytes) -> RacpValue:
    """Decode any RACP value (request or response); RacpError (a ParseError) if malformed."""
    reader = Reader(_LABEL, data)
    if len(reader.data) < 2:
        raise _fail(
            f"value truncated at offset {len(reader.data)}: op code and operator need 2 bytes",
            RacpResponseCode.INVALID_OPERAND,
            reader.data[0] if reader.data else 0,
        )
    raw_op = reader.u8("op_code")
    raw_operator = reader.u8("operator")
    try:
        op = RacpOpCode(raw_op)
    except ValueError:
        raise _fail(
            "op code at offset 0 is not supported", RacpResponseCode.OP_CODE_NOT_SUPPORTED, raw_op
        ) from None
    try:
        operator = RacpOperator(raw_operator)
    except ValueError:
        raise _fail(
            "operator at offset 1 is not defined", RacpResponseCode.INVALID_OPERATOR, raw_op
        ) from None

    if op in (
        RacpOpCode.ABORT_OPERATION,
        RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE,
        RacpOpCode.RESPONSE_CODE,
    ):
        if operator is not RacpOperator.NULL:
            raise _fail(
                "operator at offset 1 must be null for this op code",
                RacpResponseCode.INVALID_OPERATOR,
                raw_op,
            )
        expected = {
            RacpOpCode.ABORT_OPERATION: 0,
            RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE: 2,
            RacpOpCode.RESPONSE_CODE: 2,
        }[op]
        if reader.remaining() != expected:
            raise _fail(
                f"operand at offset 2 must be {expected} byte(s), got {reader.remaining()}",
                RacpResponseCode.INVALID_OPERAND,
                raw_op,
            )
        if op is RacpOpCode.ABORT_OPERATION:
            return RacpRequest(op_code=op)
        if op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
            return RacpNumberOfRecords(count=reader.u16("count"))
        request_op = reader.u8("request_op_code")
        raw_code = reader.u8("response_code")
        try:
            code = RacpResponseCode(raw_code)
        except ValueError:
            raise _fail(
                "reserved value in 'response_code' at offset 3",
                RacpResponseCode.INVALID_OPERAND,
                raw_op,
            ) from None
        return RacpResponse(request_op_code=request_op, response_code=code)

    if operator is RacpOperator.NULL:
        raise _fail(
            "operator at offset 1 must not be null for this op code",
            RacpResponseCode.INVALID_OPERATOR,
            raw_op,
        )
    if operator not in _FILTERED:
        if reader.remaining():
            raise _fail(
                "this operator takes no operand (bytes at offset 2)",
                RacpResponseCode.INVALID_OPERAND,
                raw_op,
            )
        return RacpRequest(op_code=op, operator=operator)
    if not reader.remaining():
        raise _fail("filter type missing at offset 2", RacpResponseCode.INVALID_OPERAND, raw_op)
    raw_filter = reader.u8("filter_type")
    try:
        filter_type = RacpFilterType(raw_filter)
    except ValueError:
        raise _fail(
            "filter type at offset 2 is not supported",
            RacpResponseCode.OPERAND_NOT_SUPPORTED,
            raw_op,
        ) from None
    size = 2 if filter_type is RacpFilterType.SEQUENCE_NUMBER else 7
    count = 2 if operator is RacpOperator.WITHIN_RANGE else 1
    if reader.remaining() != size * count:
        raise _fail(
            f"operand at offset 3 must be {size * count} byte(s), got {reader.remaining()}",
            RacpResponseCode.INVALID_OPERAND,
            raw_op,
        )
    try:
        first = _read_filter_value(reader, filter_type, "filter_value")
        second = _read_filter_value(reader, filter_type, "filter_maximum") if count == 2 else None
        if operator is RacpOperator.LESS_THAN_OR_EQUAL:
            return RacpRequest(
                op_code=op, operator=operator, filter_type=filter_type, maximum=first
            )
        if operator is RacpOperator.GREATER_THAN_OR_EQUAL:
            return RacpRequest(
                op_code=op, operator=operator, filter_type=filter_type, minimum=first
            )
        return RacpRequest(
            op_code=op, operator=operator, filter_type=filter_type, minimum=first, maximum=second
        )
    except ValueError as exc:  # ParseError from the date reader, or minimum after maximum
        raise _fail(
            f"operand is invalid: {exc}", RacpResponseCode.INVALID_OPERAND, raw_op
        ) from None
