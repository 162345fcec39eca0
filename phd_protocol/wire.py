"""Gateway uplink wire formats: the batch a gateway publishes and the ack the hospital returns.

What it is for: the two CBOR messages on ``phd/v1/gw/{gateway_id}/up`` and ``.../ack``
(DESIGN.md section 4, "Gateway uplink"), as frozen values with bounds checked both when they
are built and when they are decoded::

    up:  {"v": 1, "id": <16-byte batch id>, "env": [<sealed envelope bytes>, ...]}
    ack: {"v": 1, "id": <16-byte batch id>, "results": [<result>, ...]}
    result: {"status": "stored"} | {"status": "duplicate"} | {"status": "retry_later"}
          | {"status": "rejected", "reason": <RejectReason>, "permanent": <bool>}

``results[i]`` answers ``env[i]`` of the batch with the same ``id``. The batch as a whole is
bounded (MAX_BATCH_BYTES, MAX_BATCH_ENVELOPES); a single envelope over MAX_ENVELOPE_BYTES
inside it is still a valid batch, and its result is ``rejected(too_large, permanent)``.
The gateway deletes an envelope from its outbox only when its result is *settled* (stored,
duplicate, or a permanent rejection): the hospital's commit, not the broker's PUBACK, ends
the gateway's responsibility.

Envelopes are opaque here: the gateway and the broker are untrusted for content and never
look inside. This module must never open, verify or log an envelope; it raises only
:class:`WireError` (a :class:`~phd_protocol.errors.PhdProtocolError`) for bad messages.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from phd_protocol import cbor
from phd_protocol.crypto import Rng
from phd_protocol.errors import PhdProtocolError, RejectReason

__all__ = [
    "BATCH_ID_SIZE",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENVELOPES",
    "MAX_ENVELOPE_BYTES",
    "WIRE_VERSION",
    "AckStatus",
    "EnvelopeResult",
    "UplinkAck",
    "UplinkBatch",
    "WireError",
    "batch_size",
]

WIRE_VERSION = 1
BATCH_ID_SIZE = 16
# One sealed envelope (DESIGN.md section 4: at most 64 KiB). phd_protocol.envelope uses it too.
MAX_ENVELOPE_BYTES = 64 * 1024
# Per uplink message. 64 envelopes amortise the per-message cost of MQTT (API-FACTS.md: one
# message per envelope is the bottleneck) while 1 MiB stays far below broker limits and keeps
# a single redelivery cheap. The gateway fills batches up to whichever bound comes first.
MAX_BATCH_ENVELOPES = 64
MAX_BATCH_BYTES = 1024 * 1024
# An ack holds only small result maps; this bounds what a gateway will parse.
_MAX_ACK_BYTES = 64 * 1024

# CBOR overhead of a batch around its envelopes: map head, three keys, version, 16-byte id,
# array head, and up to 5 bytes of head per envelope. Used to size batches before encoding.
_BATCH_FIXED_OVERHEAD = 1 + 2 + 1 + 3 + 1 + BATCH_ID_SIZE + 4 + 3
_PER_ENVELOPE_OVERHEAD = 5


class WireError(PhdProtocolError):
    """A gateway uplink or ack message is malformed or out of bounds.

    ``rule`` is a short stable code (``"malformed"``, ``"too_large"``, ``"too_many"``,
    ``"version"``, ``"mismatch"``); the message names fields and counts, never content.
    """

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        super().__init__(f"wire {rule}: {detail}")


class AckStatus(enum.StrEnum):
    """What happened to one envelope at the hospital. Stable names: never rename."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    RETRY_LATER = "retry_later"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeResult:
    """The hospital's answer for one envelope. ``reason``/``permanent`` only for rejections."""

    status: AckStatus
    reason: RejectReason | None = None
    permanent: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.status, AckStatus):
            raise TypeError("status must be an AckStatus")
        if self.status is AckStatus.REJECTED:
            if not isinstance(self.reason, RejectReason):
                raise ValueError("a rejection needs a RejectReason")
        elif self.reason is not None or self.permanent:
            raise ValueError("only a rejection carries a reason and permanence")

    @classmethod
    def stored(cls) -> EnvelopeResult:
        return cls(status=AckStatus.STORED)

    @classmethod
    def duplicate(cls) -> EnvelopeResult:
        return cls(status=AckStatus.DUPLICATE)

    @classmethod
    def retry_later(cls) -> EnvelopeResult:
        return cls(status=AckStatus.RETRY_LATER)

    @classmethod
    def rejected(cls, reason: RejectReason, *, permanent: bool) -> EnvelopeResult:
        return cls(status=AckStatus.REJECTED, reason=reason, permanent=permanent)

    @property
    def settled(self) -> bool:
        """True when the gateway may delete the envelope from its outbox."""
        return self.status is not AckStatus.RETRY_LATER and not (
            self.status is AckStatus.REJECTED and not self.permanent
        )

    def to_cbor(self) -> dict[str, cbor.Encodable]:
        if self.status is AckStatus.REJECTED:
            if self.reason is None:  # unreachable: __post_init__ requires it; narrows the type
                raise ValueError("rejection without a reason")
            return {
                "status": self.status.value,
                "reason": self.reason.value,
                "permanent": self.permanent,
            }
        return {"status": self.status.value}

    @classmethod
    def from_cbor(cls, value: object) -> EnvelopeResult:
        if not isinstance(value, dict):
            raise WireError("malformed", "a result must be a map")
        status_text = value.get("status")
        if not isinstance(status_text, str):
            raise WireError("malformed", "result status must be text")
        try:
            status = AckStatus(status_text)
        except ValueError:
            raise WireError("malformed", "unknown result status") from None
        if status is not AckStatus.REJECTED:
            if set(value) != {"status"}:
                raise WireError("malformed", "unexpected keys in a non-rejection result")
            return cls(status=status)
        if set(value) != {"status", "reason", "permanent"}:
            raise WireError("malformed", "a rejection has exactly status, reason, permanent")
        try:
            reason = RejectReason(value["reason"])
        except ValueError:
            raise WireError("malformed", "unknown rejection reason") from None
        permanent = value["permanent"]
        if not isinstance(permanent, bool):
            raise WireError("malformed", "permanent must be a boolean")
        return cls(status=status, reason=reason, permanent=permanent)


