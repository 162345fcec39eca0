"""The error root of phd_protocol and the public reason codes.

Error tree (each leaf carries machine-readable data, never PHI)::

    PhdProtocolError
     +-- ParseError            bytes do not match the specification (field, offset)
     |    +-- CborError        cbor: non-deterministic or out-of-profile CBOR (``rule``)
     |    +-- CoseError        cose: a COSE_Sign1 that does not parse
     |    +-- RacpError        gatt.racp: a RACP request refused (``response_code``)
     +-- CryptoError           crypto: an open/decrypt/verify failed (deliberately no detail)
     +-- CertificateError      pki: a certificate, chain or CRL is refused (``reason``)
     +-- EnrollmentError       enrollment: a code, request or renewal is refused (``reason``)
     +-- EnvelopeError         envelope/policy: an envelope is refused (``reason``: RejectReason)
     +-- WireError             wire: a gateway uplink/ack message is malformed (``rule``)
     +-- IngressError          ingress: agent -> gateway framing is malformed or too large

Subclasses other than ParseError are defined next to the code that raises them and must derive
from PhdProtocolError. Messages name field names, offsets, lengths and ids only, never values.
"""

from __future__ import annotations

import enum

__all__ = ["ParseError", "PhdProtocolError", "RejectReason"]


class PhdProtocolError(Exception):
    """Root of every error raised by phd_protocol."""


class ParseError(PhdProtocolError, ValueError):
    """Input bytes do not follow the specification; the message says where and why."""


class RejectReason(enum.StrEnum):
    """Public ingest rejection reasons (DESIGN.md section 7). Stable names: never rename."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNKNOWN_RECIPIENT_KEY = "unknown_recipient_key"
    DECRYPT_FAILED = "decrypt_failed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    CREDENTIAL_REVOKED = "credential_revoked"
    CREDENTIAL_EXPIRED = "credential_expired"
    NOT_ENROLLED = "not_enrolled"
    REPLAY = "replay"
    CLOCK_SKEW = "clock_skew"
    GATEWAY_REVOKED = "gateway_revoked"
