"""The error root of device_agent; every failure names a reason and what to do next.

Error tree (messages carry ids, counts and reasons, never readings or identifiers of people)::

    AgentError
     +-- BleError          a BLE operation failed (``reason``: BleFailure)
     +-- PolicyError       a link or device was refused by policy (``reason``: BleFailure)
     +-- DeviceDataError   bytes from a device do not decode (``uuid``; the session goes on)
     +-- CredentialError   the credential directory is missing, damaged or unsafe
     +-- SpoolError        the on-disk spool cannot be written or read
     +-- HandoffError      the gateway's local ingress is unreachable or refused an envelope
     +-- EnrollError       enrollment or renewal failed (``reason``: EnrollFailure)

bleak's exceptions are translated once, in :mod:`device_agent.ble`; httpx's once, in
:mod:`device_agent.enroll`.
"""

from __future__ import annotations

import enum

__all__ = [
    "AgentError",
    "BleError",
    "BleFailure",
    "CredentialError",
    "DeviceDataError",
    "EnrollError",
    "EnrollFailure",
    "HandoffError",
    "PolicyError",
    "SpoolError",
]


class AgentError(Exception):
    """Root of every error raised by device_agent."""


class BleFailure(enum.StrEnum):
    NOT_FOUND = "not_found"  # not advertising / out of range: retry with backoff
    CONNECT_FAILED = "connect_failed"
    PAIRING_FAILED = "pairing_failed"  # the PHD refused or the exchange failed: re-pair on it
    UNENCRYPTED_LINK = "unencrypted_link"  # refused by policy
    WEAK_PAIRING = "weak_pairing"  # legacy pairing refused by policy
    GATT_ERROR = "gatt_error"
    DISCONNECTED = "disconnected"  # link lost mid-operation: reconnect and resume
    MISSING_SERVICE = "missing_service"
    RACP_FAILED = "racp_failed"
    TIMEOUT = "timeout"


class BleError(AgentError):
    def __init__(self, reason: BleFailure, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class PolicyError(BleError):
    """The link works but our security policy refuses it."""


class DeviceDataError(AgentError):
    """A characteristic value from a device did not decode; carries the UUID, never the bytes."""

    def __init__(self, uuid: int, detail: str) -> None:
        super().__init__(f"characteristic {uuid:04X}: {detail}")
        self.uuid = uuid


class CredentialError(AgentError):
    pass


class SpoolError(AgentError):
    pass


class HandoffError(AgentError):
    pass


class EnrollFailure(enum.StrEnum):
    UNREACHABLE = "unreachable"  # network or TLS failure: retry later
    REFUSED = "refused"  # the server said no (bad/expired/used code): get a new code
    BAD_RESPONSE = "bad_response"  # the response is malformed
    UNTRUSTED_CHAIN = "untrusted_chain"  # the certificate does not chain to the pinned root
    KEY_MISMATCH = "key_mismatch"  # the certificate is not for our key


class EnrollError(AgentError):
    def __init__(self, reason: EnrollFailure, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
