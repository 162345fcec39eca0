"""Date Time 0x2A08 (GSS section 3.70): the 7-byte wall-clock time stamp used everywhere.

Layout: year uint16 (1582..9999, 0 = not known), month uint8 (1..12, 0 = not known), day uint8
(1..31, 0 = not known), hours 0..23, minutes 0..59, seconds 0..59. It has no time zone: it is
the device's local clock, which the agent interprets (see ObservationContext.device_tz) and
corrects (phd_protocol.observation.apply_clock_correction).
"""

from __future__ import annotations

import calendar
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from phd_protocol.gatt._codec import Characteristic, Reader, check_int

__all__ = ["DateTime"]

_DT = struct.Struct("<HBBBBB")


@dataclass(frozen=True, slots=True, kw_only=True)
class DateTime(Characteristic):
    """A GATT Date Time; zero in year, month or day means "not known"."""

    uuid: ClassVar[int] = 0x2A08
    name: ClassVar[str] = "Date Time"

    year: int = 0
    month: int = 0
    day: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        if self.year != 0:
            check_int(self.year, 1582, 9999, "year")
        check_int(self.year, 0, 9999, "year")
        check_int(self.month, 0, 12, "month")
        check_int(self.day, 0, 31, "day")
        check_int(self.hours, 0, 23, "hours")
        check_int(self.minutes, 0, 59, "minutes")
        check_int(self.seconds, 0, 59, "seconds")
        if self.is_known and self.day > calendar.monthrange(self.year, self.month)[1]:
            raise ValueError("'day' is past the end of the month")

    @property
    def is_known(self) -> bool:
        return bool(self.year and self.month and self.day)

    def to_datetime(self) -> datetime | None:
        """Naive local datetime, or None when the date is not known."""
        if not self.is_known:
            return None
        return datetime(  # noqa: DTZ001 - the device clock has no zone; the caller assigns one
            self.year, self.month, self.day, self.hours, self.minutes, self.seconds
        )

    @classmethod
    def from_datetime(cls, moment: datetime) -> DateTime:
        """From a datetime's wall-clock fields (sub-second part dropped, zone ignored)."""
        return cls(
            year=moment.year,
            month=moment.month,
            day=moment.day,
            hours=moment.hour,
            minutes=moment.minute,
            seconds=moment.second,
        )

    def pack(self) -> bytes:
        return _DT.pack(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)

    def encode(self) -> bytes:
        return self.pack()

    @classmethod
    def decode(cls, data: bytes) -> DateTime:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        value = reader.date_time("date_time")
        reader.finish()
        return value
