"""The observation model: one coded reading, as every part of the pipeline passes it on.

An :class:`Observation` is a frozen, validated value: IEEE 11073-10101 type code, a value that
is an exact ``Decimal`` or a :class:`~phd_protocol.sfloat.SpecialValue` (or, for compound
readings such as blood pressure, ``components`` and no value, as the HL7 PHD IG models
MDC_PRESS_BLD_NONINV 150020 with systolic/diastolic/mean components), the unit as MDC code and
UCUM code, LOINC where the PHD IG gives one, the measurement time and where it came from
(the device clock, or the agent's receive time when the device sent none), the original device
time and whether it was corrected, status flags, and the source characteristic.

Content id: ``id`` is derived from what the device said (device id, type, value(s), unit, the
device's own clock reading or else the receive time, and the flags), so the same stored record
fetched twice gets the same id, and two readings that differ in anything, time included, differ
in id. Clock correction does not change the id: it hashes the *original* device time.

The wire dict (``to_wire``/``from_wire``) is specified in docs/ARCHITECTURE.md "Observation wire
dict"; ``from_wire`` validates strictly and raises :class:`~phd_protocol.errors.ParseError`.

Never logs and never puts a value into an error message (values are PHI).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

from phd_protocol.errors import ParseError
from phd_protocol.sfloat import MedicalNumber, SpecialValue

__all__ = [
    "Component",
    "Observation",
    "TimeSource",
    "apply_clock_correction",
    "content_id",
    "format_time",
    "value_to_wire",
    "wire_json",
]

_FLAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,47}$")
_UCUM_RE = re.compile(r"^[\x21-\x7e]{1,32}$")
_LOINC_RE = re.compile(r"^[0-9]{1,7}-[0-9]$")
_DEVICE_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_CHAR_RE = re.compile(r"^[0-9A-F]{4}$")
_MAX_COMPONENTS = 64
_MAX_FLAGS = 64
_SPECIAL_BY_WIRE = {s.value: s for s in SpecialValue}
_ID_DOMAIN = "phd-observation-id/v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class TimeSource(enum.StrEnum):
    """Where an observation's time came from."""

    DEVICE = "device"  # the PHD's time stamp (possibly corrected, see clock_corrected)
    AGENT = "agent"  # the agent's clock when the notification/indication arrived


def _check_number(value: object, what: str) -> None:
    if isinstance(value, SpecialValue):
        return
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{what} must be a finite Decimal or a SpecialValue")


def _check_code(code: object, what: str) -> None:
    if isinstance(code, bool) or not isinstance(code, int) or not 0 < code <= 0xFFFFFFFF:
        raise ValueError(f"{what} must be a 32-bit MDC code")


def _check_loinc(loinc: object, what: str) -> None:
    if loinc is not None and (not isinstance(loinc, str) or not _LOINC_RE.fullmatch(loinc)):
        raise ValueError(f"{what} must be a LOINC code like 8480-6 or None")


