"""Why a certificate, chain, CSR or CRL is refused.

Every refusal in :mod:`phd_protocol.pki` is a :class:`CertificateError` whose ``reason`` is one
:class:`CertificateReason`; callers map reasons to their own public codes (ingest maps
``revoked`` to ``credential_revoked``, ``expired`` to ``credential_expired``, the rest to
``unknown_credential``). Messages name the failing position in the chain and the check only,
never subjects, serial numbers of devices or any other identifier that could be PHI-adjacent.
"""

from __future__ import annotations

import enum

from phd_protocol.errors import PhdProtocolError

__all__ = ["CertificateError", "CertificateReason"]


class CertificateReason(enum.StrEnum):
    """Stable, machine-readable refusal reasons. Never rename a value."""

    MALFORMED = "malformed"  # not parseable PEM/DER, or a required extension is missing
    EXPIRED = "expired"  # a certificate in the chain is past notAfter at the given time
    NOT_YET_VALID = "not_yet_valid"  # a certificate in the chain is before notBefore
    WRONG_ISSUER = "wrong_issuer"  # no path to a trust anchor (issuer name/key mismatch)
    BAD_SIGNATURE = "bad_signature"  # names chain up but a signature does not verify
    WRONG_PURPOSE = "wrong_purpose"  # EKU/role, key usage or CA flags do not fit the purpose
    NAME_CONSTRAINT = "name_constraint"  # a name outside the issuing CA's permitted subtrees
    PATH_LENGTH = "path_length"  # chain deeper than a CA's pathLenConstraint allows
    REVOKED = "revoked"  # listed on the issuing CA's CRL
    CRL_MISSING = "crl_missing"  # revocation checking demanded but no CRL for an issuer
    CRL_EXPIRED = "crl_expired"  # the CRL's nextUpdate has passed
    CRL_INVALID = "crl_invalid"  # CRL signature, issuer or time fields are wrong
    BAD_CSR = "bad_csr"  # CSR malformed, proof of possession fails, or key type refused
    UNSUPPORTED_KEY = "unsupported_key"  # a key type we do not accept (Ed25519/P-256 only)


class CertificateError(PhdProtocolError):
    """A certificate, chain, CSR or CRL was refused; see ``reason``."""

    def __init__(self, reason: CertificateReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
