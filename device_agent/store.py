"""The agent's on-disk state: one directory per device credential, written crash-safely.

Layout (documented for other tools in docs/agent.md; ``phd envelope seal`` reads it)::

    <home>/credentials/<device_id>/
        device.key         PKCS#8 PEM private key, mode 0600, never leaves this directory
        device.crt         the device certificate (PEM)
        chain.crt          the leaf followed by its issuing CA, not the root (PEM; as PkiLayout)
        root.crt           the pinned hospital root (PEM)
        ingest-keys.json   {"v": 1, "keys": [{"kid": hex, "public_key": hex}, ...]}
        state.json         {"v": 1, "device_id", "seq_reserved", "racp_next", "phd": {...}}

Every write goes to a temporary file in the same directory, is fsynced, renamed over the target
and the directory fsynced: after a crash (kill -9, power loss) a file holds either its old or
its new content, never a mix.

The sequence counter reserves numbers in blocks: the new high-water mark is durable *before*
any number of the block is handed out, so a restarted agent continues above it. Numbers lost
in a crash are skipped, never reused (DESIGN.md section 4: ``seq`` strictly increasing).

All methods block (file I/O, fsync); async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.errors import CredentialError

__all__ = [
    "AgentHome",
    "Credential",
    "CredentialFiles",
    "IngestKey",
    "PhdInfo",
    "atomic_write",
]

SEQ_BLOCK = 32
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_STATE = 64 * 1024


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` durably (write, fsync, rename, fsync directory)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by umask; the key must be 0600 exactly
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhdInfo:
    """What identifies the physical PHD behind a credential (from DIS; never patient data)."""

    address: str
    kind: str = ""
    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    firmware: str = ""
    system_id: str = ""  # hex

    def to_json(self) -> dict[str, str]:
        return {
            "address": self.address,
            "kind": self.kind,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "serial": self.serial,
            "firmware": self.firmware,
            "system_id": self.system_id,
        }

    @classmethod
    def from_json(cls, raw: object) -> PhdInfo:
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= 256 for k, v in raw.items()
        ):
            raise CredentialError("state.json: 'phd' must map names to short strings")
        if not raw.get("address"):
            raise CredentialError("state.json: 'phd.address' is required")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestKey:
    kid: bytes
    public_key: bytes  # raw X25519

    def __post_init__(self) -> None:
        if len(self.public_key) != 32 or not 1 <= len(self.kid) <= 64:
            raise CredentialError("ingest key: 32-byte X25519 key and a 1-64 byte kid required")


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialFiles:
    """The PEM material of one credential, as enrollment or renewal produced it."""

    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes
    root_pem: bytes
    ingest_keys: tuple[IngestKey, ...]


class Credential:
    """One credential directory: its files, its durable state and its sequence counter."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock = threading.Lock()
        state = self._read_state()
        self.device_id: str = state["device_id"]
        self.phd = PhdInfo.from_json(state.get("phd", {}))
        self._reserved: int = state["seq_reserved"]
        self._next: int = self._reserved + 1  # the rest of an old block is skipped, never reused
        self._racp_next: int | None = state.get("racp_next")

    # -- paths
    @property
    def key_path(self) -> Path:
        return self.dir / "device.key"

    @property
    def cert_path(self) -> Path:
        return self.dir / "device.crt"

    @property
    def chain_path(self) -> Path:
        return self.dir / "chain.crt"

    @property
    def root_path(self) -> Path:
        return self.dir / "root.crt"

    @property
    def ingest_keys_path(self) -> Path:
        return self.dir / "ingest-keys.json"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    # -- reading
    def _read_state(self) -> dict[str, Any]:
        try:
            raw = self.state_path.read_bytes()
        except OSError as exc:
            raise CredentialError(f"{self.dir.name}: state.json unreadable") from exc
        if len(raw) > _MAX_STATE:
            raise CredentialError(f"{self.dir.name}: state.json too large")
        try:
            state = json.loads(raw)
        except ValueError as exc:
            raise CredentialError(f"{self.dir.name}: state.json is not JSON") from exc
        if not isinstance(state, dict) or state.get("v") != 1:
            raise CredentialError(f"{self.dir.name}: state.json version is not 1")
        if not isinstance(state.get("device_id"), str) or not _DEVICE_ID.match(state["device_id"]):
            raise CredentialError(f"{self.dir.name}: state.json device_id invalid")
        reserved = state.get("seq_reserved")
        if not isinstance(reserved, int) or isinstance(reserved, bool) or reserved < 0:
            raise CredentialError(f"{self.dir.name}: state.json seq_reserved invalid")
        racp = state.get("racp_next")
        if racp is not None and (not isinstance(racp, int) or not 0 <= racp <= 0xFFFF + 1):
            raise CredentialError(f"{self.dir.name}: state.json racp_next invalid")
        return state

    def read_key_pem(self) -> bytes:
        mode = self.key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise CredentialError(f"{self.dir.name}: device.key is readable by others; chmod 600")
        return self.key_path.read_bytes()

    def read_ingest_keys(self) -> tuple[IngestKey, ...]:
        try:
            raw = json.loads(self.ingest_keys_path.read_bytes())
            keys = tuple(
                IngestKey(kid=bytes.fromhex(k["kid"]), public_key=bytes.fromhex(k["public_key"]))
                for k in raw["keys"]
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CredentialError(f"{self.dir.name}: ingest-keys.json invalid") from exc
        if not keys:
            raise CredentialError(f"{self.dir.name}: ingest-keys.json holds no key")
        return keys

    # -- state
    def _state(self) -> dict[str, Any]:
        return {
            "v": 1,
            "device_id": self.device_id,
            "seq_reserved": self._reserved,
            "racp_next": self._racp_next,
            "phd": self.phd.to_json(),
        }

    def _save(self) -> None:
        data = json.dumps(self._state(), indent=2, sort_keys=True).encode() + b"\n"
        try:
            atomic_write(self.state_path, data)
        except OSError as exc:
            raise CredentialError(f"{self.dir.name}: cannot persist state.json") from exc

    def next_seq(self) -> int:
        """The next envelope sequence number; durable before it is returned."""
        with self._lock:
            if self._next > self._reserved:
                self._reserved = self._next + SEQ_BLOCK - 1
                self._save()
            seq = self._next
            self._next += 1
            return seq

    @property
    def seq_reserved(self) -> int:
        """Durable high-water mark: every number handed out so far is at most this."""
        return self._reserved

    @property
    def racp_next(self) -> int | None:
        """First stored-record sequence number not yet safely spooled; None: never downloaded."""
        return self._racp_next

    def set_racp_next(self, value: int) -> None:
        with self._lock:
            if self._racp_next is not None and value <= self._racp_next:
                return  # never move the cursor backwards
            self._racp_next = value
            self._save()

    def set_phd(self, phd: PhdInfo) -> None:
        with self._lock:
            self.phd = phd
            self._save()

    def replace_files(self, files: CredentialFiles) -> None:
        """Install renewed material (new key and certificate) crash-safely, key first."""
        with self._lock:
            _write_files(self.dir, files)


def _write_files(directory: Path, files: CredentialFiles) -> None:
    atomic_write(directory / "device.key", files.key_pem, mode=0o600)
    atomic_write(directory / "device.crt", files.cert_pem)
    atomic_write(directory / "chain.crt", files.chain_pem)
    atomic_write(directory / "root.crt", files.root_pem)
    keys = {
        "v": 1,
        "keys": [{"kid": k.kid.hex(), "public_key": k.public_key.hex()} for k in files.ingest_keys],
    }
    atomic_write(directory / "ingest-keys.json", json.dumps(keys, indent=2).encode() + b"\n")


class AgentHome:
    """The agent's home directory: credentials, spool, and the single-instance lock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def credentials_dir(self) -> Path:
        return self.root / "credentials"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    def ensure(self) -> None:
        for directory in (self.root, self.credentials_dir, self.spool_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def credentials(self) -> list[Credential]:
        if not self.credentials_dir.is_dir():
            return []
        return [
            Credential(d)
            for d in sorted(self.credentials_dir.iterdir())
            if d.is_dir() and (d / "state.json").is_file()
        ]

    def create_credential(
        self, *, device_id: str, phd: PhdInfo, files: CredentialFiles
    ) -> Credential:
        if not _DEVICE_ID.match(device_id):
            raise CredentialError("device id has characters not allowed in a directory name")
        self.ensure()
        directory = self.credentials_dir / device_id
        directory.mkdir(mode=0o700, exist_ok=True)
        _write_files(directory, files)
        state: dict[str, object] = {
            "v": 1,
            "device_id": device_id,
            "seq_reserved": 0,
            "racp_next": None,
            "phd": phd.to_json(),
        }
        atomic_write(directory / "state.json", json.dumps(state, indent=2).encode() + b"\n")
        return Credential(directory)

    @contextlib.contextmanager
    def instance_lock(self) -> Any:
        """Hold an exclusive lock for one running agent; released by the kernel on death."""
        self.ensure()
        fd = os.open(self.root / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise CredentialError("another agent is running with this home directory") from exc
            yield
        finally:
            os.close(fd)
