"""Argument checks shared by the FHIR builders.

Messages name the argument and the rule, never the value: the values are identifiers, names
and readings, and an error message may end up in a log.
"""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["check_aware", "check_id", "check_text", "check_url", "reference"]

# FHIR R4 "id" datatype: 1-64 of [A-Za-z0-9\-\.].
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# Absolute URIs with a scheme, no whitespace or control characters (FHIR uri/url).
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[\x21-\x7e]+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_MAX_TEXT = 1024


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValueError(f"{what} must be a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    return value


def check_url(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 4096 or not _URL_RE.fullmatch(value):
        raise ValueError(f"{what} must be an absolute URI without spaces")
    return value


def check_text(value: object, what: str) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > _MAX_TEXT
        or _CONTROL_RE.search(value)
    ):
        raise ValueError(f"{what} must be non-blank text without control characters")
    return value


def check_aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value


def reference(base_url: str, resource_type: str, resource_id: str) -> str:
    """``Type/id``, or ``{base_url}/Type/id`` when a base URL is given."""
    relative = f"{resource_type}/{resource_id}"
    return f"{base_url.rstrip('/')}/{relative}" if base_url else relative