def _check_text(value: object, pattern: re.Pattern[str], message: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(message)


def _check_int(value: object, low: int, high: int, message: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(message)


def _check_instance(value: object, kind: type, message: str) -> None:
    if not isinstance(value, kind):
        raise ValueError(message)


def _check_components(components: object) -> None:
    if not isinstance(components, tuple) or not all(isinstance(c, Component) for c in components):
        raise ValueError("components must be a tuple of Component")
    if len(components) > _MAX_COMPONENTS:
        raise ValueError("too many components")


def _check_flags(flags: object) -> None:
    if not isinstance(flags, frozenset) or len(flags) > _MAX_FLAGS:
        raise ValueError("flags must be a frozenset of at most 64 short strings")
    for flag in flags:
        if not isinstance(flag, str) or not _FLAG_RE.fullmatch(flag):
            raise ValueError("a flag must be 1-48 characters of [a-z0-9_.:-]")


def _utc(moment: object, what: str) -> datetime | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime or None")
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One part of a compound observation (e.g. systolic of a blood pressure)."""

    mdc_code: int
    value: MedicalNumber
    loinc: str | None = None

    def __post_init__(self) -> None:
        _check_code(self.mdc_code, "component mdc_code")
        _check_number(self.value, "component value")
        _check_loinc(self.loinc, "component loinc")


@lru_cache(maxsize=8192)
def _canonical_number(value: MedicalNumber) -> str:
    # 120.5 and 120.50 are the same reading: hash the normalised coefficient and exponent,
    # never a float rendering.
    if isinstance(value, SpecialValue):
        return value.value
    if value == 0:
        return "0"
    sign, digits, exponent = value.normalize().as_tuple()
    return f"{'-' if sign else ''}{''.join(map(str, digits))}e{exponent}"


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix (microseconds only when non-zero)."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def content_id(
    *,
    device: str,
    mdc_code: int,
    value: MedicalNumber | None,
    components: Iterable[Component] = (),
    unit_mdc: int,
    unit: str,
    time: datetime | None,
    flags: Iterable[str] = (),
) -> str:
    """The content-derived id (32 hex digits: SHA-256 truncated to 128 bits).

    ``time`` is the device's own clock reading when there is one (so clock correction and
    repeated downloads do not change the id), else the agent receive time. The hashed text
    joins the parts with NUL, which none of them can contain (device and unit are printable
    ASCII, flags are ``[a-z0-9_.:-]``, numbers and times are canonical), so distinct inputs
    never hash the same text.
    """
    _check_text(device, _DEVICE_RE, "device must be 1-128 printable ASCII characters")
    _check_text(unit, _UCUM_RE, "unit must be a UCUM code (1-32 printable ASCII)")
    if value is not None:
        _check_number(value, "value")
    components = tuple(components)
    _check_components(components)
    if time is not None and time.tzinfo is None:
        raise ValueError("time must be timezone-aware")
    return _hash_id(device, mdc_code, value, components, unit_mdc, unit, time, flags)


def _hash_id(  # noqa: PLR0917 - private, positional for speed on the decode path
    device: str,
    mdc_code: int,
    value: MedicalNumber | None,
    components: Iterable[Component],
    unit_mdc: int,
    unit: str,
    time: datetime | None,
    flags: Iterable[str],
) -> str:
    # Exact integer microseconds since the epoch: independent of the zone it is given in.
    stamp = "-" if time is None else str((time - _EPOCH) // _MICROSECOND)
    text = "\x00".join(
        (
            _ID_DOMAIN,
            device,
            str(mdc_code),
            "-" if value is None else _canonical_number(value),
            ";".join(f"{c.mdc_code}={_canonical_number(c.value)}" for c in components),
            str(unit_mdc),
            unit,
            stamp,
            ",".join(sorted(flags)),
        )
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


_set = object.__setattr__
_NOT_CORRECTED = False


@lru_cache(maxsize=1024)
def _flags_ok(flags: frozenset[str]) -> bool:
    try:
        _check_flags(flags)
    except ValueError:
        return False
    return True


def _trusted_component(mdc_code: int, value: MedicalNumber, loinc: str | None) -> Component:
    """A Component from codec output (codes and LOINC from the mdc tables, decoded numbers)."""
    component = object.__new__(Component)
    _set(component, "mdc_code", mdc_code)
    _set(component, "value", value)
    _set(component, "loinc", loinc)
    return component


def _trusted_observation(  # noqa: PLR0917 - private fast path for phd_protocol.gatt
    device: str,
    mdc_code: int,
    value: MedicalNumber | None,
    unit: str,
    unit_mdc: int,
    when: tuple[datetime, TimeSource, datetime | None],
    loinc: str | None,
    components: tuple[Component, ...],
    flags: frozenset[str],
    char: int,
) -> Observation:
    """Build an observation from codec output without re-running every constructor check.

    Only for phd_protocol.gatt: its MDC codes, units and LOINC codes come from the mdc tables,
    its numbers from the SFLOAT/FLOAT decoders, its times from ObservationContext.timing (UTC,
    aware), and the device id was checked once by ObservationContext. Flags are still checked
    (cached per distinct set). tests/protocol/gatt/test_roundtrip.py rebuilds every codec
    observation through the validating ``from_wire`` to keep this honest.
    """
    if not _flags_ok(flags):
        raise ValueError("a flag must be 1-48 characters of [a-z0-9_.:-]")
    time, source, device_time = when
    identity_time = device_time if device_time is not None else time
    obs = object.__new__(Observation)
    _set(
        obs,
        "id",
        _hash_id(device, mdc_code, value, components, unit_mdc, unit, identity_time, flags),
    )
    _set(obs, "mdc_code", mdc_code)
    _set(obs, "value", value)
    _set(obs, "unit", unit)
    _set(obs, "unit_mdc", unit_mdc)
    _set(obs, "time", time)
    _set(obs, "time_source", source)
    _set(obs, "loinc", loinc)
    _set(obs, "components", components)
    _set(obs, "device_time", device_time)
    _set(obs, "clock_corrected", _NOT_CORRECTED)
    _set(obs, "flags", flags)
    _set(obs, "char", char)
    return obs


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One coded reading. Build with :meth:`create` (computes ``id``) or :meth:`from_wire`."""

    id: str
    mdc_code: int
    value: MedicalNumber | None
    unit: str
    unit_mdc: int
    time: datetime | None
    time_source: TimeSource
    loinc: str | None = None
    components: tuple[Component, ...] = ()
    device_time: datetime | None = None
    clock_corrected: bool = False
    flags: frozenset[str] = field(default_factory=frozenset)
    char: int | None = None

    def __post_init__(self) -> None:
        _check_text(self.id, _ID_RE, "id must be 32 lowercase hex digits")
        _check_code(self.mdc_code, "mdc_code")
        _check_components(self.components)
        if self.value is None:
            if not self.components:
                raise ValueError("an observation without components needs a value")
        else:
            _check_number(self.value, "value")
        _check_text(self.unit, _UCUM_RE, "unit must be a UCUM code (1-32 printable ASCII)")
        _check_int(
            self.unit_mdc,
            4 << 16,
            (4 << 16) | 0xFFFF,
            "unit_mdc must be an MDC dimension code (partition 4)",
        )
        object.__setattr__(self, "time", _utc(self.time, "time"))
        object.__setattr__(self, "device_time", _utc(self.device_time, "device_time"))
        _check_instance(self.time_source, TimeSource, "time_source must be a TimeSource")
        _check_loinc(self.loinc, "loinc")
        _check_instance(self.clock_corrected, bool, "clock_corrected must be a bool")
        if self.clock_corrected and self.device_time is None:
            raise ValueError("a clock-corrected observation must keep its device_time")
        _check_flags(self.flags)
        if self.char is not None:
            _check_int(self.char, 0, 0xFFFF, "char must be a 16-bit characteristic UUID")

    @classmethod
    def create(
        cls,
        *,
        device: str,
        mdc_code: int,
        value: MedicalNumber | None,
        unit: str,
        unit_mdc: int,
        time: datetime | None,
        time_source: TimeSource,
        loinc: str | None = None,
        components: tuple[Component, ...] = (),
        device_time: datetime | None = None,
        flags: frozenset[str] = frozenset(),
        char: int | None = None,
    ) -> Observation:
        """Build an observation and compute its content id for ``device``."""
        identity_time = device_time if device_time is not None else time
        return cls(
            id=content_id(
                device=device,
                mdc_code=mdc_code,
                value=value,
                components=components,
                unit_mdc=unit_mdc,
                unit=unit,
                time=identity_time,
                flags=flags,
            ),
            mdc_code=mdc_code,
            value=value,
            unit=unit,
            unit_mdc=unit_mdc,
            time=time,
            time_source=time_source,
            loinc=loinc,
            components=components,
            device_time=device_time,
            flags=flags,
            char=char,
        )

    def with_clock_correction(self, offset: timedelta) -> Observation:
        """See :func:`apply_clock_correction`."""
        return apply_clock_correction(self, offset)

    def to_wire(self) -> dict[str, Any]:
        """The ARCHITECTURE.md wire dict: only int, str, bool, None, Decimal, list, dict."""
        wire: dict[str, Any] = {
            "id": self.id,
            "mdc_code": self.mdc_code,
            "value": None if self.value is None else value_to_wire(self.value),
            "unit": self.unit,
            "unit_mdc": self.unit_mdc,
            "time": None if self.time is None else format_time(self.time),
            "time_source": self.time_source.value,
        }
        if self.loinc is not None:
            wire["loinc"] = self.loinc
        if self.device_time is not None:
            wire["device_time"] = format_time(self.device_time)
        if self.clock_corrected:
            wire["clock_corrected"] = True
        if self.flags:
            wire["flags"] = sorted(self.flags)
        if self.components:
            wire["components"] = [_component_to_wire(c) for c in self.components]
        if self.char is not None:
            wire["char"] = f"{self.char:04X}"
        return wire

    @classmethod
    def from_wire(cls, wire: object) -> Observation:
        """Parse and validate a wire dict; ParseError names the offending key."""
        return _from_wire(wire)


def apply_clock_correction(obs: Observation, offset: timedelta) -> Observation:
    """Shift a device-timed observation by ``offset`` (agent clock minus device clock).

    Keeps the original ``device_time``, sets ``clock_corrected`` and leaves ``id`` unchanged.
    Observations timed by the agent are returned as they are: their time is already the
    agent's.
    """
    if not isinstance(offset, timedelta):
        raise TypeError("offset must be a timedelta")
    if obs.time_source is not TimeSource.DEVICE or obs.time is None:
        return obs
    original = obs.device_time if obs.device_time is not None else obs.time
    return replace(obs, time=original + offset, device_time=original, clock_corrected=True)


def wire_json(data: Any, *, indent: int | None = None) -> str:
    """JSON text for wire dicts, with every ``Decimal`` written as an exact JSON number.

    ``json.dumps`` cannot write a Decimal as a number; going through float would print
    120.49999... for some values. Read it back with ``json.loads(text, parse_float=Decimal)``.
    """
    return _json(data, indent, 0)


# The standard library's own string escaper (its C version when available), as json.dumps
# uses it with ensure_ascii=False: calling json.dumps per scalar built an encoder each time.
_json_text = encode_basestring


def _json(data: Any, indent: int | None, depth: int) -> str:
    if type(data) is str:
        return _json_text(data)
    if isinstance(data, Decimal):
        if not data.is_finite():
            raise ValueError("JSON has no non-finite numbers; use the special-value strings")
        return format(data, "f")
    if data is None:
        return "null"
    if data is True:
        return "true"
    if data is False:
        return "false"
    if isinstance(data, str):
        return _json_text(data)
    if isinstance(data, int):
        return int.__repr__(data)
    if isinstance(data, Mapping | list | tuple):
        pad = "" if indent is None else "\n" + " " * (indent * (depth + 1))
        end = "" if indent is None else "\n" + " " * (indent * depth)
        sep = ", " if indent is None else ","
        if isinstance(data, Mapping):
            if not data:
                return "{}"
            items = []
            for key, value in data.items():
                if not isinstance(key, str):
                    raise TypeError("JSON object keys must be strings")
                items.append(f"{pad}{_json_text(key)}: {_json(value, indent, depth + 1)}")
            return "{" + sep.join(items) + end + "}"
        if not data:
            return "[]"
        return "[" + sep.join(f"{pad}{_json(v, indent, depth + 1)}" for v in data) + end + "]"
    raise TypeError(f"not a wire value: {type(data).__name__}")


def value_to_wire(value: MedicalNumber) -> Decimal | str:
    return value.value if isinstance(value, SpecialValue) else value


def _component_to_wire(component: Component) -> dict[str, Any]:
    wire: dict[str, Any] = {"mdc_code": component.mdc_code, "value": value_to_wire(component.value)}
    if component.loinc is not None:
        wire["loinc"] = component.loinc
    return wire


# --- from_wire ------------------------------------------------------------------------------

_REQUIRED = ("id", "mdc_code", "value", "unit", "unit_mdc", "time", "time_source")
_OPTIONAL = ("loinc", "device_time", "clock_corrected", "flags", "components", "char")
_COMPONENT_KEYS = frozenset({"mdc_code", "value", "loinc"})
_KNOWN_KEYS = frozenset(_REQUIRED + _OPTIONAL)


def _wire_number(raw: object, key: str) -> MedicalNumber:
    if isinstance(raw, str):
        special = _SPECIAL_BY_WIRE.get(raw)
        if special is None:
            raise ParseError(f"observation: {key} is not a number or a known special value")
        return special
    if isinstance(raw, bool):
        raise ParseError(f"observation: {key} must be a number, not a boolean")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, Decimal) and raw.is_finite():
        return raw
    # Binary floats are refused: they are where "120.49999" comes from.
    raise ParseError(f"observation: {key} must be an exact number (Decimal or int), not a float")


