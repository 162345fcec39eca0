"""Current Time 0x2A2B (CTS 1.1 section 3.1 / GSS "Current Time"): the PHD's clock.

Layout (10 bytes): Exact Time 256 = Day Date Time (Date Time (7) + Day of Week uint8, 0
unknown, 1 Monday .. 7 Sunday) + Fractions256 uint8 (1/256 s), then Adjust Reason uint8
(bit0 manual time update, bit1 external reference time update, bit2 change of time zone,
bit3 change of DST, bits 4-7 RFU).

The agent reads it on connect to measure the device clock's offset (see
phd_protocol.observation.apply_clock_correction) and writes it to set the clock where the
PHD allows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from phd_protocol.gatt._codec import Characteristic, Reader, check_int
from phd_protocol.gatt.date_time import DateTime

__all__ = ["AdjustReason", "CurrentTime"]


class AdjustReason(enum.IntFlag):
    MANUAL_TIME_UPDATE = 0x01
    EXTERNAL_REFERENCE_TIME_UPDATE = 0x02
    CHANGE_OF_TIME_ZONE = 0x04
    CHANGE_OF_DST = 0x08


_NO_REASON = AdjustReason(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentTime(Characteristic):
    """The value of the Current Time characteristic."""

    uuid: ClassVar[int] = 0x2A2B
    name: ClassVar[str] = "Current Time"

    date_time: DateTime
    day_of_week: int = 0  # 0 unknown, 1 Monday .. 7 Sunday
    fractions256: int = 0
    adjust_reason: AdjustReason = _NO_REASON

    def __post_init__(self) -> None:
        if not isinstance(self.date_time, DateTime):
            raise ValueError("'date_time' must be a DateTime")
        check_int(self.day_of_week, 0, 7, "day_of_week")
        check_int(self.fractions256, 0, 255, "fractions256")
        if not isinstance(self.adjust_reason, AdjustReason):
            raise ValueError("'adjust_reason' must be an AdjustReason")

    @classmethod
    def from_datetime(
        cls, moment: datetime, *, adjust_reason: AdjustReason = _NO_REASON
    ) -> CurrentTime:
        """From a datetime's wall-clock fields (as the PHD should display them)."""
        return cls(
            date_time=DateTime.from_datetime(moment),
            day_of_week=moment.isoweekday(),
            fractions256=moment.microsecond * 256 // 1_000_000,
            adjust_reason=adjust_reason,
        )

    def to_datetime(self) -> datetime | None:
        """Naive wall-clock datetime (device local time), or None when the date is unknown."""
        base = self.date_time.to_datetime()
        if base is None:
            return None
        return base + timedelta(microseconds=self.fractions256 * 1_000_000 // 256)

    def encode(self) -> bytes:
        return self.date_time.pack() + bytes(
            (self.day_of_week, self.fractions256, int(self.adjust_reason))
        )

    @classmethod
    def decode(cls, data: bytes) -> CurrentTime:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        date_time = reader.date_time("date_time")
        at = reader.offset
        day_of_week = reader.u8("day_of_week")
        if day_of_week > 7:
            raise reader.fail(f"reserved value in 'day_of_week' at offset {at}")
        fractions = reader.u8("fractions256")
        at = reader.offset
        reason = reader.u8("adjust_reason")
        reader.check_flags(reason, 0x0F, "adjust_reason", at)
        reader.finish()
        return cls(
            date_time=date_time,
            day_of_week=day_of_week,
            fractions256=fractions,
            adjust_reason=AdjustReason(reason),
        )
