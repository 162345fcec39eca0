"""The agent's BLE adapter: the only module that imports bleak.

It speaks to PHDs only through ``bleak.BleakClient`` and ``bleak.BleakScanner``; which platform
backend sits underneath (BlueZ, CoreBluetooth, WinRT, or our bumble backend for the virtual
PHDs) is chosen by the caller through :class:`BleBackends` and never matters here. bleak's
exceptions are translated once, here, into :class:`~device_agent.errors.BleError` with a
:class:`~device_agent.errors.BleFailure` reason.

Notification callbacks only enqueue (bleak ``examples/async_callback_with_queue.py``); the
session task does the work. Nothing here decodes health data beyond the framing the GATT
procedures themselves need (RACP responses, Current Time), and nothing is logged but ids,
UUIDs and counts.

Connection state machine (per :class:`PhdLink`)::

    state        event                    next         action
    -----------  -----------------------  -----------  --------------------------------------
    idle         connect()                connecting   BleakClient.connect, retried w/ backoff
    connecting   connected                pairing      BleakClient.pair (bond or re-encrypt)
    pairing      encrypted, policy ok     ready        read DIS / CTS, subscribe, RACP
    pairing      refused / unencrypted    closed       PolicyError or BleError(pairing_failed)
    ready        link lost                closed       pending RACP waits fail: disconnected
    ready        disconnect()             closed
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError

from device_agent.backoff import backoff_delay
from device_agent.errors import BleError, BleFailure, PolicyError
from device_agent.link import LinkSecurity, PairingMethod

__all__ = [
    "HEALTH_SERVICES",
    "BleBackends",
    "Discovered",
    "PhdLink",
    "Reading",
    "SecurityPolicy",
    "scan",
    "uuid16",
]

logger = logging.getLogger(__name__)

# Health services the agent looks for (Bluetooth SIG assigned numbers).
HEALTH_SERVICES: dict[int, str] = {
    0x1810: "blood_pressure",
    0x1808: "glucose",
    0x1809: "thermometer",
    0x181D: "weight",
    0x180D: "heart_rate",
    0x1822: "pulse_oximeter",
}

# Characteristics carrying measurements, subscribed on connect (per service specification).
MEASUREMENTS: dict[int, tuple[int, ...]] = {
    0x1810: (0x2A35, 0x2A36),  # BPM (indicate), Intermediate Cuff Pressure (notify)
    0x1808: (0x2A18, 0x2A34),  # Glucose Measurement, Glucose Measurement Context (notify)
    0x1809: (0x2A1C, 0x2A1E),  # Temperature Measurement (indicate), Intermediate Temperature
    0x181D: (0x2A9D,),  # Weight Measurement (indicate)
    0x180D: (0x2A37,),  # Heart Rate Measurement (notify)
    0x1822: (0x2A5E, 0x2A5F),  # PLX Spot-check (indicate), PLX Continuous (notify)
}
RACP = 0x2A52
CURRENT_TIME = 0x2A2B
DIS_FIELDS: dict[int, str] = {
    0x2A29: "manufacturer",
    0x2A24: "model",
    0x2A25: "serial",
    0x2A26: "firmware",
    0x2A23: "system_id",
}
_BASE = "-0000-1000-8000-00805f9b34fb"
_DIS_MAX = 64  # DIS strings longer than this are cut: they are labels, not data


def full_uuid(short: int) -> str:
    return f"0000{short:04x}{_BASE}"


def uuid16(uuid: str) -> int | None:
    """The 16-bit value of a Bluetooth-base UUID string, else None."""
    text = uuid.lower()
    if len(text) == 36 and text.startswith("0000") and text.endswith(_BASE):
        return int(text[4:8], 16)
    return None


@dataclass(frozen=True, slots=True)
class BleBackends:
    """bleak backends to use; None means bleak's platform default (real radio)."""

    client: type[BaseBleakClient] | None = None
    scanner: type[BaseBleakScanner] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityPolicy:
    """What the agent accepts from a link before it reads health data over it."""

    require_encryption: bool = True
    require_secure_connections: bool = True  # refuse LE legacy pairing (passive eavesdropping)
    connect_attempts: int = 4
    connect_timeout: float = 10.0
    gatt_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Discovered:
    address: str
    name: str | None
    kinds: tuple[str, ...]
    rssi: int


@dataclass(frozen=True, slots=True)
class Reading:
    """One characteristic value as received: the unit the agent keeps, seals and forwards."""

    uuid: int
    data: bytes
    received_at: datetime


