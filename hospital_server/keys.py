"""Key management: the key provider interface, the local key-file provider, per-patient keys.

Hierarchy (DESIGN.md section 5)::

    key provider (local 0600 file today; KMS / Vault behind the same interface)
      +-- key-encryption keys (KEKs), by id; one is current, older ones only unwrap
      |     +-- per-patient data keys (AES-256-GCM), stored wrapped in ``patient_key``
      +-- blind-index key (HMAC-SHA256 over normalised MRNs)

A data key is wrapped with associated data naming the patient, so a wrapped key copied onto
another patient's row does not unwrap. Deleting a patient's ``patient_key`` row destroys every
ciphertext of that patient (crypto-shredding). This module never logs or renders key bytes.

Errors: :class:`KeyManagementError` root; :class:`KeyFileError` (missing, unsafe mode,
malformed file); :class:`KeyUnavailableError` (a wrapped key does not unwrap, or the patient
key is gone).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from phd_protocol.crypto import AEAD_KEY_SIZE, CryptoError, aead_decrypt, aead_encrypt, hmac_sha256

__all__ = [
    "DataKeyCache",
    "KeyFileError",
    "KeyManagementError",
    "KeyProvider",
    "KeyUnavailableError",
    "LocalKeyFileProvider",
    "WrappedKey",
    "blind_index",
    "derive_subkey",
    "new_data_key",
    "normalise_mrn",
]

_WRAP_LABEL = b"phd-dek-wrap-v1\x00"
_MRN_LABEL = b"phd-bidx-mrn-v1\x00"
_FILE_VERSION = 1


class KeyManagementError(Exception):
    """Root of key-management errors; messages carry key ids only."""


class KeyFileError(KeyManagementError):
    """The key file is missing, readable by others, or malformed."""


class KeyUnavailableError(KeyManagementError):
    """A data key cannot be produced (wrong KEK, tampered wrap, or crypto-shredded)."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    kek_id: str
    blob: bytes


class KeyProvider(Protocol):
    """What the server needs from a key store. A KMS/Vault provider implements the same."""

    @property
    def current_kek_id(self) -> str: ...

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes: ...

    def blind_index_key(self) -> bytes: ...


def new_data_key() -> bytes:
    return secrets.token_bytes(AEAD_KEY_SIZE)


class LocalKeyFileProvider:
    """KEKs and the blind-index key in one JSON file, mode 0600, owned by the server user.

    File shape: ``{"version": 1, "current": KEK_ID, "keks": {KEK_ID: hex}, "blind_index": hex}``.

    A provider loaded from a file follows it: before wrapping, and when asked to unwrap with
    a KEK it does not hold, it checks whether the file changed (one ``stat``) and reloads it.
    So after ``phd server kek rotate`` every running server wraps new keys under the new KEK
    and opens what ``kek rewrap`` re-wrapped, without a restart. The blind-index key never
    changes: a file with another one is refused (every MRN lookup would silently miss).
    """

    def __init__(
        self,
        keks: dict[str, bytes],
        current: str,
        blind_index_key: bytes,
        *,
        path: Path | None = None,
        stamp: tuple[int, int, int] | None = None,
    ) -> None:
        _check_keys(keks, current, blind_index_key)
        # One tuple, replaced whole on reload: a reader sees the old or the new, never a mix.
        self._keys: tuple[dict[str, bytes], str] = (dict(keks), current)
        self._bidx = blind_index_key
        self._path = path
        self._stamp = stamp
        self._reload_lock = threading.Lock()

    def __repr__(self) -> str:
        keks, current = self._keys
        return f"LocalKeyFileProvider(current={current!r}, keks={sorted(keks)})"

    @classmethod
    def create(cls, path: Path) -> LocalKeyFileProvider:
        """Write a new key file (refuses to overwrite one) and return its provider."""
        kek_id = secrets.token_hex(8)
        provider = cls({kek_id: secrets.token_bytes(32)}, kek_id, secrets.token_bytes(32))
        path.parent.mkdir(parents=True, exist_ok=True)
        provider._write(path, exclusive=True)
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> LocalKeyFileProvider:
        keks, current, bidx, stamp = _read_key_file(path)
        return cls(keks, current, bidx, path=path, stamp=stamp)

    @property
    def kek_ids(self) -> tuple[str, ...]:
        """Every KEK id this provider holds (the current one among them)."""
        self._follow_file()
        return tuple(sorted(self._keys[0]))

    def rotate(self, path: Path) -> str:
        """Add a new current KEK (old ones stay to unwrap until re-wrapped); rewrite the file."""
        kek_id = secrets.token_hex(8)
        keks = dict(self._keys[0])
        keks[kek_id] = secrets.token_bytes(32)
        self._keys = (keks, kek_id)
        self._write(path, exclusive=False)
        return kek_id

    def retire(self, path: Path, kek_id: str) -> None:
        """Remove a KEK that is not current from the file. The caller first makes sure nothing
        is wrapped by it any more (``phd server kek retire`` does): what still is, is lost."""
        keks, current = self._keys
        if kek_id == current:
            raise KeyManagementError("the current KEK cannot be retired: rotate first")
        if kek_id not in keks:
            raise KeyManagementError(f"KEK {kek_id} is not in this key file")
        self._keys = ({k: v for k, v in keks.items() if k != kek_id}, current)
        self._write(path, exclusive=False)

    def _write(self, path: Path, *, exclusive: bool) -> None:
        keks, current = self._keys
        doc = {
            "version": _FILE_VERSION,
            "current": current,
            "keks": {k: v.hex() for k, v in keks.items()},
            "blind_index": self._bidx.hex(),
        }
        data = (json.dumps(doc, indent=2) + "\n").encode()
        tmp = path.with_suffix(path.suffix + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        if exclusive and path.exists():
            raise KeyFileError(f"key file {path} already exists; refusing to overwrite it")
        # Created 0600 from the first byte: never a moment where the keys are world-readable.
        fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)

    @property
    def current_kek_id(self) -> str:
        self._follow_file()
        return self._keys[1]

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        self._follow_file()
        keks, current = self._keys
        return WrappedKey(current, aead_encrypt(keks[current], data_key, aad=_WRAP_LABEL + context))

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        kek = self._keys[0].get(wrapped.kek_id)
        if kek is None:
            self._follow_file()  # re-wrapped under a KEK added to the file since we loaded it?
            kek = self._keys[0].get(wrapped.kek_id)
        if kek is None:
            raise KeyUnavailableError(f"KEK {wrapped.kek_id} is not in this key file")
        try:
            return aead_decrypt(kek, wrapped.blob, aad=_WRAP_LABEL + context)
        except CryptoError as exc:
            raise KeyUnavailableError("wrapped data key does not unwrap") from exc

    def blind_index_key(self) -> bytes:
        return self._bidx

    def _follow_file(self) -> None:
        """Reload the key file if it changed since it was read (no-op when built in memory)."""
        if self._path is None:
            return
        with self._reload_lock:
            try:
                stamp = _stamp(self._path.stat())
            except OSError as exc:
                raise KeyFileError(f"key file {self._path} is no longer readable") from exc
            if stamp == self._stamp:
                return
            keks, current, bidx, stamp = _read_key_file(self._path)
            if not hmac.compare_digest(bidx, self._bidx):
                raise KeyFileError(f"key file {self._path}: the blind-index key changed")
            self._keys, self._stamp = (keks, current), stamp


