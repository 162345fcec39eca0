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

__all__ = ["DateTime", "fast_date_time"]

_DT = struct.Struct("<HBBBBB")


def _days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


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
        year, month, day = self.year, self.month, self.day
        fast_ok = (
            type(year) is int
            and type(month) is int
            and type(day) is int
            and type(self.hours) is int
            and type(self.minutes) is int
            and type(self.seconds) is int
            and (year == 0 or 1582 <= year <= 9999)
            and 0 <= month <= 12
            and 0 <= day <= 31
            and 0 <= self.hours <= 23
            and 0 <= self.minutes <= 59
            and 0 <= self.seconds <= 59
        )
        if not fast_ok:
            # Slow path only to name the offending field.
            if year != 0:
                check_int(year, 1582, 9999, "year")
            check_int(month, 0, 12, "month")
            check_int(day, 0, 31, "day")
            check_int(self.hours, 0, 23, "hours")
            check_int(self.minutes, 0, 59, "minutes")
            check_int(self.seconds, 0, 59, "seconds")
        if year and month and day > 28 and day > _days_in_month(year, month):
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


_set = object.__setattr__


def fast_date_time(fields: tuple[int, ...]) -> DateTime | None:
    """A DateTime from decoded integers, or None if invalid (the caller re-reads for the error).

    Same rules as the constructor, without its per-field messages: the decode hot path.
    ``fields`` is (year, month, day, hours, minutes, seconds) as unpacked from the wire.
    """
    year, month, day, hours, minutes, seconds = fields
    if not (
        (year == 0 or 1582 <= year <= 9999)
        and month <= 12
        and day <= 31
        and hours <= 23
        and minutes <= 59
        and seconds <= 59
    ):
        return None
    if year and month and day > 28 and day > _days_in_month(year, month):
        return None
    value = object.__new__(DateTime)
    _set(value, "year", year)
    _set(value, "month", month)
    _set(value, "day", day)
    _set(value, "hours", hours)
    _set(value, "minutes", minutes)
    _set(value, "seconds", seconds)
    return value