async def scan(backends: BleBackends, *, duration: float = 5.0) -> list[Discovered]:
    """Devices advertising at least one of the health services."""
    kwargs: dict[str, Any] = {"service_uuids": [full_uuid(u) for u in HEALTH_SERVICES]}
    if backends.scanner is not None:
        kwargs["backend"] = backends.scanner
    try:
        found = await BleakScanner.discover(timeout=duration, return_adv=True, **kwargs)
    except BleakError as exc:
        raise BleError(BleFailure.NOT_FOUND, f"scan failed ({type(exc).__name__})") from exc
    out: list[Discovered] = []
    for device, adv in found.values():
        kinds = tuple(
            HEALTH_SERVICES[short]
            for short in (uuid16(u) for u in adv.service_uuids)
            if short in HEALTH_SERVICES
        )
        if kinds:
            out.append(Discovered(device.address, adv.local_name, kinds, adv.rssi))
    return sorted(out, key=lambda d: d.address)


def _translate(operation: str, exc: BleakError) -> BleError:
    if isinstance(exc, BleakGATTProtocolError):
        return BleError(BleFailure.GATT_ERROR, f"{operation}: ATT error 0x{int(exc.code):02X}")
    if isinstance(exc, BleakDeviceNotFoundError):
        return BleError(BleFailure.NOT_FOUND, operation)
    text = str(exc).lower()
    if "disconnect" in text or "not connected" in text:
        return BleError(BleFailure.DISCONNECTED, operation)
    return BleError(BleFailure.GATT_ERROR, f"{operation} ({type(exc).__name__})")


@dataclass(slots=True)
class _Racp:
    responses: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(16))
    subscribed: bool = False


