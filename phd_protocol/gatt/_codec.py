"""Shared building blocks of the GATT codecs: a bounds-checked reader, packers, time helpers.

Every read goes through :class:`Reader`, which checks the length *before* reading and raises
:class:`~phd_protocol.errors.ParseError` naming the characteristic, the field and the offset,
never the bytes. All multi-byte fields are little-endian (Bluetooth Core Vol 3 Part G 3.3.3.2;
GSS section 2.2 "all multi-octet fields are little-endian").
"""

from __future__ import annotations

import abc
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from phd_protocol.errors import ParseError
from phd_protocol.observation import (  # private fast path, see its docstring
    Component,
    Observation,
    TimeSource,
    _trusted_observation,
)
from phd_protocol.sfloat import (
    MedicalNumber,
    SpecialValue,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
)

if TYPE_CHECKING:
    from phd_protocol.gatt.date_time import DateTime

__all__ = [
    "Characteristic",
    "ObservationContext",
    "Reader",
    "Timing",
    "check_int",
    "check_number",
    "pack_float",
    "pack_sfloat",
    "scale",
    "u8",
    "u16",
    "u24",
]

_DEVICE_RE = re.compile(r"^[\x21-\x7e]{1,128}$")  # the rule Observation.create applies
Timing = tuple[datetime, TimeSource, datetime | None]
"""(time, time source, original device time) of one measurement."""

_U16 = struct.Struct("<H")
_S16 = struct.Struct("<h")
_U32 = struct.Struct("<I")
_DT = struct.Struct("<HBBBBB")


class Characteristic(abc.ABC):
    """Base of every decoded characteristic value (frozen dataclasses with slots)."""

    __slots__ = ()
    uuid: ClassVar[int]
    name: ClassVar[str]

    @abc.abstractmethod
    def encode(self) -> bytes:
        """The characteristic value's bytes, as the device sends them."""

    def observations(self, ctx: ObservationContext) -> tuple[Observation, ...]:
        """The coded observations this value carries; none for descriptive characteristics."""
        del ctx
        return ()


