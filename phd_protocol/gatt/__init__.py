"""Bluetooth GATT health-device characteristics: decode, encode, and turn into observations.

One module per characteristic (or per family sharing a layout); each value is a frozen,
keyword-only dataclass with ``encode() -> bytes``, ``decode(bytes)`` and ``observations(ctx)``.
:data:`CODECS` is the dispatch table keyed by the 16-bit characteristic UUID.

Public entry points::

    value = decode(0x2A35, data)            # or decode("2A35", ...), or a 128-bit UUID string
    data = encode(value)                     # value.encode()
    obs = to_observations(value, device=dev_id, received_at=now)

Every parser checks each length before reading and raises the one
:class:`~phd_protocol.errors.ParseError` (naming characteristic, field and offset, never the
bytes) for truncated input, trailing bytes, reserved/RFU flag bits and reserved enumerations.
Nothing else escapes a parser (tests/protocol/gatt/test_fuzz.py holds every parser to this).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from phd_protocol.errors import ParseError
from phd_protocol.gatt._codec import Characteristic, ObservationContext
from phd_protocol.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    IntermediateCuffPressure,
    PressureUnit,
)
from phd_protocol.gatt.current_time import AdjustReason, CurrentTime
from phd_protocol.gatt.date_time import DateTime
from phd_protocol.gatt.device_info import (
    FirmwareRevision,
    HardwareRevision,
    ManufacturerName,
    ModelNumber,
    PnpId,
    SerialNumber,
    SoftwareRevision,
    SystemId,
    VendorIdSource,
)
from phd_protocol.gatt.glucose import (
    GlucoseConcentrationUnit,
    GlucoseMeasurement,
    GlucoseSampleLocation,
    GlucoseSensorStatus,
    GlucoseType,
)
from phd_protocol.gatt.glucose_context import (
    CarbohydrateId,
    GlucoseMeasurementContext,
    Health,
    Meal,
    MedicationId,
    MedicationUnit,
    Tester,
)
from phd_protocol.gatt.heart_rate import BodySensorLocation, HeartRateMeasurement, SensorLocation
from phd_protocol.gatt.plx import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
)
from phd_protocol.gatt.racp import (
    RacpError,
    RacpFilterType,
    RacpNumberOfRecords,
    RacpOpCode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    decode_racp,
)
from phd_protocol.gatt.temperature import (
    IntermediateTemperature,
    TemperatureMeasurement,
    TemperatureSite,
    TemperatureType,
    TemperatureUnit,
)
from phd_protocol.gatt.weight import WeightMeasurement, WeightUnit
from phd_protocol.observation import Observation
from phd_protocol.sfloat import SpecialValue

__all__ = [
    "CODECS",
    "AdjustReason",
    "BloodPressureMeasurement",
    "BloodPressureStatus",
    "BodySensorLocation",
    "CarbohydrateId",
    "Characteristic",
    "Codec",
    "CurrentTime",
    "DateTime",
    "FirmwareRevision",
    "GlucoseConcentrationUnit",
    "GlucoseMeasurement",
    "GlucoseMeasurementContext",
    "GlucoseSampleLocation",
    "GlucoseSensorStatus",
    "GlucoseType",
    "HardwareRevision",
    "Health",
    "HeartRateMeasurement",
    "IntermediateCuffPressure",
    "IntermediateTemperature",
    "ManufacturerName",
    "Meal",
    "MedicationId",
    "MedicationUnit",
    "ModelNumber",
    "ObservationContext",
    "PlxContinuousMeasurement",
    "PlxDeviceSensorStatus",
    "PlxMeasurementStatus",
    "PlxSpotCheckMeasurement",
    "PnpId",
    "PressureUnit",
    "RacpError",
    "RacpFilterType",
    "RacpNumberOfRecords",
    "RacpOpCode",
    "RacpOperator",
    "RacpRequest",
    "RacpResponse",
    "RacpResponseCode",
    "SensorLocation",
    "SerialNumber",
    "SoftwareRevision",
    "SystemId",
    "TemperatureMeasurement",
    "TemperatureSite",
    "TemperatureType",
    "TemperatureUnit",
    "Tester",
    "VendorIdSource",
    "WeightMeasurement",
    "WeightUnit",
    "decode",
    "encode",
    "fields",
    "parse_uuid",
    "to_observations",
]

_MAX_VALUE = 512  # ATT_MAX_ATTRIBUTE_LEN (Bluetooth Core Vol 3 Part F 3.2.9)
_BASE_UUID = re.compile(r"^0000([0-9a-f]{4})-0000-1000-8000-00805f9b34fb$")
_SHORT_UUID = re.compile(r"^(?:0x)?([0-9a-f]{4})$")


@dataclass(frozen=True, slots=True)
class Codec:
    """One row of the dispatch table."""

    uuid: int
    name: str
    decode: Callable[[bytes], Characteristic]


def _row(cls: type[Characteristic]) -> Codec:
    decoder: Callable[[bytes], Characteristic] = cls.decode  # type: ignore[attr-defined]  # every value class defines decode()
    return Codec(cls.uuid, cls.name, decoder)


def _table(*rows: Codec) -> MappingProxyType[int, Codec]:
    table: dict[int, Codec] = {}
    for row in rows:
        if row.uuid in table:  # pragma: no cover - guards the table literal below
            raise RuntimeError("duplicate characteristic UUID in CODECS")
        table[row.uuid] = row
    return MappingProxyType(table)


CODECS = _table(
    _row(BloodPressureMeasurement),
    _row(IntermediateCuffPressure),
    _row(GlucoseMeasurement),
    _row(GlucoseMeasurementContext),
    Codec(0x2A52, "Record Access Control Point", decode_racp),
    _row(TemperatureMeasurement),
    _row(IntermediateTemperature),
    _row(TemperatureSite),
    _row(WeightMeasurement),
    _row(HeartRateMeasurement),
    _row(BodySensorLocation),
    _row(PlxSpotCheckMeasurement),
    _row(PlxContinuousMeasurement),
    _row(ManufacturerName),
    _row(ModelNumber),
    _row(SerialNumber),
    _row(HardwareRevision),
    _row(FirmwareRevision),
    _row(SoftwareRevision),
    _row(SystemId),
    _row(PnpId),
    _row(DateTime),
    _row(CurrentTime),
)
"""Characteristic UUID -> :class:`Codec` (name and decoder); values encode themselves."""


def parse_uuid(uuid: int | str) -> int:
    """A 16-bit UUID from an int, ``"2A35"``, ``"0x2a35"`` or the 128-bit Bluetooth base form."""
    if isinstance(uuid, bool):
        raise ParseError("characteristic UUID must be an int or a string")
    if isinstance(uuid, int):
        if not 0 <= uuid <= 0xFFFF:
            raise ParseError("characteristic UUID must be a 16-bit value")
        return uuid
    if not isinstance(uuid, str):
        raise ParseError("characteristic UUID must be an int or a string")
    if len(uuid) > 40:
        raise ParseError("characteristic UUID string is too long")
    text = uuid.strip().lower()
    match = _SHORT_UUID.fullmatch(text) or _BASE_UUID.fullmatch(text)
    if match is None:
        raise ParseError("characteristic UUID is not a 16-bit or Bluetooth base UUID")
    return int(match.group(1), 16)


def decode(uuid: int | str, data: bytes) -> Characteristic:
    """Decode one characteristic value; ParseError for anything that is not to the spec."""
    code = parse_uuid(uuid)
    codec = CODECS.get(code)
    if codec is None:
        raise ParseError(f"characteristic {code:04X} is not supported")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParseError(f"{codec.name} ({code:04X}): value must be bytes")
    if len(data) > _MAX_VALUE:
        raise ParseError(f"{codec.name} ({code:04X}): value longer than {_MAX_VALUE} bytes")
    try:
        return codec.decode(data)
    except ParseError:
        raise
    except ValueError as exc:
        # A constructor refused a decoded field; its message names the field, not the value.
        raise ParseError(f"{codec.name} ({code:04X}): {exc}") from None


def fields(value: Characteristic) -> dict[str, Any]:
    """The decoded fields as plain data (for ``phd decode`` and test vectors).

    Numbers stay ``Decimal`` (exact), special values become their wire strings (``"NaN"``...),
    enumerations their lower-case names, bit sets a sorted list of names, Date Time a dict of
    its fields, tuples lists; fields that are absent (None) are left out.
    """
    out: dict[str, Any] = {"characteristic": f"{value.uuid:04X}", "name": value.name}
    if isinstance(value, RacpRequest | RacpNumberOfRecords | RacpResponse):
        out["message"] = type(value).__name__
    for item in dataclasses.fields(value):  # type: ignore[arg-type]  # all values are dataclasses
        plain = _plain(getattr(value, item.name))
        if plain is not None:
            out[item.name] = plain
    return out


def _plain(value: object) -> Any:
    if value is None or isinstance(value, bool | str | Decimal):
        return value
    if isinstance(value, SpecialValue):
        return value.value
    if isinstance(value, enum.Flag):
        return sorted((m.name or "").lower() for m in type(value) if m & value)
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, int):
        return value
    if isinstance(value, DateTime):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    raise TypeError(f"no plain form for {type(value).__name__}")  # pragma: no cover


def encode(value: Characteristic) -> bytes:
    """The characteristic value bytes (``value.encode()``)."""
    return value.encode()


def to_observations(
    value: Characteristic,
    *,
    device: str,
    received_at: datetime,
    device_tz: tzinfo = UTC,
    context: GlucoseMeasurementContext | None = None,
) -> tuple[Observation, ...]:
    """The coded observations of one decoded value.

    The time is the device's time stamp when the characteristic carries one (read in
    ``device_tz``, time source ``device``), else ``received_at`` (time source ``agent``).
    Descriptive characteristics (device information, clocks, RACP) give no observations.

    ``context`` pairs a Glucose Measurement with its Glucose Measurement Context (same
    sequence number): meal, tester and health become flags of the glucose observation and the
    context's own observations take the measurement's time.
    """
    ctx = ObservationContext(device=device, received_at=received_at, device_tz=device_tz)
    if context is None:
        return value.observations(ctx)
    if not isinstance(value, GlucoseMeasurement) or not isinstance(
        context, GlucoseMeasurementContext
    ):
        raise TypeError("context pairs a GlucoseMeasurement with a GlucoseMeasurementContext")
    if context.sequence_number != value.sequence_number:
        raise ValueError("context and measurement have different sequence numbers")
    glucose = value.observations_with(ctx, extra_flags=context.measurement_flags())
    when = ctx.timing(value.base_time, value.time_offset_delta)
    return glucose + context.observations_at(ctx, when)