def _wire_time(raw: object, key: str) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 40:
        raise ParseError(f"observation: {key} must be an ISO 8601 string or null")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ParseError(f"observation: {key} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise ParseError(f"observation: {key} must carry a UTC offset")
    return moment


def _wire_int(raw: object, key: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ParseError(f"observation: {key} must be an integer")
    return raw


_TIME_SOURCES = {"device": TimeSource.DEVICE, "agent": TimeSource.AGENT}
_UNIT_MDC_LOW, _UNIT_MDC_HIGH = 4 << 16, (4 << 16) | 0xFFFF


def _from_wire(wire: object) -> Observation:
    """Strict parse. Every rule of ``Observation.__post_init__`` is checked here exactly once
    and the instance is then built without re-running the constructor (the hospital ingests
    every reading through this: checking each field twice cost a third of its time).
    tests/protocol/test_observation.py checks that whatever it accepts the constructor accepts."""
    if type(wire) is not dict and not isinstance(wire, Mapping):  # dict first: no ABC check
        raise ParseError("observation: expected a map")
    keys = set(wire)
    missing = [k for k in _REQUIRED if k not in keys]
    if missing:
        raise ParseError(f"observation: missing key(s) {', '.join(missing)}")
    unknown = keys - _KNOWN_KEYS
    if unknown:
        names = sorted(k if isinstance(k, str) else "<non-string>" for k in unknown)
        raise ParseError(f"observation: unknown key(s) {', '.join(n[:32] for n in names)}")

    value = None if wire["value"] is None else _wire_number(wire["value"], "value")
    time_source_raw = wire["time_source"]
    time_source = _TIME_SOURCES.get(time_source_raw) if isinstance(time_source_raw, str) else None
    if time_source is None:
        raise ParseError("observation: time_source must be 'device' or 'agent'")
    for key in ("id", "unit"):
        if not isinstance(wire[key], str):
            raise ParseError(f"observation: {key} must be a string")

    components: list[Component] = []
    raw_components = wire.get("components", [])
    if not isinstance(raw_components, list) or len(raw_components) > _MAX_COMPONENTS:
        raise ParseError("observation: components must be a list of at most 64 maps")
    for index, raw in enumerate(raw_components):
        where = f"components[{index}]"
        if (
            (type(raw) is not dict and not isinstance(raw, Mapping))
            or not set(raw) <= _COMPONENT_KEYS
            or "mdc_code" not in raw
            or "value" not in raw
        ):
            raise ParseError(f"observation: {where} must be a map of mdc_code, value, loinc")
        loinc = raw.get("loinc")
        if loinc is not None and not isinstance(loinc, str):
            raise ParseError(f"observation: {where}.loinc must be a string")
        code = _wire_int(raw["mdc_code"], f"{where}.mdc_code")
        number = _wire_number(raw["value"], f"{where}.value")  # finite Decimal or special
        try:
            _check_code(code, "component mdc_code")
            _check_loinc(loinc, "component loinc")
        except ValueError as exc:
            raise ParseError(f"observation: {where}: {exc}") from None
        components.append(_trusted_component(code, number, loinc))

    flags_raw = wire.get("flags", [])
    if not isinstance(flags_raw, list) or not all(isinstance(f, str) for f in flags_raw):
        raise ParseError("observation: flags must be a list of strings")
    flags = frozenset(flags_raw)
    if len(flags) != len(flags_raw):
        raise ParseError("observation: flags must not repeat")
    char_raw = wire.get("char")
    char: int | None = None
    if char_raw is not None:
        if not isinstance(char_raw, str) or not _CHAR_RE.fullmatch(char_raw):
            raise ParseError("observation: char must be four uppercase hex digits")
        char = int(char_raw, 16)  # four hex digits: always within 0..0xFFFF
    clock_corrected = wire.get("clock_corrected", False)
    if not isinstance(clock_corrected, bool):
        raise ParseError("observation: clock_corrected must be a boolean")
    loinc = wire.get("loinc")
    if loinc is not None and not isinstance(loinc, str):
        raise ParseError("observation: loinc must be a string")
    mdc_code = _wire_int(wire["mdc_code"], "mdc_code")
    unit_mdc = _wire_int(wire["unit_mdc"], "unit_mdc")
    time = _wire_time(wire["time"], "time")
    device_time = _wire_time(wire.get("device_time"), "device_time")
    try:
        # The rules of Observation.__post_init__, in its order, with its messages.
        _check_text(wire["id"], _ID_RE, "id must be 32 lowercase hex digits")
        _check_code(mdc_code, "mdc_code")
        if value is None and not components:
            raise ValueError("an observation without components needs a value")
        _check_text(wire["unit"], _UCUM_RE, "unit must be a UCUM code (1-32 printable ASCII)")
        if not _UNIT_MDC_LOW <= unit_mdc <= _UNIT_MDC_HIGH:
            raise ValueError("unit_mdc must be an MDC dimension code (partition 4)")
        _check_loinc(loinc, "loinc")
        if clock_corrected and device_time is None:
            raise ValueError("a clock-corrected observation must keep its device_time")
        if not _flags_ok(flags):
            _check_flags(flags)  # raises with the constructor's own message
    except ValueError as exc:
        # Messages name the field and the rule, never the value.
        raise ParseError(f"observation: {exc}") from None
    obs = object.__new__(Observation)
    _set(obs, "id", wire["id"])
    _set(obs, "mdc_code", mdc_code)
    _set(obs, "value", value)
    _set(obs, "unit", wire["unit"])
    _set(obs, "unit_mdc", unit_mdc)
    _set(obs, "time", None if time is None else time.astimezone(UTC))
    _set(obs, "time_source", time_source)
    _set(obs, "loinc", loinc)
    _set(obs, "components", tuple(components))
    _set(obs, "device_time", None if device_time is None else device_time.astimezone(UTC))
    _set(obs, "clock_corrected", clock_corrected)
    _set(obs, "flags", flags)
    _set(obs, "char", char)
    return obs
