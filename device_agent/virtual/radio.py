"""The in-process radio: one bumble ``LocalLink`` shared by the agent's central and the PHDs.

bumble is a real Bluetooth host stack (HCI, L2CAP, ATT/GATT, SMP with LE Secure Connections);
``LocalLink`` replaces only the air between controllers. Everything here runs on one asyncio
loop. This module never encodes or decodes health data and never touches the agent's state.
"""

from __future__ import annotations

import asyncio
import itertools

from bumble.controller import Controller
from bumble.device import Connection, Device
from bumble.hci import Address
from bumble.host import Host
from bumble.keys import MemoryKeyStore
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate

__all__ = ["VirtualRadio", "alive"]

# Random static addresses (Core Vol 6 Part B 1.3.2.1): the two top bits are set.
_CENTRAL_ADDRESS = "C0:00:00:00:00:01"


class VirtualRadio:
    """One shared link; hands out powered-on bumble devices attached to it.

    The central (the agent's side) is created lazily and serialises connection attempts,
    because a bumble controller supports one pending LE connection at a time (as real
    controllers do).
    """

    def __init__(self) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]  # bumble leaves it unannotated
        self._central: Device | None = None
        self._central_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()
        self._addresses = itertools.count(0x10)

    def next_address(self) -> str:
        """A fresh random static address for a virtual peripheral."""
        n = next(self._addresses)
        return f"D0:00:00:00:{n >> 8:02X}:{n & 0xFF:02X}"

    async def new_device(self, name: str, address: str) -> Device:
        device = Device(name, Address(address))
        device.host = Host()
        device.host.controller = Controller(name, link=self.link)
        device.keystore = MemoryKeyStore()
        await device.power_on()
        return device

    async def central(self) -> Device:
        """The agent's central device, powered on once.

        Its pairing configuration asks for LE Secure Connections with MITM protection and
        bonding; with a display and yes/no input it gets numeric comparison against a PHD
        that has a display, and Just Works against one that has none (Core Vol 3 Part H 2.3.5.1).
        """
        async with self._central_lock:
            if self._central is None:
                central = await self.new_device("phd-agent", _CENTRAL_ADDRESS)
                central.pairing_config_factory = lambda _connection: PairingConfig(
                    sc=True,
                    mitm=True,
                    bonding=True,
                    delegate=PairingDelegate(
                        io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_YES_NO_INPUT
                    ),
                )
                self._central = central
            return self._central

    async def close(self) -> None:
        """Power the central off (the PHDs are stopped by their owners)."""
        async with self._central_lock:
            if self._central is not None:
                await self._central.power_off()
                self._central = None


def alive(connection: Connection) -> bool:
    """Whether bumble still lists this connection (it drops it on disconnection)."""
    return connection.device.connections.get(connection.handle) is connection
