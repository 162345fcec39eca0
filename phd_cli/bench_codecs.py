"""``phd bench codecs``: how many GATT measurements the codecs decode per second on one core.

Measured, each as the best of several repeats of a timed loop (the least-disturbed run on a
shared machine), over a rotating set of distinct, realistic values so that no cache makes a
repeated input look faster than real traffic would:

- Blood Pressure decode: ``gatt.decode(0x2A35, bytes)`` (dispatch, length checks, SFLOATs,
  time stamp, status), the figure the >= 100,000/s target applies to;
- Blood Pressure decode + to_observations: the same plus building the coded observations
  (compound systolic/diastolic/mean and pulse rate, each with its content id);
- Glucose decode and Temperature decode, for comparison;
- encode: the virtual devices' side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from phd_cli.cmd_bench import BenchRow

PART = "codecs"
DECODE_TARGET = 100_000.0
DEVICE_ID = "0b6f7a52-3c1d-4e8f-9a0b-1c2d3e4f5a6b"


def _blood_pressure_values(count: int) -> list[bytes]:
    from phd_protocol.gatt import (
        BloodPressureMeasurement,
        BloodPressureStatus,
        DateTime,
    )

    out = []
    for i in range(count):
        out.append(
            BloodPressureMeasurement(
                systolic=Decimal(100 + i % 60) + Decimal(i % 10) / 10,
                diastolic=Decimal(60 + i % 30),
                mean_arterial_pressure=Decimal(75 + i % 25),
                timestamp=DateTime(
                    year=2026, month=1 + i % 12, day=1 + i % 28, hours=i % 24, minutes=i % 60
                ),
                pulse_rate=Decimal(55 + i % 40),
                user_id=1 + i % 4,
                status=BloodPressureStatus(i % 8),
            ).encode()
        )
    return out


def _glucose_values(count: int) -> list[bytes]:
    from phd_protocol.gatt import (
        DateTime,
        GlucoseMeasurement,
        GlucoseSampleLocation,
        GlucoseType,
    )

    return [
        GlucoseMeasurement(
            sequence_number=i,
            base_time=DateTime(year=2026, month=2, day=1 + i % 28, hours=i % 24),
            time_offset=0,
            concentration=Decimal(70 + i % 120).scaleb(-5),
            type=GlucoseType.CAPILLARY_PLASMA,
            sample_location=GlucoseSampleLocation.FINGER,
        ).encode()
        for i in range(count)
    ]


def _temperature_values(count: int) -> list[bytes]:
    from phd_protocol.gatt import TemperatureMeasurement, TemperatureType

    return [
        TemperatureMeasurement(
            temperature=Decimal(3600 + i % 250).scaleb(-2),
            temperature_type=TemperatureType.MOUTH,
        ).encode()
        for i in range(count)
    ]


def _best_per_second(
    fn: Callable[[bytes], object], values: Sequence[bytes], rounds: int, repeats: int
) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(rounds):
            for value in values:
                fn(value)
        best = min(best, time.perf_counter_ns() - start)
    return rounds * len(values) / (best / 1e9)


def run(console: Any, quick: bool) -> list[BenchRow]:
    from phd_protocol import gatt

    rounds, repeats = (20, 3) if quick else (100, 5)
    bp = _blood_pressure_values(1000)
    glucose = _glucose_values(1000)
    temperature = _temperature_values(1000)
    received_at = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    decoded_bp = [gatt.decode(0x2A35, v) for v in bp]

    def bp_decode(data: bytes) -> object:
        return gatt.decode(0x2A35, data)

    def bp_observations(data: bytes) -> object:
        return gatt.to_observations(
            gatt.decode(0x2A35, data), device=DEVICE_ID, received_at=received_at
        )

    console.print(f"decoding {len(bp):,} distinct Blood Pressure values x {rounds} rounds ...")
    decode_rate = _best_per_second(bp_decode, bp, rounds, repeats)
    observe_rate = _best_per_second(bp_observations, bp, max(rounds // 5, 2), repeats)
    glucose_rate = _best_per_second(
        lambda d: gatt.decode(0x2A18, d), glucose, max(rounds // 2, 2), repeats
    )
    temperature_rate = _best_per_second(
        lambda d: gatt.decode(0x2A1C, d), temperature, max(rounds // 2, 2), repeats
    )
    by_bytes = dict(zip(bp, decoded_bp, strict=True))
    encode_rate = _best_per_second(lambda d: by_bytes[d].encode(), bp, max(rounds // 2, 2), repeats)
    return [
        BenchRow(
            PART,
            "blood pressure decode (1 core)",
            decode_rate,
            "measurements/s",
            f">= {DECODE_TARGET:,.0f}",
            decode_rate >= DECODE_TARGET,
        ),
        BenchRow(PART, "blood pressure decode + to_observations", observe_rate, "measurements/s"),
        BenchRow(PART, "glucose decode", glucose_rate, "measurements/s"),
        BenchRow(PART, "temperature decode", temperature_rate, "measurements/s"),
        BenchRow(PART, "blood pressure encode", encode_rate, "measurements/s"),
    ]
