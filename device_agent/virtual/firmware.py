"""Byte encoders of the virtual PHDs' "firmware": what a real device puts on the air.

Written from the Bluetooth SIG service specifications (BLS 1.1, GLS 1.0.1, HTS 1.0, WSS 1.0,
HRS 1.0, PLXS 1.0.1, DIS 1.1, CTS 1.1) and IEEE 11073-20601 (SFLOAT/FLOAT), independently of
the agent's decoders in ``phd_protocol.gatt``: the end-to-end tests thereby check our decoders
against bytes they did not produce themselves. Only the virtual devices use this module; it
never decodes anything.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = [
    "SFLOAT_NAN",
    "SFLOAT_NRES",
    "Sample",
    "bp_measurement",
    "current_time",
    "date_time",
    "float32",
    "glucose_context",
    "glucose_measurement",
    "heart_rate",
    "plx_continuous",
    "plx_spot_check",
    "racp_number_of_records",
    "racp_response",
    "sfloat",
    "system_id",
    "temperature",
    "weight",
]

# IEEE 11073-20601 section F.8: SFLOAT special values (exponent 0, reserved mantissas).
SFLOAT_NAN = 0x07FF
SFLOAT_NRES = 0x0800
FLOAT_NAN = 0x007FFFFF


@dataclass(frozen=True, slots=True)
class Sample:
    """A decimal value with the power-of-ten exponent the device transmits it with."""

    value: Decimal | None  # None: the device reports NaN (measurement failed)
    exponent: int


def sfloat(sample: Sample) -> bytes:
    """16-bit SFLOAT: 4-bit signed exponent, 12-bit signed mantissa (20601 F.8)."""
    if sample.value is None:
        return struct.pack("<H", SFLOAT_NAN)
    mantissa = int((sample.value / (Decimal(10) ** sample.exponent)).to_integral_value())
    if not -2046 <= mantissa <= 2045 or not -8 <= sample.exponent <= 7:
        raise ValueError("value does not fit an SFLOAT with this exponent")
    return struct.pack("<H", ((sample.exponent & 0xF) << 12) | (mantissa & 0x0FFF))


def float32(sample: Sample) -> bytes:
    """32-bit FLOAT: 8-bit signed exponent, 24-bit signed mantissa (20601 F.6)."""
    if sample.value is None:
        return struct.pack("<I", FLOAT_NAN)
    mantissa = int((sample.value / (Decimal(10) ** sample.exponent)).to_integral_value())
    if not -(2**23) + 3 <= mantissa <= 2**23 - 3:
        raise ValueError("value does not fit a FLOAT with this exponent")
    return struct.pack("<I", ((sample.exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF))


def date_time(when: datetime) -> bytes:
    """Date Time characteristic layout (GATT Specification Supplement 3.70): 7 octets."""
    return struct.pack(
        "<HBBBBB", when.year, when.month, when.day, when.hour, when.minute, when.second
    )


def current_time(when: datetime, *, adjust_reason: int = 0) -> bytes:
    """Current Time 0x2A2B (CTS 3.1): Exact Time 256 + Adjust Reason; 10 octets."""
    fractions256 = when.microsecond * 256 // 1_000_000
    return date_time(when) + struct.pack("<BBB", when.isoweekday(), fractions256, adjust_reason)


def system_id(manufacturer_id: int, oui: int) -> bytes:
    """System ID 0x2A23 (DIS 3.9): 40-bit manufacturer-defined id, then 24-bit OUI, LSO first."""
    return manufacturer_id.to_bytes(5, "little") + oui.to_bytes(3, "little")


def bp_measurement(
    *,
    systolic: Sample,
    diastolic: Sample,
    mean: Sample,
    when: datetime | None,
    pulse: Sample | None,
    status: int | None = None,
) -> bytes:
    """Blood Pressure Measurement 0x2A35 / Intermediate Cuff Pressure 0x2A36 (BLS 3.1), mmHg."""
    flags = 0
    body = sfloat(systolic) + sfloat(diastolic) + sfloat(mean)
    if when is not None:
        flags |= 0x02
        body += date_time(when)
    if pulse is not None:
        flags |= 0x04
        body += sfloat(pulse)
    if status is not None:
        flags |= 0x10
        body += struct.pack("<H", status)
    return bytes([flags]) + body


def glucose_measurement(
    *,
    sequence: int,
    base_time: datetime,
    concentration: Sample,
    sample_type: int = 1,  # capillary whole blood (GLS 3.106.2)
    location: int = 1,  # finger
    has_context: bool = True,
) -> bytes:
    """Glucose Measurement 0x2A18 (GLS 3.106): concentration in kg/L (SFLOAT), no time offset."""
    flags = 0x02 | (0x10 if has_context else 0)
    return (
        bytes([flags])
        + struct.pack("<H", sequence)
        + date_time(base_time)
        + sfloat(concentration)
        + bytes([(location << 4) | sample_type])
    )


def glucose_context(*, sequence: int, meal: int) -> bytes:
    """Glucose Measurement Context 0x2A34 (GLS 3.107): only the Meal field (flag bit 1)."""
    return bytes([0x02]) + struct.pack("<H", sequence) + bytes([meal])


# Record Access Control Point 0x2A52 (GLS 3.108 / Table 3.x): op codes the meter sends.
RACP_NUMBER_OF_RECORDS_RESPONSE = 0x05
RACP_RESPONSE_CODE = 0x06


def racp_response(request_opcode: int, code: int) -> bytes:
    return bytes([RACP_RESPONSE_CODE, 0x00, request_opcode, code])


def racp_number_of_records(count: int) -> bytes:
    return bytes([RACP_NUMBER_OF_RECORDS_RESPONSE, 0x00]) + struct.pack("<H", count)


def temperature(*, celsius: Sample, when: datetime | None, site: int | None) -> bytes:
    """Temperature Measurement 0x2A1C (HTS 3.1): FLOAT in degrees Celsius."""
    flags = 0
    body = float32(celsius)
    if when is not None:
        flags |= 0x02
        body += date_time(when)
    if site is not None:
        flags |= 0x04
        body += bytes([site])
    return bytes([flags]) + body


def weight(*, kilograms: Decimal, when: datetime | None, bmi: Decimal, height_m: Decimal) -> bytes:
    """Weight Measurement 0x2A9D (WSS 3.1): SI units, 0.005 kg, BMI 0.1, height 0.001 m."""
    flags = 0x08
    body = struct.pack("<H", int(kilograms / Decimal("0.005")))
    if when is not None:
        flags |= 0x02
        body += date_time(when)
    body += struct.pack("<HH", int(bmi * 10), int(height_m * 1000))
    return bytes([flags]) + body


def heart_rate(*, bpm: int, rr_1024: list[int], contact: bool) -> bytes:
    """Heart Rate Measurement 0x2A37 (HRS 3.1): uint8 rate, sensor contact, RR intervals."""
    flags = 0x04 | (0x02 if contact else 0) | (0x10 if rr_1024 else 0)
    return bytes([flags, bpm]) + b"".join(struct.pack("<H", rr) for rr in rr_1024)


def plx_spot_check(*, spo2: Sample, pulse: Sample, when: datetime | None) -> bytes:
    """PLX Spot-check Measurement 0x2A5E (PLXS 3.1): SpO2 % and pulse rate, SFLOAT."""
    flags = 0x01 if when is not None else 0
    body = sfloat(spo2) + sfloat(pulse)
    if when is not None:
        body += date_time(when)
    return bytes([flags]) + body


def plx_continuous(*, spo2: Sample, pulse: Sample) -> bytes:
    """PLX Continuous Measurement 0x2A5F (PLXS 3.2): the Normal SpO2/PR pair only."""
    return bytes([0x00]) + sfloat(spo2) + sfloat(pulse)
