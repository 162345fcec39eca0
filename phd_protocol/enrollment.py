"""Enrollment messages (placeholder replaced below in this session)."""

from __future__ import annotations

from phd_protocol.crypto import sha256

__all__ = ["INGEST_KID_SIZE", "ingest_key_id"]

INGEST_KID_SIZE = 16


def ingest_key_id(public_raw: bytes) -> bytes:
    """Key id of a hospital ingest HPKE public key: SHA-256 over a label and the raw key, 16 B."""
    if len(public_raw) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    return sha256(b"phd-ingest-kid-v1\x00" + public_raw)[:INGEST_KID_SIZE]