class PhdLink:
    """A connected, paired PHD; create with :meth:`open`."""

    def __init__(self, client: BleakClient, policy: SecurityPolicy) -> None:
        self._client = client
        self.policy = policy
        self.security: LinkSecurity | None = None
        self.lost = asyncio.Event()
        self._racp = _Racp()

    # ------------------------------------------------------------------ connect
    @classmethod
    async def open(
        cls,
        address: str,
        backends: BleBackends,
        policy: SecurityPolicy,
        *,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> PhdLink:
        """Connect (retrying with backoff), pair, and enforce the security policy."""
        attempt = 0
        while True:
            try:
                return await cls._open_once(address, backends, policy)
            except PolicyError:
                raise  # retrying does not change a policy decision
            except BleError as exc:
                attempt += 1
                retryable = exc.reason in (
                    BleFailure.NOT_FOUND,
                    BleFailure.CONNECT_FAILED,
                    BleFailure.DISCONNECTED,
                    BleFailure.TIMEOUT,
                )
                if not retryable or attempt >= policy.connect_attempts:
                    raise
                delay = backoff_delay(attempt - 1)
                logger.info("connect attempt %d failed (%s); retry in %.2fs", attempt, exc, delay)
                await sleep(delay)

    @classmethod
    async def _open_once(
        cls, address: str, backends: BleBackends, policy: SecurityPolicy
    ) -> PhdLink:
        holder: list[PhdLink] = []
        reports: list[LinkSecurity] = []

        def on_disconnect(_client: BleakClient) -> None:
            if holder:
                holder[0].lost.set()

        kwargs: dict[str, Any] = {"link_security_callback": reports.append}
        if backends.client is not None:
            kwargs["backend"] = backends.client
        client = BleakClient(
            address, disconnected_callback=on_disconnect, timeout=policy.connect_timeout, **kwargs
        )
        link = cls(client, policy)
        holder.append(link)
        try:
            await asyncio.wait_for(client.connect(), policy.connect_timeout * 2)
        except TimeoutError as exc:
            raise BleError(BleFailure.TIMEOUT, "connect") from exc
        except BleakDeviceNotFoundError as exc:
            raise BleError(BleFailure.NOT_FOUND, "connect") from exc
        except BleakError as exc:
            raise BleError(BleFailure.CONNECT_FAILED, type(exc).__name__) from exc
        try:
            await link._secure(reports)
        except BaseException:
            await link.close()
            raise
        return link

    async def _secure(self, reports: list[LinkSecurity]) -> None:
        paired = True
        try:
            await asyncio.wait_for(self._client.pair(), self.policy.gatt_timeout)
        except (BleakError, TimeoutError) as exc:
            if self.policy.require_encryption:
                raise PolicyError(
                    BleFailure.PAIRING_FAILED, "the PHD refused or failed pairing"
                ) from exc
            paired = False
            logger.warning("pairing failed; continuing unencrypted as the policy allows")
        if reports and (paired or not reports[-1].encrypted):
            security = reports[-1]
        else:
            security = LinkSecurity(
                # A backend that reports nothing: a completed pair() means an encrypted bond
                # on every platform bleak supports; we cannot learn more than that.
                encrypted=paired,
                secure_connections=False,
                authenticated=False,
                key_size=None,
                method=PairingMethod.UNKNOWN,
            )
        self.security = security
        if self.policy.require_encryption and not security.encrypted:
            raise PolicyError(BleFailure.UNENCRYPTED_LINK, "link is not encrypted")
        if (
            self.policy.require_encryption
            and self.policy.require_secure_connections
            and security.method is not PairingMethod.UNKNOWN
            and not security.secure_connections
        ):
            raise PolicyError(BleFailure.WEAK_PAIRING, "LE legacy pairing refused")

    async def close(self) -> None:
        try:
            await self._client.disconnect()
        except BleakError:
            logger.debug("disconnect after link loss", exc_info=True)

    # ------------------------------------------------------------------ discovery helpers
    @property
    def address(self) -> str:
        return self._client.address

    def services(self) -> set[int]:
        out: set[int] = set()
        for service in self._client.services:
            short = uuid16(service.uuid)
            if short is not None:
                out.add(short)
        return out

    def kinds(self) -> tuple[str, ...]:
        return tuple(HEALTH_SERVICES[s] for s in sorted(self.services()) if s in HEALTH_SERVICES)

    def _char(self, short: int) -> BleakGATTCharacteristic | None:
        return self._client.services.get_characteristic(full_uuid(short))

    def has(self, short: int) -> bool:
        return self._char(short) is not None

    def writable(self, short: int) -> bool:
        char = self._char(short)
        return char is not None and "write" in char.properties

    # ------------------------------------------------------------------ GATT operations
    async def read(self, short: int) -> bytes:
        char = self._char(short)
        if char is None:
            raise BleError(BleFailure.MISSING_SERVICE, f"characteristic {short:04X} absent")
        try:
            value = await asyncio.wait_for(
                self._client.read_gatt_char(char), self.policy.gatt_timeout
            )
        except TimeoutError as exc:
            raise BleError(BleFailure.TIMEOUT, f"read {short:04X}") from exc
        except BleakError as exc:
            raise _translate(f"read {short:04X}", exc) from exc
        return bytes(value)

    async def write(self, short: int, data: bytes) -> None:
        char = self._char(short)
        if char is None:
            raise BleError(BleFailure.MISSING_SERVICE, f"characteristic {short:04X} absent")
        try:
            await asyncio.wait_for(
                self._client.write_gatt_char(char, data, response=True), self.policy.gatt_timeout
            )
        except TimeoutError as exc:
            raise BleError(BleFailure.TIMEOUT, f"write {short:04X}") from exc
        except BleakError as exc:
            raise _translate(f"write {short:04X}", exc) from exc

    async def device_information(self) -> dict[str, str]:
        """Device Information Service strings (System ID as hex); absent fields are omitted."""
        info: dict[str, str] = {}
        for short, name in DIS_FIELDS.items():
            if not self.has(short):
                continue
            raw = await self.read(short)
            if short == 0x2A23:
                info[name] = raw[:8].hex()
            else:
                info[name] = raw[:_DIS_MAX].decode("utf-8", "replace").strip("\0 ")
        return info

    async def subscribe(self, sink: Callable[[Reading], None], now: Callable[[], datetime]) -> int:
        """Subscribe to every measurement characteristic present; returns how many."""
        count = 0
        for service in sorted(self.services()):
            for short in MEASUREMENTS.get(service, ()):
                char = self._char(short)
                if char is None:
                    continue

                def deliver(
                    _char: BleakGATTCharacteristic, data: bytearray, short: int = short
                ) -> None:
                    sink(Reading(short, bytes(data), now()))  # enqueue only

                try:
                    await asyncio.wait_for(
                        self._client.start_notify(char, deliver), self.policy.gatt_timeout
                    )
                except TimeoutError as exc:
                    raise BleError(BleFailure.TIMEOUT, f"subscribe {short:04X}") from exc
                except BleakError as exc:
                    raise _translate(f"subscribe {short:04X}", exc) from exc
                count += 1
        return count

    async def racp(self, request: bytes, *, wait: float) -> bytes:
        """Write a Record Access Control Point request and wait for its indication (GLS 3.108).

        ``request`` is an encoded ``phd_protocol.gatt.racp.RacpRequest``; returns the raw
        response (number-of-records or response code) for the caller to decode. The records
        themselves arrive meanwhile as measurement notifications through the sink.
        """
        char = self._char(RACP)
        if char is None:
            raise BleError(BleFailure.MISSING_SERVICE, "no Record Access Control Point")
        if not self._racp.subscribed:

            def on_response(_char: BleakGATTCharacteristic, data: bytearray) -> None:
                with_room = self._racp.responses
                if not with_room.full():
                    with_room.put_nowait(bytes(data))

            try:
                await self._client.start_notify(char, on_response)
            except BleakError as exc:
                raise _translate("subscribe RACP", exc) from exc
            self._racp.subscribed = True
        while not self._racp.responses.empty():
            self._racp.responses.get_nowait()  # a stale answer from an aborted procedure
        await self.write(RACP, request)
        getter = asyncio.ensure_future(self._racp.responses.get())
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, lost}, timeout=wait, return_when="FIRST_COMPLETED"
            )
        finally:
            for fut in (getter, lost):
                if not fut.done():
                    fut.cancel()
        if getter in done:
            return getter.result()
        if lost in done:
            raise BleError(BleFailure.DISCONNECTED, "link lost during RACP procedure")
        raise BleError(BleFailure.TIMEOUT, "RACP procedure")
