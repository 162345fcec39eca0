"""The virtual glucose meter's Record Access Control Point, driven through the agent's link.

Checks the meter side of GLS 3.108 that the agent's download relies on: number of records,
report >= sequence, delete, abort, refusal of a bad operator, and that the RACP refuses a
collector that has not enabled indications or has no encrypted link.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from device_agent.ble import PhdLink, Reading, SecurityPolicy
from device_agent.errors import BleError, BleFailure
from device_agent.virtual.phds import Faults, GlucoseMeter
from phd_protocol.gatt.racp import (
    RacpFilterType,
    RacpNumberOfRecords,
    RacpOpCode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    decode_racp,
)
from tests.agent.conftest import World


def _request(op: RacpOpCode, operator: RacpOperator, minimum: int | None = None) -> bytes:
    if minimum is None:
        return RacpRequest(op_code=op, operator=operator).encode()
    return RacpRequest(
        op_code=op,
        operator=operator,
        filter_type=RacpFilterType.SEQUENCE_NUMBER,
        minimum=minimum,
    ).encode()


async def test_meter_racp_procedures(world: World) -> None:
    meter = await world.start(GlucoseMeter(world.radio, records=8, live_count=0))
    link = await PhdLink.open(meter.address, world.backends, SecurityPolicy())
    received: list[Reading] = []
    try:
        await link.subscribe(received.append, lambda: datetime.now(UTC))
        count = decode_racp(
            await link.racp(
                _request(RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS, RacpOperator.ALL_RECORDS),
                wait=5,
            )
        )
        assert count == RacpNumberOfRecords(count=8)

        answer = decode_racp(
            await link.racp(
                _request(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.GREATER_THAN_OR_EQUAL, 6),
                wait=5,
            )
        )
        assert answer == RacpResponse(
            request_op_code=RacpOpCode.REPORT_STORED_RECORDS,
            response_code=RacpResponseCode.SUCCESS,
        )
        sequences = [int.from_bytes(r.data[1:3], "little") for r in received if r.uuid == 0x2A18]
        assert sequences == [6, 7, 8]

        deleted = decode_racp(
            await link.racp(
                _request(RacpOpCode.DELETE_STORED_RECORDS, RacpOperator.ALL_RECORDS), wait=5
            )
        )
        assert isinstance(deleted, RacpResponse)
        assert deleted.response_code is RacpResponseCode.SUCCESS
        empty = decode_racp(
            await link.racp(
                _request(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.ALL_RECORDS), wait=5
            )
        )
        assert isinstance(empty, RacpResponse)
        assert empty.response_code is RacpResponseCode.NO_RECORDS_FOUND

        aborted = decode_racp(
            await link.racp(RacpRequest(op_code=RacpOpCode.ABORT_OPERATION).encode(), wait=5)
        )
        assert isinstance(aborted, RacpResponse)
        assert aborted.response_code is RacpResponseCode.SUCCESS

        # "first record" is a valid operator the meter does not implement: refused properly.
        refused = decode_racp(
            await link.racp(
                _request(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.FIRST_RECORD), wait=5
            )
        )
        assert isinstance(refused, RacpResponse)
        assert refused.response_code is RacpResponseCode.OPERATOR_NOT_SUPPORTED
    finally:
        await link.close()


async def test_meter_refuses_subscriptions_on_an_unencrypted_link(world: World) -> None:
    # Our policy is relaxed and the meter refuses to pair: the link stays unencrypted, and
    # the meter itself (CCCD write permission: encryption required) refuses the subscription.
    meter = await world.start(
        GlucoseMeter(world.radio, records=3, live_count=0, faults=Faults(refuse_pairing=True))
    )
    link = await PhdLink.open(
        meter.address, world.backends, SecurityPolicy(require_encryption=False)
    )
    try:
        assert link.security is not None
        assert not link.security.encrypted
        with pytest.raises(BleError) as caught:
            await link.subscribe(lambda _reading: None, lambda: datetime.now(UTC))
        assert caught.value.reason is BleFailure.GATT_ERROR
        assert "ATT error 0x0F" in str(caught.value)  # Insufficient Encryption (Core 3.F.3.4.1.1)
        assert meter.sent_total == 0
    finally:
        await link.close()
