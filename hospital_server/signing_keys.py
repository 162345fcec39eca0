"""Ed25519 signing keys kept in the database, private halves wrapped by the KEK.

Two purposes use them, each with a table and a wrap context of its own (a key does one job):
audit checkpoints (``audit_signing_key``, :mod:`hospital_server.auditlog`) and research
export manifests (``export_signing_key``, :mod:`hospital_server.research`). A key is made on
first use; its kid is derived from its public key; its wrap opens under its own kid only.

A public key is trusted only if the KEK vouches for it: its row's wrapped private key opens
under the key file and matches the stored public key. A row added by someone with database
access but without the key file therefore vouches for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlmodel import Session, col, select

from hospital_server.keys import KeyProvider, KeyUnavailableError, WrappedKey
from hospital_server.models import AuditSigningKey, ExportSigningKey
from phd_protocol import crypto

__all__ = ["AUDIT_KEYS", "EXPORT_KEYS", "SigningKeyStore"]

K = TypeVar("K", AuditSigningKey, ExportSigningKey)


@dataclass(frozen=True, slots=True)
class SigningKeyStore(Generic[K]):
    model: type[K]
    label: bytes  # prefix of the wrap's associated data

    def context(self, kid: str) -> bytes:
        """Associated data of a wrapped key of this store: it opens under its own kid only."""
        return self.label + b"\x00" + kid.encode()

    def sign(
        self,
        session: Session,
        keys: KeyProvider,
        message: Callable[[str], bytes],
        *,
        now: datetime,
    ) -> tuple[str, bytes]:
        """Sign ``message(kid)`` with the newest key (made and flushed if there is none);
        returns (kid, signature). The message names the kid, so a signature cannot be passed
        off as another key's."""
        row = self._current(session, keys, now=now)
        private = self.private(keys, row)
        if private is None:  # made or vouched for just now: only a key file change gets here
            raise KeyUnavailableError(f"signing key {row.kid} does not open with the key file")
        return row.kid, crypto.sign(private, message(row.kid))

    def vouched(self, session: Session, keys: KeyProvider) -> dict[str, crypto.VerifyingKey]:
        """Public keys by kid, of every row the KEK vouches for."""
        out: dict[str, crypto.VerifyingKey] = {}
        for row in session.exec(select(self.model)):
            private = self.private(keys, row)
            if private is not None:
                out[row.kid] = private.public_key()
        return out

    def private(self, keys: KeyProvider, row: K) -> ed25519.Ed25519PrivateKey | None:
        """The private key, if the KEK opens it and it matches the stored public key."""
        try:
            pem = keys.unwrap(
                WrappedKey(row.kek_id, row.private_wrapped), context=self.context(row.kid)
            )
        except KeyUnavailableError:
            return None
        private = crypto.load_private_key_pem(pem)
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            return None
        if crypto.public_key_pem(private.public_key()) != row.public_pem:
            return None
        return private

    def _current(self, session: Session, keys: KeyProvider, *, now: datetime) -> K:
        """The newest key the KEK vouches for (a row someone added without the key file is
        passed over, not trusted and not fatal); a new one if there is none."""
        for row in session.exec(select(self.model).order_by(col(self.model.created_at).desc())):
            if self.private(keys, row) is not None:
                return row
        private = crypto.generate_signing_key(crypto.COSE_EDDSA)
        public_pem = crypto.public_key_pem(private.public_key())
        kid = crypto.sha256(public_pem).hex()[:32]
        wrapped = keys.wrap(crypto.private_key_pem(private), context=self.context(kid))
        new = self.model(
            kid=kid,
            public_pem=public_pem,
            private_wrapped=wrapped.blob,
            kek_id=wrapped.kek_id,
            created_at=now,
        )
        session.add(new)
        session.flush()
        return new


AUDIT_KEYS = SigningKeyStore(AuditSigningKey, b"audit-signing-key")
EXPORT_KEYS = SigningKeyStore(ExportSigningKey, b"export-signing-key")
