"""Device Information Service characteristics (DIS 1.1 section 3 / GSS): who made the PHD.

* Manufacturer Name 0x2A29, Model Number 0x2A24, Serial Number 0x2A25, Hardware Revision
  0x2A27, Firmware Revision 0x2A26, Software Revision 0x2A28: UTF-8 strings (``utf8s``, no
  terminator). Trailing NUL bytes, which some devices send as padding, are dropped; any other
  control character, or invalid UTF-8, is a ParseError.
* System ID 0x2A23: manufacturer-defined identifier (uint40) then organizationally unique
  identifier (uint24), little-endian, 8 bytes.
* PnP ID 0x2A50: vendor id source (uint8: 1 Bluetooth SIG, 2 USB-IF), vendor id, product id,
  product version (uint16 each), 7 bytes.

These are descriptive: they produce no observations. Serial numbers and system ids identify a
device (and so, through enrollment, a patient): callers must not log them.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from phd_protocol.gatt._codec import Characteristic, Reader, check_int

__all__ = [
    "FirmwareRevision",
    "HardwareRevision",
    "ManufacturerName",
    "ModelNumber",
    "PnpId",
    "SerialNumber",
    "SoftwareRevision",
    "SystemId",
    "VendorIdSource",
]

_MAX_STRING = 248  # bytes; DIS strings are short, and one ATT value is at most 512
_PNP = struct.Struct("<BHHH")
_S = TypeVar("_S", bound="_DeviceString")


def _valid_text(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value.encode("utf-8")) > _MAX_STRING:
        return f"must be at most {_MAX_STRING} bytes of UTF-8"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "must not contain control characters"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _DeviceString(Characteristic):
    value: str

    def __post_init__(self) -> None:
        problem = _valid_text(self.value)
        if problem is not None:
            raise ValueError(f"'value' {problem}")

    def encode(self) -> bytes:
        return self.value.encode("utf-8")

    @classmethod
    def decode(cls: type[_S], data: bytes) -> _S:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        raw = reader.take(reader.remaining(), "value").rstrip(b"\x00")
        if len(raw) > _MAX_STRING:
            raise reader.fail(f"value longer than {_MAX_STRING} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise reader.fail(f"invalid UTF-8 at offset {exc.start}") from None
        problem = _valid_text(text)
        if problem is not None:
            raise reader.fail(f"value {problem}")
        return cls(value=text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManufacturerName(_DeviceString):
    uuid: ClassVar[int] = 0x2A29
    name: ClassVar[str] = "Manufacturer Name String"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelNumber(_DeviceString):
    uuid: ClassVar[int] = 0x2A24
    name: ClassVar[str] = "Model Number String"


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialNumber(_DeviceString):
    uuid: ClassVar[int] = 0x2A25
    name: ClassVar[str] = "Serial Number String"


@dataclass(frozen=True, slots=True, kw_only=True)
class HardwareRevision(_DeviceString):
    uuid: ClassVar[int] = 0x2A27
    name: ClassVar[str] = "Hardware Revision String"


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareRevision(_DeviceString):
    uuid: ClassVar[int] = 0x2A26
    name: ClassVar[str] = "Firmware Revision String"


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftwareRevision(_DeviceString):
    uuid: ClassVar[int] = 0x2A28
    name: ClassVar[str] = "Software Revision String"


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemId(Characteristic):
    """System ID (0x2A23): a 40-bit manufacturer identifier and a 24-bit OUI."""

    uuid: ClassVar[int] = 0x2A23
    name: ClassVar[str] = "System ID"

    manufacturer_identifier: int
    organizationally_unique_identifier: int

    def __post_init__(self) -> None:
        check_int(self.manufacturer_identifier, 0, (1 << 40) - 1, "manufacturer_identifier")
        check_int(
            self.organizationally_unique_identifier,
            0,
            (1 << 24) - 1,
            "organizationally_unique_identifier",
        )

    def encode(self) -> bytes:
        return self.manufacturer_identifier.to_bytes(
            5, "little"
        ) + self.organizationally_unique_identifier.to_bytes(3, "little")

    @classmethod
    def decode(cls, data: bytes) -> SystemId:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        manufacturer = int.from_bytes(reader.take(5, "manufacturer_identifier"), "little")
        oui = reader.u24("organizationally_unique_identifier")
        reader.finish()
        return cls(manufacturer_identifier=manufacturer, organizationally_unique_identifier=oui)

    @property
    def hex(self) -> str:
        """The 8 bytes as 16 hex digits, most significant first (as IEEE EUI-64 prints)."""
        return self.encode()[::-1].hex().upper()


class VendorIdSource(enum.IntEnum):
    BLUETOOTH_SIG = 1
    USB_IF = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class PnpId(Characteristic):
    """PnP ID (0x2A50)."""

    uuid: ClassVar[int] = 0x2A50
    name: ClassVar[str] = "PnP ID"

    vendor_id_source: VendorIdSource
    vendor_id: int
    product_id: int
    product_version: int

    def __post_init__(self) -> None:
        if not isinstance(self.vendor_id_source, VendorIdSource):
            raise ValueError("'vendor_id_source' must be a VendorIdSource")
        check_int(self.vendor_id, 0, 0xFFFF, "vendor_id")
        check_int(self.product_id, 0, 0xFFFF, "product_id")
        check_int(self.product_version, 0, 0xFFFF, "product_version")

    def encode(self) -> bytes:
        return _PNP.pack(
            self.vendor_id_source, self.vendor_id, self.product_id, self.product_version
        )

    @classmethod
    def decode(cls, data: bytes) -> PnpId:
        reader = Reader(f"{cls.name} ({cls.uuid:04X})", data)
        raw_source = reader.u8("vendor_id_source")
        vendor = reader.u16("vendor_id")
        product = reader.u16("product_id")
        version = reader.u16("product_version")
        reader.finish()
        try:
            source = VendorIdSource(raw_source)
        except ValueError:
            raise reader.fail("reserved value in 'vendor_id_source' at offset 0") from None
        return cls(
            vendor_id_source=source, vendor_id=vendor, product_id=product, product_version=version
        )


DEVICE_STRINGS: tuple[type[_DeviceString], ...] = (
    ManufacturerName,
    ModelNumber,
    SerialNumber,
    HardwareRevision,
    FirmwareRevision,
    SoftwareRevision,
)
