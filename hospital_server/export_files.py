"""Files of research exports on disk: written private and whole, destroyed safely.

Export files hold pseudonymised research data: each is created 0600 (``O_EXCL``: never an
existing file), written under a ``.part`` name until the export is recorded, and destroyed
by overwriting and unlinking only what the export itself wrote (:func:`shred`). Used by
:mod:`hospital_server.research`; never logs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["UnsafePathError", "part", "sha256_file", "shred", "write_csv", "write_private"]


class UnsafePathError(Exception):
    """Something other than the export's own regular file stands where it should be."""


@contextmanager
def _private_file(path: Path) -> Iterator[BinaryIO]:
    """A new file, 0600 from its creation, flushed to disk on success."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def write_csv(
    path: Path,
    columns: tuple[str, ...],
    patients: Iterable[tuple[str, list[dict[str, str]]]],
) -> tuple[int, list[str]]:
    """Write the header and each patient's rows, sorted by content (patients come in
    pseudonym order): no trace of storage order or of internal ids. Returns the row count
    and the patients that had rows."""
    count, written = 0, []
    with _private_file(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        table = csv.DictWriter(text, fieldnames=columns, extrasaction="raise", lineterminator="\n")
        table.writeheader()
        for patient_id, rows in patients:
            if rows:
                table.writerows(sorted(rows, key=lambda r: tuple(r[c] for c in columns)))
                count += len(rows)
                written.append(patient_id)
        text.flush()
        text.detach()
    return count, written


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_private(path: Path, data: bytes) -> None:
    with _private_file(path) as handle:
        handle.write(data)


def shred(path: Path, *, sha256: str | None = None) -> None:
    """Overwrite a file the export wrote with zeros, then unlink it (a best effort on
    journalling and copy-on-write file systems: docs/export.md says what else destruction
    needs).

    Only ever overwrites a regular file with one link (and, given ``sha256``, only the
    content the export wrote); anything else found under the name (a symbolic or hard link,
    a replaced file) is unlinked without being written through, so a name planted in the
    export directory cannot turn destruction against another file."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(found.st_mode):
        path.unlink()
        return
    if not stat.S_ISREG(found.st_mode):
        raise UnsafePathError(str(path.name))
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError as exc:  # swapped for a link since the lstat
        raise UnsafePathError(str(path.name)) from exc
    with os.fdopen(fd, "r+b") as handle:
        info = os.fstat(fd)
        ours = stat.S_ISREG(info.st_mode) and info.st_nlink == 1
        if ours and sha256 is not None:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            ours = digest.hexdigest() == sha256
        if ours:
            handle.seek(0)
            remaining = info.st_size
            while remaining:
                step = min(1 << 20, remaining)
                handle.write(b"\x00" * step)
                remaining -= step
            handle.flush()
            os.fsync(fd)
    path.unlink()