class Reader:
    """Sequential little-endian reader over one characteristic value."""

    __slots__ = ("data", "label", "offset")

    def __init__(self, label: str, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("characteristic data must be bytes")
        self.label = label
        self.data = bytes(data)
        self.offset = 0

    def fail(self, message: str) -> ParseError:
        return ParseError(f"{self.label}: {message}")

    def _need(self, size: int, field: str) -> int:
        offset = self.offset
        if offset + size > len(self.data):
            left = len(self.data) - offset
            raise ParseError(
                f"{self.label}: field '{field}' truncated at offset {offset}: "
                f"needs {size} byte(s), {left} left"
            )
        self.offset = offset + size
        return offset

    def u8(self, field: str) -> int:
        return self.data[self._need(1, field)]

    def u16(self, field: str) -> int:
        value: int = _U16.unpack_from(self.data, self._need(2, field))[0]
        return value

    def s16(self, field: str) -> int:
        value: int = _S16.unpack_from(self.data, self._need(2, field))[0]
        return value

    def u24(self, field: str) -> int:
        offset = self._need(3, field)
        return int.from_bytes(self.data[offset : offset + 3], "little")

    def u32(self, field: str) -> int:
        value: int = _U32.unpack_from(self.data, self._need(4, field))[0]
        return value

    def sfloat(self, field: str) -> MedicalNumber:
        return decode_sfloat(_U16.unpack_from(self.data, self._need(2, field))[0])

    def float32(self, field: str) -> MedicalNumber:
        return decode_float(_U32.unpack_from(self.data, self._need(4, field))[0])

    def take(self, size: int, field: str) -> bytes:
        offset = self._need(size, field)
        return self.data[offset : offset + size]

    def date_time(self, field: str) -> DateTime:
        from phd_protocol.gatt.date_time import DateTime  # noqa: PLC0415 - import cycle

        offset = self._need(7, field)
        year, month, day, hours, minutes, seconds = _DT.unpack_from(self.data, offset)
        try:
            return DateTime(
                year=year, month=month, day=day, hours=hours, minutes=minutes, seconds=seconds
            )
        except ValueError as exc:
            raise ParseError(f"{self.label}: field '{field}' at offset {offset}: {exc}") from None

    def remaining(self) -> int:
        return len(self.data) - self.offset

    def check_flags(self, flags: int, allowed: int, field: str = "flags", offset: int = 0) -> None:
        if flags & ~allowed:
            raise ParseError(
                f"{self.label}: reserved bit(s) set in '{field}' at offset {offset} "
                f"(mask 0x{flags & ~allowed:X})"
            )

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise ParseError(
                f"{self.label}: {len(self.data) - self.offset} unexpected trailing byte(s) "
                f"at offset {self.offset}"
            )


# --- packing ----------------------------------------------------------------------------------


def u8(value: int) -> bytes:
    return bytes((value,))


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def pack_sfloat(value: MedicalNumber) -> bytes:
    return _U16.pack(encode_sfloat(value))


def pack_float(value: MedicalNumber) -> bytes:
    return _U32.pack(encode_float(value))


def scale(value: MedicalNumber, power_of_ten: int) -> MedicalNumber:
    """Exact unit conversion by a power of ten (only the exponent moves); specials unchanged."""
    if isinstance(value, SpecialValue):
        return value
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # pragma: no cover - decoded numbers are finite
        raise ValueError("cannot scale a non-finite number")
    shifted = exponent + power_of_ten
    if shifted > 0:
        # Whole numbers read better as integers (950, not 9.5E+2); still exact.
        return Decimal(int(Decimal((sign, digits, shifted))))
    return Decimal((sign, digits, shifted))


# --- constructor validation (ValueError; decoders translate to ParseError) --------------------


def check_int(value: object, low: int, high: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"'{field}' must be an integer in {low}..{high}")


def check_number(value: object, field: str, *, sfloat: bool = True) -> None:
    """A field carried as SFLOAT/FLOAT: must be exactly representable (checked by encoding)."""
    if not isinstance(value, Decimal | SpecialValue):
        raise ValueError(f"'{field}' must be a Decimal or a SpecialValue")
    if isinstance(value, Decimal) and not value.is_finite():
        # Checked before the cache: a signalling NaN cannot even be hashed.
        raise ValueError(f"'{field}' must be finite; use SpecialValue for NaN and infinities")
    problem = _representable(value, sfloat)
    if problem is not None:
        raise ValueError(f"'{field}': {problem}")


@lru_cache(maxsize=8192)
def _representable(value: MedicalNumber, sfloat: bool) -> str | None:
    # Representability depends only on the numeric value (equal Decimals normalise alike), so
    # caching by value is sound; it keeps constructor validation off the decode hot path.
    try:
        if sfloat:
            encode_sfloat(value)
        else:
            encode_float(value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


# --- observation helpers ----------------------------------------------------------------------


def _check_context(device: object, received_at: object, device_tz: object) -> None:
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ValueError("device must be 1-128 printable ASCII characters")
    if not isinstance(received_at, datetime) or received_at.tzinfo is None:
        raise ValueError("received_at must be a timezone-aware datetime")
    if not isinstance(device_tz, tzinfo):
        raise ValueError("device_tz must be a tzinfo")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationContext:
    """What turning a characteristic into observations needs besides its bytes.

    ``device`` is the enrolled device id (it goes into the content id); ``received_at`` is the
    agent's clock when the value arrived (used when the device sent no time stamp);
    ``device_tz`` is how to read the device's local wall-clock time stamps (GATT Date Time has
    no zone), UTC unless the agent knows the patient's zone; ``char`` is set by the dispatcher.
    """

    device: str
    received_at: datetime
    device_tz: tzinfo = UTC

    def __post_init__(self) -> None:
        _check_context(self.device, self.received_at, self.device_tz)
        # Observation times are UTC; normalise once here rather than per observation.
        object.__setattr__(self, "received_at", self.received_at.astimezone(UTC))

    def timing(self, stamp: DateTime | None, offset: timedelta | None = None) -> Timing:
        """(time, source, device_time) for a value with an optional device time stamp."""
        if stamp is not None and stamp.year and stamp.month and stamp.day:
            device_time = datetime(
                stamp.year,
                stamp.month,
                stamp.day,
                stamp.hours,
                stamp.minutes,
                stamp.seconds,
                tzinfo=self.device_tz,
            )
            if self.device_tz is not UTC:
                device_time = device_time.astimezone(UTC)
            if offset is not None:
                device_time += offset
            return device_time, TimeSource.DEVICE, device_time
        return self.received_at, TimeSource.AGENT, None

    def observation(
        self,
        *,
        char: int,
        mdc_code: int,
        value: MedicalNumber | None,
        unit: str,
        unit_mdc: int,
        when: Timing,
        loinc: str | None = None,
        components: tuple[Component, ...] = (),
        flags: frozenset[str] = frozenset(),
    ) -> Observation:
        return _trusted_observation(
            self.device,
            mdc_code,
            value,
            unit,
            unit_mdc,
            when,
            loinc,
            components,
            flags,
            char,
        )
