"""What the agent knows about the security of a BLE link, independent of any BLE library.

Backends that can observe the link (our bumble backend does; on BlueZ the equivalent comes from
the D-Bus ``Device1`` properties) report a :class:`LinkSecurity` through the
``link_security_callback`` keyword that :mod:`device_agent.ble` passes to ``BleakClient``.
This module must not import bleak or bumble.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LinkSecurity", "LinkSecurityCallback", "PairingMethod"]


class PairingMethod(enum.StrEnum):
    """LE pairing association models (Core Vol 3 Part H 2.3.5.1)."""

    JUST_WORKS = "just_works"
    NUMERIC_COMPARISON = "numeric_comparison"
    PASSKEY_ENTRY = "passkey_entry"
    OUT_OF_BAND = "out_of_band"
    BONDED = "bonded"  # re-encrypted with a stored long-term key; no new pairing ran
    UNKNOWN = "unknown"  # the platform does not say


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSecurity:
    encrypted: bool
    secure_connections: bool  # LE Secure Connections (P-256 ECDH) rather than legacy pairing
    authenticated: bool  # MITM-protected key
    key_size: int | None  # encryption key size in octets (7..16); None: not reported
    method: PairingMethod

    def __post_init__(self) -> None:
        if self.key_size is not None and not 7 <= self.key_size <= 16:
            raise ValueError("an encrypted LE link has a key size of 7 to 16 octets")


LinkSecurityCallback = Callable[[LinkSecurity], None]
