"""GATT test vectors (tests/vectors/gatt/*.json): decode, re-encode, observations, refusals.

Each file says where its bytes came from (``provenance``). For every valid vector: the decoded
fields match, encoding the decoded value gives the same bytes back, and the observations match
the expected subset. For every invalid vector: decoding raises ParseError with the expected
message fragment (and, for RACP, the response code a meter must answer).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from phd_protocol import gatt
from phd_protocol.errors import ParseError
from phd_protocol.gatt import RacpError

VECTOR_DIR = Path(__file__).parents[2] / "vectors" / "gatt"
RECEIVED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _load() -> list[dict[str, Any]]:
    files = sorted(VECTOR_DIR.glob("*.json"))
    assert files, "no vector files found"
    return [
        {"file": p.name, **json.loads(p.read_text(encoding="utf-8"), parse_float=Decimal)}
        for p in files
    ]


FILES = _load()


def _cases(kind: str) -> list[Any]:
    cases = []
    for doc in FILES:
        for case in doc[kind]:
            char = case.get("characteristic", doc["characteristic"])
            cases.append(pytest.param(char, case, id=f"{doc['file']}:{case['name']}"))
    return cases


def _matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(_matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or expected is None:
        return expected is actual
    if isinstance(expected, int | Decimal):
        return (
            isinstance(actual, int | Decimal)
            and not isinstance(actual, bool)
            and (Decimal(actual) == Decimal(expected))
        )
    return bool(expected == actual)


def test_every_file_has_provenance_and_cases() -> None:
    for doc in FILES:
        assert len(doc["provenance"]) > 40, doc["file"]
        assert doc["valid"], doc["file"]
        assert doc["invalid"], doc["file"]


def test_every_codec_has_vectors() -> None:
    covered = {
        int(case.get("characteristic", doc["characteristic"]), 16)
        for doc in FILES
        for case in doc["valid"]
    }
    assert covered == set(gatt.CODECS)


@pytest.mark.parametrize(("char", "case"), _cases("valid"))
def test_valid_vector(char: str, case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    value = gatt.decode(char, data)
    fields = gatt.fields(value)
    assert _matches(case.get("fields", {}), fields), fields
    assert gatt.encode(value) == bytes.fromhex(case.get("canonical_hex", case["hex"]))
    # Decoding the re-encoding gives the same value.
    assert gatt.decode(char, gatt.encode(value)) == value
    if "observations" in case:
        decoded = gatt.to_observations(value, device="dev-under-test", received_at=RECEIVED_AT)
        observations = [o.to_wire() for o in decoded]
        assert _matches(case["observations"], observations), observations


@pytest.mark.parametrize(("char", "case"), _cases("invalid"))
def test_invalid_vector(char: str, case: dict[str, Any]) -> None:
    with pytest.raises(ParseError) as info:
        gatt.decode(char, bytes.fromhex(case["hex"]))
    message = str(info.value)
    assert case["error"] in message
    # Errors name fields and offsets, never the bytes themselves.
    if len(case["hex"]) >= 8:
        assert case["hex"].lower() not in message.lower()
    if "response_code" in case:
        assert isinstance(info.value, RacpError)
        assert info.value.response_code.name.lower() == case["response_code"]
        assert info.value.request_op_code == case["request_op_code"]
