"""Errors of the hospital CA (files, issuance, revocation).

Error tree::

    PkiError                  root; ``reason`` is a PkiErrorReason
     +-- PkiNotInitialisedError     the PKI directory lacks a file it needs (run ``phd pki init``)
     +-- PkiPassphraseError    a CA key is encrypted and the passphrase is missing or wrong
     +-- UnknownCertificateError   no issued certificate has that serial or name

Certificate refusals from the pure layer stay :class:`phd_protocol.pki.CertificateError`.
Messages name files relative to the PKI directory, serials and gateway names; never key bytes.
"""

from __future__ import annotations

import enum

__all__ = [
    "PkiError",
    "PkiErrorReason",
    "PkiNotInitialisedError",
    "PkiPassphraseError",
    "UnknownCertificateError",
]


class PkiErrorReason(enum.StrEnum):
    NOT_INITIALISED = "not_initialised"
    KEY_LOCKED = "key_locked"  # wrong or missing passphrase for an encrypted CA key
    UNKNOWN_CERTIFICATE = "unknown_certificate"
    INVALID_REQUEST = "invalid_request"  # bad name, reason, validity or CSR for issuance
    CORRUPT = "corrupt"  # an index file (inventory, revocations, keyring) does not parse


class PkiError(Exception):
    def __init__(self, reason: PkiErrorReason, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class PkiNotInitialisedError(PkiError):
    def __init__(self, message: str) -> None:
        super().__init__(PkiErrorReason.NOT_INITIALISED, message)


class PkiPassphraseError(PkiError):
    def __init__(self, message: str) -> None:
        super().__init__(PkiErrorReason.KEY_LOCKED, message)


class UnknownCertificateError(PkiError):
    def __init__(self, message: str) -> None:
        super().__init__(PkiErrorReason.UNKNOWN_CERTIFICATE, message)
