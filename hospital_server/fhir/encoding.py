"""FHIR JSON bytes with every Decimal written exactly.

FHIR decimals carry their precision ("1.50" is not "1.5", PHD IG: the value "is required to
honor the reported precision"); ``json.dumps`` cannot write a Decimal as a number and a float
round trip would lose or invent digits. The writer is the project's wire JSON writer
(:func:`phd_protocol.observation.wire_json`), which refuses floats and any other type it does
not know instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phd_protocol.observation import wire_json

__all__ = ["MEDIA_TYPE", "to_json"]

MEDIA_TYPE = "application/fhir+json"


def to_json(resource: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON of a resource or Bundle built by this package; Decimals written exactly.

    Read it back with ``json.loads(data, parse_float=Decimal)`` to keep the precision.
    Raises TypeError for a value that is not JSON-ready (a float, a datetime...).
    """
    return wire_json(resource).encode("utf-8")