def _check_keys(keks: dict[str, bytes], current: str, blind_index_key: bytes) -> None:
    if current not in keks:
        raise KeyFileError("current KEK id is not among the KEKs")
    if any(len(k) != AEAD_KEY_SIZE for k in keks.values()):
        raise KeyFileError("every KEK must be 32 bytes")
    if len(blind_index_key) < 32:
        raise KeyFileError("the blind-index key must be at least 32 bytes")


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    # The file is replaced by rename on every write: a new inode, whatever the clock does.
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read_key_file(path: Path) -> tuple[dict[str, bytes], str, bytes, tuple[int, int, int]]:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"key file {path} does not exist (create it with `phd server init-keys`)"
        ) from exc
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(f"key file {path} is readable by group or others: chmod 600 it")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != _FILE_VERSION:
            raise KeyFileError(f"key file {path}: unsupported version")
        keks = {str(k): bytes.fromhex(v) for k, v in doc["keks"].items()}
        current, bidx = str(doc["current"]), bytes.fromhex(doc["blind_index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"key file {path} is malformed") from exc
    _check_keys(keks, current, bidx)
    return keks, current, bidx, _stamp(st)


def derive_subkey(provider: KeyProvider, label: str) -> bytes:
    """A purpose-specific secret derived from the provider's blind-index key (HMAC as a KDF).

    Used for the enrollment-code pepper: a secret outside the database, without adding a
    field to every key provider.
    """
    return hmac_sha256(provider.blind_index_key(), b"phd-subkey-v1\x00" + label.encode())


def normalise_mrn(mrn: str) -> str:
    """MRNs compare case- and space-insensitively: 'ab 123' and 'AB123' are one record."""
    return "".join(mrn.split()).upper()


def blind_index(key: bytes, mrn: str) -> str:
    """Keyed blind index of an MRN (hex). Without the key, equal MRNs cannot be linked."""
    return hmac_sha256(key, _MRN_LABEL + normalise_mrn(mrn).encode()).hex()


class DataKeyCache:
    """Bounded, thread-safe LRU of unwrapped patient data keys (unwrapping is per lookup)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, patient_id: str) -> bytes | None:
        with self._lock:
            key = self._keys.get(patient_id)
            if key is not None:
                self._keys.move_to_end(patient_id)
            return key

    def put(self, patient_id: str, key: bytes) -> None:
        with self._lock:
            self._keys[patient_id] = key
            self._keys.move_to_end(patient_id)
            while len(self._keys) > self._capacity:
                self._keys.popitem(last=False)

    def forget(self, patient_id: str) -> None:
        with self._lock:
            self._keys.pop(patient_id, None)
