"""The virtual PHDs' firmware encoders agree with phd_protocol.gatt byte for byte.

The firmware (device_agent/virtual/firmware.py) is written independently from the SIG
specifications; here each value it produces must decode with phd_protocol.gatt and re-encode
to the very same bytes, so both sides read the specifications the same way.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from device_agent.virtual import firmware as fw
from device_agent.virtual.firmware import Sample
from phd_protocol.gatt import decode, encode

WHEN = datetime(2026, 3, 14, 15, 9, 26)  # noqa: DTZ001 - device clocks carry no zone
NAN = Sample(None, 0)

CASES: list[tuple[int, bytes]] = [
    (
        0x2A35,
        fw.bp_measurement(
            systolic=Sample(Decimal(121), 0),
            diastolic=Sample(Decimal(79), 0),
            mean=Sample(Decimal(93), 0),
            when=WHEN,
            pulse=Sample(Decimal(64), 0),
            status=0,
        ),
    ),
    (
        0x2A35,
        fw.bp_measurement(systolic=NAN, diastolic=NAN, mean=NAN, when=WHEN, pulse=NAN, status=2),
    ),
    (
        0x2A36,
        fw.bp_measurement(
            systolic=Sample(Decimal(90), 0), diastolic=NAN, mean=NAN, when=None, pulse=None
        ),
    ),
    (
        0x2A18,
        fw.glucose_measurement(
            sequence=7, base_time=WHEN, concentration=Sample(Decimal("0.00118"), -5)
        ),
    ),
    (0x2A34, fw.glucose_context(sequence=7, meal=2)),
    (0x2A1C, fw.temperature(celsius=Sample(Decimal("37.2"), -1), when=WHEN, site=6)),
    (
        0x2A9D,
        fw.weight(
            kilograms=Decimal("78.005"), when=WHEN, bmi=Decimal("26.4"), height_m=Decimal("1.72")
        ),
    ),
    (0x2A37, fw.heart_rate(bpm=61, rr_1024=[1007], contact=True)),
    (
        0x2A5E,
        fw.plx_spot_check(spo2=Sample(Decimal(97), 0), pulse=Sample(Decimal(66), 0), when=WHEN),
    ),
    (0x2A5F, fw.plx_continuous(spo2=Sample(Decimal(98), 0), pulse=Sample(Decimal(70), 0))),
    (0x2A2B, fw.current_time(WHEN)),
    (0x2A52, fw.racp_response(0x01, 0x06)),
    (0x2A52, fw.racp_number_of_records(12)),
]


@pytest.mark.parametrize(
    ("uuid", "data"), CASES, ids=[f"{u:04X}-{i}" for i, (u, _) in enumerate(CASES)]
)
def test_firmware_bytes_round_trip_through_phd_protocol(uuid: int, data: bytes) -> None:
    assert encode(decode(uuid, data)) == data


def test_sfloat_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(ValueError, match="SFLOAT"):
        fw.sfloat(Sample(Decimal(5000), 0))  # mantissa beyond 12 bits
