"""A bleak backend over bumble: the agent's unchanged bleak code talks to the virtual PHDs.

``bleak.BleakClient(..., backend=...)`` and ``bleak.BleakScanner(..., backend=...)`` accept any
subclass of ``BaseBleakClient`` / ``BaseBleakScanner``; :func:`bleak_backends` returns such a pair
bound to one :class:`~device_agent.virtual.radio.VirtualRadio`. Underneath is a real host stack:
advertising reports, LE connection set-up, SMP pairing (LE Secure Connections), ATT discovery,
reads, writes, notifications and indications all travel as PDUs over bumble's in-process link.

Third-party exceptions are translated here, once: bumble's ``ATT_Error`` becomes bleak's
``BleakGATTProtocolError`` (same error codes), everything else a ``BleakError`` whose message
names the operation, never a value. ``tests/agent/test_bleak_conformance.py`` checks that the
abstract surface implemented here still matches the installed bleak.

This module must not know about health devices or the agent's logic.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import att, core, smp
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement, Connection, Device
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy, ServiceProxy

from device_agent.link import LinkSecurity, LinkSecurityCallback, PairingMethod
from device_agent.virtual.radio import VirtualRadio, alive

__all__ = ["BumbleBleakClient", "BumbleBleakScanner", "bleak_backends"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_METHODS: dict[smp.PairingMethod, PairingMethod] = {
    smp.PairingMethod.JUST_WORKS: PairingMethod.JUST_WORKS,
    smp.PairingMethod.NUMERIC_COMPARISON: PairingMethod.NUMERIC_COMPARISON,
    smp.PairingMethod.PASSKEY: PairingMethod.PASSKEY_ENTRY,
    smp.PairingMethod.OOB: PairingMethod.OUT_OF_BAND,
}

# The association model SMP chose, per connection. bumble keeps it on the SMP session, which
# is discarded when pairing ends, so a session subclass records it here first.
_CHOSEN: weakref.WeakKeyDictionary[Connection, tuple[PairingMethod, bool]] = (
    weakref.WeakKeyDictionary()
)


class _RecordingSession(smp.Session):
    def decide_pairing_method(
        self, auth_req: int, initiator_io_capability: int, responder_io_capability: int
    ) -> None:
        super().decide_pairing_method(auth_req, initiator_io_capability, responder_io_capability)
        _CHOSEN[self.connection] = (
            _METHODS.get(self.pairing_method, PairingMethod.UNKNOWN),
            bool(self.sc),
        )


def _uuid_str(uuid: UUID) -> str:
    return normalize_uuid_str(uuid.to_hex_str())


def _properties(bits: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if bits & bit]


async def _translated(operation: str, connection: Connection | None, aw: Awaitable[_T]) -> _T:
    """Await a bumble operation; raise bleak's exceptions instead of bumble's.

    bumble cancels a pending ATT request when the link drops, which surfaces as a
    CancelledError in the awaiting task although nobody cancelled it: that case becomes a
    BleakError so callers see a disconnect, while a real cancellation still propagates.
    """
    try:
        return await aw
    except att.ATT_Error as exc:
        raise BleakGATTProtocolError(exc.error_code) from exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling() == 0:
            raise BleakError(f"{operation}: disconnected") from exc
        raise
    except (core.BaseBumbleError, TimeoutError) as exc:
        state = "disconnected " if connection is not None and not alive(connection) else ""
        raise BleakError(f"{operation} failed: {state}({type(exc).__name__})") from exc


class BumbleBleakClient(BaseBleakClient):
    """``BaseBleakClient`` over a bumble central; use :func:`bleak_backends` to get a bound one."""

    radio: ClassVar[VirtualRadio | None] = None

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._name = (
            address_or_ble_device.name
            if isinstance(address_or_ble_device, BLEDevice) and address_or_ble_device.name
            else self.address.replace(":", "-")
        )
        services = kwargs.get("services")
        self._service_filter = (
            [UUID(s) for s in services] if isinstance(services, set | frozenset) else None
        )
        callback = kwargs.get("link_security_callback")
        self._security_callback: LinkSecurityCallback | None = (
            callback if callable(callback) else None
        )
        self._connection: Connection | None = None
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        self._closing = False

    # -- helpers
    def _radio(self) -> VirtualRadio:
        if self.radio is None:
            raise BleakError("this backend is not bound to a radio; use bleak_backends(radio)")
        return self.radio

    def _require(self) -> Connection:
        connection = self._connection
        if connection is None or not alive(connection):
            raise BleakError("Not connected")
        return connection

    # -- properties
    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        connection = self._connection
        return int(connection.att_mtu) if connection is not None else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        connection = self._connection
        return connection is not None and alive(connection) and not self._closing

    # -- connectivity
    async def connect(self, pair: bool, **kwargs: Any) -> None:
        radio = self._radio()
        central = await radio.central()
        central.smp_session_proxy = _RecordingSession
        async with radio.connect_lock:
            try:
                connection = await asyncio.wait_for(
                    central.connect(self.address, timeout=self._timeout), self._timeout
                )
            except (TimeoutError, core.TimeoutError) as exc:
                raise BleakDeviceNotFoundError(
                    self.address, "device not reachable: not advertising or out of range"
                ) from exc
            except core.BaseBumbleError as exc:
                raise BleakError(f"connect failed ({type(exc).__name__})") from exc
        self._connection = connection
        self._closing = False
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        connection.on(connection.EVENT_CONNECTION_ENCRYPTION_CHANGE, self._report_security)
        if pair:
            await self.pair()
        self.services = await self._discover(connection)

    def _on_disconnection(self, _reason: int) -> None:
        solicited = self._closing
        self._subscriptions.clear()
        if not solicited and self._disconnected_callback is not None:
            self._disconnected_callback()

    def _report_security(self) -> None:
        connection = self._connection
        if connection is None or self._security_callback is None:
            return
        method, sc = _CHOSEN.get(connection, (PairingMethod.BONDED, bool(connection.sc)))
        self._security_callback(
            LinkSecurity(
                encrypted=connection.is_encrypted,
                secure_connections=sc,
                # bumble marks every encrypted LE link authenticated; the association model
                # is what decides MITM protection (Core Vol 3 Part H 2.3.5.1).
                authenticated=method
                in (
                    PairingMethod.NUMERIC_COMPARISON,
                    PairingMethod.PASSKEY_ENTRY,
                    PairingMethod.OUT_OF_BAND,
                ),
                # bumble's HCI Encryption Change (v1) event carries no key size: 0 = unknown.
                key_size=int(connection.encryption_key_size) or None
                if connection.is_encrypted
                else None,
                method=method,
            )
        )

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None or not alive(connection):
            return
        self._closing = True
        try:
            await _translated("disconnect", connection, connection.disconnect())
        except BleakError:
            logger.debug("disconnect raced with a link loss", exc_info=True)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        connection = self._require()
        keystore = connection.device.keystore
        if keystore is not None and await keystore.get(str(connection.peer_address)) is not None:
            _CHOSEN.pop(connection, None)
            try:
                await _translated("encrypt", connection, connection.encrypt())
            except BleakError:
                # The peer lost its bond (a factory reset, say): forget ours and pair anew.
                await keystore.delete(str(connection.peer_address))
            else:
                return
        await _translated("pair", connection, connection.pair())

    async def unpair(self) -> None:
        central = await self._radio().central()
        if central.keystore is not None:
            await central.keystore.delete(self.address)

    # -- discovery
    async def _discover(self, connection: Connection) -> BleakGATTServiceCollection:
        client = connection.gatt_client
        collection = BleakGATTServiceCollection()
        proxies: list[ServiceProxy] = await _translated(
            "discover services",
            connection,
            client.discover_services(self._service_filter or ()),
        )
        for service in proxies:
            bleak_service = BleakGATTService(service, service.handle, _uuid_str(service.uuid))
            collection.add_service(bleak_service)
            characteristics: list[CharacteristicProxy[bytes]] = await _translated(
                "discover characteristics", connection, service.discover_characteristics()
            )
            for characteristic in characteristics:
                bleak_char = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    _uuid_str(characteristic.uuid),
                    _properties(int(characteristic.properties)),
                    lambda: self.mtu_size - 3,  # ATT_MTU minus the write-command header
                    bleak_service,
                )
                collection.add_characteristic(bleak_char)
                descriptors: list[DescriptorProxy] = await _translated(
                    "discover descriptors", connection, characteristic.discover_descriptors()
                )
                for descriptor in descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor, descriptor.handle, _uuid_str(descriptor.type), bleak_char
                        )
                    )
        return collection

    # -- I/O
    async def read_gatt_char(
        self,
        characteristic: BleakGATTCharacteristic,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        connection = self._require()
        value = await _translated(
            "read", connection, connection.gatt_client.read_value(characteristic.handle)
        )
        return bytearray(value)

    async def read_gatt_descriptor(
        self,
        descriptor: BleakGATTDescriptor,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        connection = self._require()
        value = await _translated(
            "read descriptor", connection, connection.gatt_client.read_value(descriptor.handle)
        )
        return bytearray(value)

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        connection = self._require()
        await _translated(
            "write",
            connection,
            connection.gatt_client.write_value(
                characteristic.handle, bytes(data), with_response=response
            ),
        )

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        connection = self._require()
        await _translated(
            "write descriptor",
            connection,
            connection.gatt_client.write_value(descriptor.handle, bytes(data), with_response=True),
        )

    async def start_notify(
        self,
        characteristic: BleakGATTCharacteristic,
        callback: NotifyCallback,
        **kwargs: Any,
    ) -> None:
        connection = self._require()
        proxy = characteristic.obj
        if not isinstance(proxy, CharacteristicProxy):
            raise BleakError("characteristic was not discovered by this backend")

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        # bleak prefers notifications where a characteristic offers both (see BaseBleakClient).
        await _translated("subscribe", connection, proxy.subscribe(deliver, prefer_notify=True))
        self._subscriptions[characteristic.handle] = deliver

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        connection = self._require()
        proxy = characteristic.obj
        deliver = self._subscriptions.pop(characteristic.handle, None)
        if not isinstance(proxy, CharacteristicProxy) or deliver is None:
            return
        await _translated("unsubscribe", connection, proxy.unsubscribe(deliver))


class BumbleBleakScanner(BaseBleakScanner):
    """``BaseBleakScanner`` over a bumble central; use :func:`bleak_backends` to get a bound one."""

    radio: ClassVar[VirtualRadio | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode != "passive"
        self._central: Device | None = None

    async def start(self) -> None:
        if self.radio is None:
            raise BleakError("this backend is not bound to a radio; use bleak_backends(radio)")
        central = await self.radio.central()
        self.seen_devices = {}
        central.on(central.EVENT_ADVERTISEMENT, self._on_advertisement)
        self._central = central
        try:
            await central.start_scanning(active=self._active, filter_duplicates=False)
        except core.BaseBumbleError as exc:
            central.remove_listener(central.EVENT_ADVERTISEMENT, self._on_advertisement)
            raise BleakError(f"scan start failed ({type(exc).__name__})") from exc

    async def stop(self) -> None:
        central = self._central
        if central is None:
            return
        self._central = None
        central.remove_listener(central.EVENT_ADVERTISEMENT, self._on_advertisement)
        try:
            await central.stop_scanning()
        except core.BaseBumbleError as exc:
            raise BleakError(f"scan stop failed ({type(exc).__name__})") from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        data = advertisement.data
        uuids: list[str] = []
        for ad_type in (
            AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        ):
            for uuid_list in data.get_all(ad_type):
                uuids.extend(_uuid_str(u) for u in uuid_list if _uuid_str(u) not in uuids)
        if not self.is_allowed_uuid(uuids):
            return
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
            AdvertisingData.SHORTENED_LOCAL_NAME
        )
        local_name = name if isinstance(name, str) else None
        manufacturer: dict[int, bytes] = {}
        for company, payload in data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA):
            manufacturer[int(company)] = bytes(payload)
        service_data: dict[str, bytes] = {}
        for uuid, data_bytes in data.get_all(AdvertisingData.SERVICE_DATA_16_BIT_UUID):
            service_data[_uuid_str(uuid)] = bytes(data_bytes)
        tx = data.get(AdvertisingData.TX_POWER_LEVEL)
        adv = AdvertisementData(
            local_name=local_name,
            manufacturer_data=manufacturer,
            service_data=service_data,
            service_uuids=uuids,
            tx_power=tx if isinstance(tx, int) else None,
            rssi=int(advertisement.rssi),
            platform_data=(advertisement,),
        )
        address = str(advertisement.address).split("/")[0]
        device = self.create_or_update_device(address, address, local_name, advertisement, adv)
        self.call_detection_callbacks(device, adv)


def bleak_backends(
    radio: VirtualRadio,
) -> tuple[type[BumbleBleakClient], type[BumbleBleakScanner]]:
    """Client and scanner backend classes bound to ``radio``, for bleak's ``backend=``.

    bleak instantiates the backend class itself, so the radio travels as a class attribute of
    a per-radio subclass (two radios never share one).
    """
    client = type("BumbleBleakClientBound", (BumbleBleakClient,), {"radio": radio})
    scanner = type("BumbleBleakScannerBound", (BumbleBleakScanner,), {"radio": radio})
    return client, scanner
