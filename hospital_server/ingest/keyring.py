"""Load the hospital ingest HPKE keys named by the PKI directory's ``ingest/keyring.json``.

Keys with status ``active`` or ``retiring`` are loaded (a rotation overlaps old and new);
``retired`` keys are not, so envelopes sealed to them are ``unknown_recipient_key``. The key id
is recomputed from each private key and must equal the listed one: a swapped file is refused.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING, cast

from hospital_server.pki.layout import PkiLayout
from phd_protocol import crypto
from phd_protocol.enrollment import ingest_key_id
from phd_protocol.envelope import IngestKey, KeyRing

if TYPE_CHECKING:  # annotation only; key operations go through phd_protocol.crypto
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["IngestKeyError", "load_keyring", "recipient_keys"]

_LOADED = frozenset({"active", "retiring"})


class IngestKeyError(Exception):
    """The ingest keyring or one of its key files is missing, unsafe or inconsistent."""


def _entries(layout: PkiLayout) -> list[dict[str, str]]:
    try:
        doc = json.loads(layout.ingest_keyring.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IngestKeyError(f"{layout.ingest_keyring} missing: run `phd pki init`") from exc
    except ValueError as exc:
        raise IngestKeyError(f"{layout.ingest_keyring} is not valid JSON") from exc
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise IngestKeyError(f"{layout.ingest_keyring} must be a list of key entries")
    return doc


def load_keyring(layout: PkiLayout) -> KeyRing:
    keys: list[IngestKey] = []
    for entry in _entries(layout):
        if entry.get("status") not in _LOADED:
            continue
        path = layout.ingest_keyring.parent / Path(str(entry["private_file"])).name
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise IngestKeyError(f"{path} is readable by group or others: chmod 600 it")
        private = crypto.load_private_key_pem(path.read_bytes())
        # phd_protocol.crypto does not export the X25519 class (hazmat stays in one module);
        # only an X25519 private key yields a 32-byte raw public key here, others raise.
        try:
            public = crypto.x25519_public_raw(private)  # type: ignore[arg-type] # checked here
        except (AttributeError, TypeError, ValueError) as exc:
            raise IngestKeyError(f"{path} is not an X25519 key") from exc
        kid = ingest_key_id(public)
        if kid.hex() != entry.get("kid"):
            raise IngestKeyError(f"{path} does not match the kid listed for it")
        keys.append(IngestKey(kid=kid, private_key=cast("X25519PrivateKey", private)))
    if not keys:
        raise IngestKeyError("no active ingest key")
    return KeyRing(keys)


def recipient_keys(layout: PkiLayout) -> list[tuple[bytes, bytes]]:
    """(kid, raw public key) of every active key, for enrollment responses."""
    return [
        (bytes.fromhex(e["kid"]), bytes.fromhex(e["public"]))
        for e in _entries(layout)
        if e.get("status") == "active"
    ]
