"""The error root of mobile_gateway.

Error tree (each carries machine-readable data; messages hold ids and counts, never PHI)::

    GatewayError
     +-- ConfigError         a setting is missing or invalid (``field``)
     +-- OutboxError         the outbox database refused an operation
     |    +-- OutboxFullError  capacity reached: ingress answers "busy"; nothing accepted
     |                         is ever dropped
     +-- MqttError           the broker link failed (``reason``: short word, ``code``: MQTT
                             reason code when the broker gave one); paho's exceptions are
                             translated into this once, in mobile_gateway.mqtt
"""

from __future__ import annotations

__all__ = ["ConfigError", "GatewayError", "MqttError", "OutboxError", "OutboxFullError"]


class GatewayError(Exception):
    """Root of every error raised by mobile_gateway."""


class ConfigError(GatewayError, ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"config {field}: {problem}")
        self.field = field
        self.problem = problem


class OutboxError(GatewayError):
    """The outbox database could not complete an operation (disk full, corruption, I/O)."""


class OutboxFullError(OutboxError):
    """The outbox is at capacity (entries or bytes); the caller must refuse, not drop."""

    def __init__(self, depth: int, size: int) -> None:
        super().__init__(f"outbox full: {depth} entries, {size} bytes")
        self.depth = depth
        self.size = size


class MqttError(GatewayError):
    """The MQTT link failed; ``reason`` says what to do next in a word or two."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        detail = f" (MQTT reason code {code})" if code is not None else ""
        super().__init__(f"mqtt {reason}{detail}")
        self.reason = reason
        self.code = code
