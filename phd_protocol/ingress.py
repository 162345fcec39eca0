"""Agent -> gateway ingress framing: the bytes on the gateway's local Unix socket.

Sans-I/O (h11 style): this module turns bytes into values and values into bytes; the gateway's
asyncio server and the agent's client do the reading and writing. It never touches a socket,
never logs and never looks inside an envelope (the gateway cannot read it anyway).

Request (agent -> gateway), repeated on one connection::

    +-----------------------+----------------------------+
    | length: u32 big-endian| sealed envelope, `length`  |
    +-----------------------+----------------------------+
    1 <= length <= MAX_ENVELOPE_SIZE (64 KiB, DESIGN.md section 4 "Envelope v1" step 4)

Reply (gateway -> agent), exactly one per request, in request order::

    +-------------+-------------------------+-----------------------------+
    | status: u8  | reason length: u16 BE   | ASCII reason, `length` bytes|
    +-------------+-------------------------+-----------------------------+

Status ``0`` (accepted) is sent only after the envelope is durably committed to the outbox;
the agent deletes its spooled copy only then. ``1`` too large and ``2`` malformed are final for
that envelope (after either, the gateway closes the connection, since the stream position can
no longer be trusted); ``3`` busy means the outbox is full: keep the envelope, retry later.

Errors::

    PhdProtocolError
     +-- IngressError   (``status``: the IngressStatus the gateway answers with)
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from phd_protocol.errors import PhdProtocolError

__all__ = [
    "HEADER_SIZE",
    "MAX_ENVELOPE_SIZE",
    "MAX_REASON_SIZE",
    "REPLY_HEADER_SIZE",
    "IngressError",
    "IngressReply",
    "IngressStatus",
    "ReplyReader",
    "RequestReader",
    "decode_reply",
    "encode_reply",
    "encode_request",
    "parse_request_length",
]

MAX_ENVELOPE_SIZE = 64 * 1024
"""Largest envelope a request may carry (DESIGN.md section 4: framed envelope at most 64 KiB)."""

MAX_REASON_SIZE = 256
"""Largest reason text in a reply; reasons are short machine-readable words, never PHI."""

HEADER_SIZE = 4
REPLY_HEADER_SIZE = 3

_REQUEST_HEADER = struct.Struct(">I")
_REPLY_HEADER = struct.Struct(">BH")


class IngressStatus(enum.IntEnum):
    """Reply status byte (docs/ARCHITECTURE.md "Agent -> gateway ingress framing")."""

    ACCEPTED = 0
    TOO_LARGE = 1
    MALFORMED = 2
    BUSY = 3


class IngressError(PhdProtocolError):
    """A request or reply violates the framing; ``status`` is what the gateway answers."""

    def __init__(self, status: IngressStatus, reason: str) -> None:
        super().__init__(f"{status.name.lower()}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressReply:
    """One reply: a status and a short ASCII reason (e.g. ``stored``, ``outbox_full``)."""

    status: IngressStatus
    reason: str

    def __post_init__(self) -> None:
        _check_reason(self.reason)

    @property
    def accepted(self) -> bool:
        return self.status is IngressStatus.ACCEPTED


def _check_reason(reason: str) -> None:
    if not reason.isascii() or not reason.isprintable():
        raise IngressError(IngressStatus.MALFORMED, "reason is not printable ASCII")
    if len(reason) > MAX_REASON_SIZE:
        raise IngressError(IngressStatus.MALFORMED, f"reason longer than {MAX_REASON_SIZE}")


def encode_request(envelope: bytes) -> bytes:
    """Frame one sealed envelope for the gateway."""
    if not envelope:
        raise IngressError(IngressStatus.MALFORMED, "empty envelope")
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise IngressError(
            IngressStatus.TOO_LARGE, f"envelope of {len(envelope)} bytes > {MAX_ENVELOPE_SIZE}"
        )
    return _REQUEST_HEADER.pack(len(envelope)) + envelope


def parse_request_length(header: bytes) -> int:
    """Validate a 4-byte request header and return the body length that follows."""
    if len(header) != HEADER_SIZE:
        raise IngressError(IngressStatus.MALFORMED, f"header of {len(header)} bytes, want 4")
    (length,) = _REQUEST_HEADER.unpack(header)
    if length == 0:
        raise IngressError(IngressStatus.MALFORMED, "zero-length envelope")
    if length > MAX_ENVELOPE_SIZE:
        # Refused from the header alone: the body is never buffered.
        raise IngressError(
            IngressStatus.TOO_LARGE, f"envelope of {length} bytes > {MAX_ENVELOPE_SIZE}"
        )
    return int(length)


def encode_reply(reply: IngressReply) -> bytes:
    reason = reply.reason.encode("ascii")
    return _REPLY_HEADER.pack(int(reply.status), len(reason)) + reason


def decode_reply(data: bytes) -> IngressReply:
    """Decode exactly one complete reply."""
    reader = ReplyReader()
    replies = reader.feed(data)
    if len(replies) != 1 or reader.buffered:
        raise IngressError(IngressStatus.MALFORMED, "not exactly one reply")
    return replies[0]


class RequestReader:
    """Incremental request parser: feed bytes, get whole envelopes.

    Buffers at most one header plus one envelope (<= 64 KiB + 4). After an error the reader is
    poisoned (every later ``feed`` raises), because the stream position is lost.
    """

    __slots__ = ("_buf", "_error", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: int | None = None  # body length once the header is parsed
        self._error: IngressError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[bytes] = []
        try:
            while True:
                if self._need is None:
                    if len(self._buf) < HEADER_SIZE:
                        break
                    self._need = parse_request_length(bytes(self._buf[:HEADER_SIZE]))
                    del self._buf[:HEADER_SIZE]
                if len(self._buf) < self._need:
                    break
                out.append(bytes(self._buf[: self._need]))
                del self._buf[: self._need]
                self._need = None
        except IngressError as exc:
            self._error = exc
            self._buf.clear()
            raise
        return out


class ReplyReader:
    """Incremental reply parser for the agent side; same poisoning rule as RequestReader."""

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: IngressError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[IngressReply]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[IngressReply] = []
        try:
            while len(self._buf) >= REPLY_HEADER_SIZE:
                status_byte, length = _REPLY_HEADER.unpack(bytes(self._buf[:REPLY_HEADER_SIZE]))
                if length > MAX_REASON_SIZE:
                    raise IngressError(IngressStatus.MALFORMED, "reply reason too long")
                if len(self._buf) < REPLY_HEADER_SIZE + length:
                    break
                try:
                    status = IngressStatus(status_byte)
                except ValueError as exc:
                    raise IngressError(
                        IngressStatus.MALFORMED, f"unknown status {status_byte}"
                    ) from exc
                raw = bytes(self._buf[REPLY_HEADER_SIZE : REPLY_HEADER_SIZE + length])
                try:
                    reason = raw.decode("ascii")
                except UnicodeDecodeError as exc:
                    raise IngressError(IngressStatus.MALFORMED, "reason is not ASCII") from exc
                out.append(IngressReply(status=status, reason=reason))
                del self._buf[: REPLY_HEADER_SIZE + length]
        except IngressError as exc:
            self._error = exc
            self._buf.clear()
            raise
        return out