def _check_batch_id(batch_id: object) -> bytes:
    if not isinstance(batch_id, bytes) or len(batch_id) != BATCH_ID_SIZE:
        raise WireError("malformed", f"batch id must be {BATCH_ID_SIZE} bytes")
    return batch_id


def _decode_map(data: bytes, max_bytes: int, what: str) -> dict[cbor.CborKey, cbor.CborValue]:
    if not isinstance(data, bytes):
        raise TypeError("decode() takes bytes")
    if len(data) > max_bytes:
        raise WireError("too_large", f"{what} of {len(data)} bytes exceeds {max_bytes}")
    try:
        # Envelopes are byte strings (their own CBOR is not parsed here), so no tags are
        # needed, and the structure is at most three levels deep.
        value = cbor.decode(data, max_depth=4, max_size=max_bytes, tags=frozenset())
    except cbor.CborError as exc:
        raise WireError("malformed", f"{what} is not deterministic CBOR ({exc.rule})") from exc
    if not isinstance(value, dict):
        raise WireError("malformed", f"{what} must be a map")
    if value.get("v") != WIRE_VERSION or isinstance(value.get("v"), bool):
        raise WireError("version", f"{what} version is not {WIRE_VERSION}")
    return value


def batch_size(envelopes: Iterable[bytes]) -> int:
    """Upper bound of the encoded size of a batch holding ``envelopes`` (for batch filling)."""
    return _BATCH_FIXED_OVERHEAD + sum(len(e) + _PER_ENVELOPE_OVERHEAD for e in envelopes)


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkBatch:
    """One uplink message: a batch id and 1..MAX_BATCH_ENVELOPES sealed envelopes."""

    id: bytes
    envelopes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_batch_id(self.id)
        if not isinstance(self.envelopes, tuple):
            raise TypeError("envelopes must be a tuple of bytes")
        if not 1 <= len(self.envelopes) <= MAX_BATCH_ENVELOPES:
            raise WireError("too_many", f"a batch holds 1..{MAX_BATCH_ENVELOPES} envelopes")
        # Typed as bytes, but callers may be untyped: check at run time what was passed.
        for index, envelope in enumerate(cast("tuple[object, ...]", self.envelopes)):
            if not isinstance(envelope, bytes) or not envelope:
                raise WireError("malformed", f"envelope {index} must be non-empty bytes")
        # An envelope over MAX_ENVELOPE_BYTES is carried, not refused here: the batch bound
        # below still holds, and the hospital answers that envelope alone with
        # rejected(too_large, permanent), so the gateway can settle it. Refusing the whole
        # batch would leave every envelope of it unanswered and the gateway retrying forever.
        if batch_size(self.envelopes) > MAX_BATCH_BYTES:
            raise WireError("too_large", f"batch exceeds {MAX_BATCH_BYTES} bytes")

    @classmethod
    def new(cls, envelopes: Sequence[bytes], *, rng: Rng | None = None) -> UplinkBatch:
        """A batch with a fresh random id (``rng`` injectable for tests)."""
        return cls(id=(rng or secrets.token_bytes)(BATCH_ID_SIZE), envelopes=tuple(envelopes))

    def encode(self) -> bytes:
        return cbor.encode({"v": WIRE_VERSION, "id": self.id, "env": list(self.envelopes)})

    @classmethod
    def decode(cls, data: bytes) -> UplinkBatch:
        value = _decode_map(data, MAX_BATCH_BYTES, "batch")
        if set(value) != {"v", "id", "env"}:
            raise WireError("malformed", "a batch has exactly the keys v, id, env")
        envelopes = value["env"]
        if not isinstance(envelopes, list):
            raise WireError("malformed", "env must be an array")
        checked: list[bytes] = []
        for envelope in envelopes:
            if not isinstance(envelope, bytes):
                raise WireError("malformed", "env must hold byte strings")
            checked.append(envelope)
        return cls(id=_check_batch_id(value["id"]), envelopes=tuple(checked))


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkAck:
    """The hospital's answer to one batch: one result per envelope, in the batch's order."""

    id: bytes
    results: tuple[EnvelopeResult, ...]

    def __post_init__(self) -> None:
        _check_batch_id(self.id)
        if not isinstance(self.results, tuple):
            raise TypeError("results must be a tuple of EnvelopeResult")
        if not 1 <= len(self.results) <= MAX_BATCH_ENVELOPES:
            raise WireError("too_many", f"an ack holds 1..{MAX_BATCH_ENVELOPES} results")
        for result in self.results:
            if not isinstance(result, EnvelopeResult):
                raise TypeError("results must be a tuple of EnvelopeResult")

    def check_answers(self, batch: UplinkBatch) -> None:
        """Raise WireError unless this ack answers ``batch`` (same id, one result each)."""
        if self.id != batch.id:
            raise WireError("mismatch", "ack id differs from the batch id")
        if len(self.results) != len(batch.envelopes):
            raise WireError(
                "mismatch",
                f"{len(self.results)} results for {len(batch.envelopes)} envelopes",
            )

    def encode(self) -> bytes:
        results = [r.to_cbor() for r in self.results]
        return cbor.encode({"v": WIRE_VERSION, "id": self.id, "results": results})

    @classmethod
    def decode(cls, data: bytes) -> UplinkAck:
        value = _decode_map(data, _MAX_ACK_BYTES, "ack")
        if set(value) != {"v", "id", "results"}:
            raise WireError("malformed", "an ack has exactly the keys v, id, results")
        results = value["results"]
        if not isinstance(results, list):
            raise WireError("malformed", "results must be an array")
        return cls(
            id=_check_batch_id(value["id"]),
            results=tuple(EnvelopeResult.from_cbor(r) for r in results),
        )
