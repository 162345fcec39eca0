"""File primitives for the CA: atomic writes with the right modes, and one lock per PKI dir.

Private keys are created 0600 from the first byte (``os.open`` with the mode, never chmod
after the fact, so no window where another user can read them); public files are 0644.
Every write goes to a temporary file in the same directory and is renamed into place, so a
crash never leaves half a key or half an inventory. Index updates (inventory, revocations,
CRL numbers) hold an exclusive ``flock`` on ``<dir>/.lock``: the CLI and the hospital server's
enrollment endpoint may issue at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hospital_server.pki.errors import PkiError, PkiErrorReason

__all__ = ["PRIVATE_MODE", "PUBLIC_MODE", "locked", "read_json", "write_atomic", "write_json"]

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if mode == PRIVATE_MODE else 0o755)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want on public files
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        os.close(fd)
    tmp.replace(path)


def write_json(path: Path, value: Any) -> None:
    data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
    write_atomic(path, data, mode=PUBLIC_MODE)


def read_json(path: Path, default: Any) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise PkiError(PkiErrorReason.CORRUPT, f"{path.name} is not valid JSON") from exc


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
