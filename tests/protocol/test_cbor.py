"""phd_protocol.cbor: RFC 8949 vectors, every deterministic-encoding rule refused, fuzzing."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phd_protocol import cbor
from phd_protocol.cbor import CborError, Tag
from phd_protocol.errors import ParseError

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "cbor" / "rfc8949.json").read_text("utf-8")
)


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if "hex" in value:
            return bytes.fromhex(value["hex"])
        if "decimal" in value:
            return Decimal(value["decimal"])
        return {k: _from_json(v) for k, v in value["map"]}
    return value


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["cbor"][:24])
def test_rfc8949_vectors_encode_and_decode(case: dict[str, Any]) -> None:
    value = _from_json(case["value"])
    assert cbor.encode(value).hex() == case["cbor"]
    decoded = cbor.decode(_hex(case["cbor"]))
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["why"])
def test_non_deterministic_input_is_refused_with_its_rule(case: dict[str, Any]) -> None:
    with pytest.raises(CborError) as info:
        cbor.decode(_hex(case["cbor"]))
    assert info.value.rule == case["rule"]
    assert isinstance(info.value, ParseError)


def test_map_keys_are_sorted_by_their_encoding() -> None:
    # 10 -> 0a, -1 -> 20, "b" -> 6162, "aa" -> 626161: bytewise order of the encodings.
    encoded = cbor.encode({"aa": 1, "b": 2, -1: 3, 10: 4})
    assert encoded.hex() == "a4" + "0a04" + "2003" + "616202" + "62616101"
    decoded = cbor.decode(encoded)
    assert isinstance(decoded, dict)
    assert list(decoded) == [10, -1, "b", "aa"]


def test_decimal_keeps_exact_value_and_precision() -> None:
    for text in ["1.50", "-0.001", "120.0", "98.6", "0", "1E+3", "-1234567890123456789.5"]:
        value = Decimal(text)
        decoded = cbor.decode(cbor.encode(value))
        assert isinstance(decoded, Decimal)
        assert decoded.as_tuple() == value.as_tuple()
    assert cbor.encode(Decimal("1.50")).hex() == "c482211896"


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("1E+2000")])
def test_decimal_without_a_fraction_form_is_refused_on_encode(bad: Decimal) -> None:
    with pytest.raises(ValueError, match="Decimal"):
        cbor.encode(bad)


@pytest.mark.parametrize("bad", [1.5, object(), {b"k": 1}, {True: 1}, 2**64, -(2**64) - 1])
def test_unsupported_values_are_refused_on_encode(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        cbor.encode(bad)


def test_tags_only_when_allowed() -> None:
    encoded = cbor.encode(Tag(18, [b"", {}, None, b""]))
    assert encoded.hex() == "d28440a0f640"
    assert cbor.decode(encoded, tags=frozenset({18})) == Tag(18, [b"", {}, None, b""])
    with pytest.raises(CborError, match="unknown_tag"):
        cbor.decode(encoded)
    with pytest.raises(ValueError, match="Decimal"):
        Tag(4, [0, 1])


def test_bounds_on_items_depth_and_size() -> None:
    many = cbor.encode(list(range(100)))
    # max_items counts the elements of every container (map entries count twice).
    assert cbor.decode(many, max_items=100) == list(range(100))
    with pytest.raises(CborError, match="too_many_items"):
        cbor.decode(many, max_items=99)
    with pytest.raises(CborError, match="too_many_items"):
        cbor.decode(cbor.encode({"a": [1, 2]}), max_items=3)
    deep = cbor.encode([[[[1]]]])
    with pytest.raises(CborError, match="too_deep"):
        cbor.decode(deep, max_depth=3)
    assert cbor.decode(deep, max_depth=4) == [[[[1]]]]
    with pytest.raises(CborError, match="too_large"):
        cbor.decode(cbor.encode(b"x" * 100), max_size=50)


def test_error_message_never_echoes_content() -> None:
    with pytest.raises(CborError) as info:
        cbor.decode(cbor.encode("SECRET-PATIENT-NAME") + b"\x00")
    assert "SECRET" not in str(info.value)
    assert info.value.offset == 20


# --------------------------------------------------------------------------- properties

_keys = st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=8))
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=40),
    # Decimals as cbor carries them: 64-bit mantissa, bounded exponent.
    st.builds(
        lambda m, e: Decimal(f"{m}E{e}"),
        st.integers(-(2**63), 2**63),
        st.integers(-cbor.MAX_DECIMAL_EXPONENT, cbor.MAX_DECIMAL_EXPONENT),
    ),
)
_values = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(_keys, children, max_size=6)
    ),
    max_leaves=30,
)


@given(_values)
@settings(max_examples=300)
def test_round_trip_is_identity(value: Any) -> None:
    encoded = cbor.encode(value)
    decoded = cbor.decode(encoded)
    assert decoded == value
    assert cbor.encode(decoded) == encoded


@given(st.binary(max_size=200))
@settings(max_examples=1500)
def test_fuzz_any_bytes_give_a_value_or_cbor_error(data: bytes) -> None:
    # The invariant of every parser (STYLE.md 4), plus canonicity: whatever decodes is the one
    # deterministic encoding of its value, so re-encoding reproduces the input exactly.
    try:
        value = cbor.decode(data, tags=frozenset({4, 18}))
    except CborError:
        return
    assert cbor.encode(value) == data


@given(_values, st.data())
@settings(max_examples=300)
def test_fuzz_mutations_of_valid_encodings(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(cbor.encode(value))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    try:
        decoded = cbor.decode(bytes(encoded))
    except CborError:
        return
    assert cbor.encode(decoded) == bytes(encoded)


# --------------------------------------------------------------------------- fast paths


def _reference_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | ai]) + n.to_bytes(size, "big")
    raise AssertionError("argument beyond 64 bits")


def _reference_encode(value: Any) -> bytes:
    """RFC 8949 section 4.2.1 written for clarity, not speed: the oracle of the fast encoder."""
    if value is None:
        return b"\xf6"
    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return _reference_head(0, value) if value >= 0 else _reference_head(1, -1 - value)
    if isinstance(value, bytes):
        return _reference_head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _reference_head(3, len(raw)) + raw
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        mantissa = int("".join(map(str, digits))) * (-1 if sign else 1)
        assert isinstance(exponent, int)
        return b"\xc4\x82" + _reference_encode(exponent) + _reference_encode(mantissa)
    if isinstance(value, list):
        return _reference_head(4, len(value)) + b"".join(_reference_encode(v) for v in value)
    if isinstance(value, dict):
        pairs = sorted((_reference_encode(k), _reference_encode(v)) for k, v in value.items())
        return _reference_head(5, len(value)) + b"".join(k + v for k, v in pairs)
    raise AssertionError(f"no reference encoding for {type(value).__name__}")


@given(_values)
@settings(max_examples=300)
def test_fast_encoder_matches_the_reference_encoder(value: Any) -> None:
    assert cbor.encode(value) == _reference_encode(value)


def test_memo_tables_never_merge_values_that_encode_differently() -> None:
    # Equal Decimals with different exponents, ints equal to bools, long and short text: each
    # has its own encoding however often it recurs (the encoder memoises all of these).
    values: list[Any] = [
        Decimal("80"),
        Decimal("80.0"),
        Decimal("8E+1"),
        Decimal("-0"),
        Decimal("0"),
        1,
        True,
        0,
        False,
        150020,
        "mm[Hg]",
        "2026-01-15T09:21:00Z",
        "0" * 32,
    ]
    for _ in range(3):
        assert cbor.encode(values) == _reference_encode(values)
        assert cbor.encode({"v": values}) == _reference_encode({"v": values})
    assert cbor.decode(cbor.encode(values)) == values


def test_subclasses_encode_as_their_base_value() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    class Exact(Decimal):
        pass

    value: dict[str, Any] = {"a": [Text("x"), Number(300), Exact("1.50"), bytearray(b"\x01")]}
    expected = {"a": ["x", 300, Decimal("1.50"), b"\x01"]}
    assert cbor.encode(value) == _reference_encode(expected)


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
def test_bytes_head_frames_a_byte_string_like_encode(size: int) -> None:
    data = b"\xab" * size
    assert cbor.encode_bytes_head(size) + data == cbor.encode(data)


@given(st.binary(max_size=40), st.integers(0, 3))
@settings(max_examples=1500)
def test_fast_path_helpers_never_disagree_with_decode(data: bytes, pos: int) -> None:
    # byte_string_at and head_at may answer None where decode would accept; never a value
    # that decode would read differently or refuse.
    bounds = cbor.byte_string_at(data, pos)
    if bounds is not None:
        assert cbor.decode(data[pos : bounds[1]]) == data[bounds[0] : bounds[1]]
    head = cbor.head_at(data, pos)
    if head is not None and head[0] in {0, 1}:
        major, argument, end = head
        assert cbor.decode(data[pos:end]) == (argument if major == 0 else -1 - argument)


@given(_values, st.binary(max_size=4))
@settings(max_examples=200)
def test_decode_item_stops_at_the_end_of_the_item(value: Any, rest: bytes) -> None:
    encoded = cbor.encode(value)
    assert cbor.decode_item(b"\x00" + encoded + rest, 1) == (value, 1 + len(encoded))
    with pytest.raises(CborError, match="truncated"):
        cbor.decode_item(encoded[:-1], 0)
