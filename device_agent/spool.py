"""The agent's durable spool: sealed envelopes wait here until the gateway has accepted them.

One file per envelope, named ``<device_id>.<seq:020d>.env`` so a directory listing sorts by
device then sequence. Files are written with :func:`~device_agent.store.atomic_write` (fsynced
before rename), deleted only after the gateway's "accepted" reply, and moved to ``rejected/``
(kept for review, never silently dropped) when the gateway refuses one as malformed or too
large. The spool holds ciphertext only: it can be backed up or inspected without revealing a
reading. All methods block; async callers run them in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from device_agent.errors import SpoolError
from device_agent.store import atomic_write, fsync_dir

__all__ = ["Spool", "SpooledEnvelope"]

_NAME = re.compile(r"^(?P<dev>[A-Za-z0-9][A-Za-z0-9._-]{0,127})\.(?P<seq>\d{20})\.env$")
_MAX_ENVELOPE = 64 * 1024


@dataclass(frozen=True, slots=True)
class SpooledEnvelope:
    device_id: str
    seq: int
    path: Path

    def read(self) -> bytes:
        data = self.path.read_bytes()
        if not data or len(data) > _MAX_ENVELOPE:
            raise SpoolError(f"spooled envelope {self.path.name} has an impossible size")
        return data


class Spool:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.rejected_dir = directory / "rejected"

    def ensure(self) -> None:
        self.rejected_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, device_id: str, seq: int, envelope: bytes) -> SpooledEnvelope:
        if not envelope or len(envelope) > _MAX_ENVELOPE:
            raise SpoolError("envelope size out of bounds")
        self.ensure()
        path = self.dir / f"{device_id}.{seq:020d}.env"
        if path.exists():
            raise SpoolError(f"sequence number {seq} of {device_id} spooled twice")
        try:
            atomic_write(path, envelope, mode=0o600)
        except OSError as exc:
            raise SpoolError(f"cannot write the spool ({exc.strerror})") from exc
        return SpooledEnvelope(device_id, seq, path)

    def pending(self) -> list[SpooledEnvelope]:
        if not self.dir.is_dir():
            return []
        out: list[SpooledEnvelope] = []
        for entry in sorted(self.dir.iterdir()):
            match = _NAME.match(entry.name)
            if match and entry.is_file():
                out.append(SpooledEnvelope(match["dev"], int(match["seq"]), entry))
        return out

    def remove(self, item: SpooledEnvelope) -> None:
        item.path.unlink(missing_ok=True)
        fsync_dir(self.dir)

    def reject(self, item: SpooledEnvelope, reason: str) -> None:
        self.ensure()
        item.path.replace(self.rejected_dir / item.path.name)
        atomic_write(self.rejected_dir / f"{item.path.name}.reason", reason.encode("ascii"))
        fsync_dir(self.dir)

    def depth(self) -> int:
        return len(self.pending())
