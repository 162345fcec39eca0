"""Fuzz: for any bytes, every parser returns a value or raises ParseError, nothing else.

Hypothesis prints the failing example and a ``@reproduce_failure`` blob; pin a whole run with
``pytest --hypothesis-seed=<seed>``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phd_protocol import gatt
from phd_protocol.errors import ParseError

from .strategies import BY_UUID

UUIDS = sorted(gatt.CODECS)


def _decode_or_parse_error(uuid: int, data: bytes) -> None:
    message = None
    try:
        value = gatt.decode(uuid, data)
    except ParseError as exc:
        message = str(exc)
    if message is not None:
        assert message  # every refusal says why
        return
    # Whatever decodes must encode again and decode to the same value.
    assert gatt.decode(uuid, gatt.encode(value)) == value


@pytest.mark.parametrize("uuid", UUIDS, ids=lambda u: f"{u:04X}")
def test_random_bytes(uuid: int) -> None:
    @settings(max_examples=300, deadline=None, print_blob=True)
    @given(data=st.binary(max_size=48))
    def check(data: bytes) -> None:
        _decode_or_parse_error(uuid, data)

    check()


@st.composite
def _mutated(draw: st.DrawFn, uuid: int) -> bytes:
    data = bytearray(gatt.encode(draw(BY_UUID[uuid])))
    action = draw(st.sampled_from(["truncate", "extend", "flip", "flags"]))
    if action == "truncate" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif action == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    elif action == "flip" and data:
        index = draw(st.integers(0, len(data) - 1))
        data[index] ^= draw(st.integers(1, 255))
    elif data:
        data[0] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.parametrize("uuid", UUIDS, ids=lambda u: f"{u:04X}")
def test_mutated_valid_values(uuid: int) -> None:
    @settings(
        max_examples=300,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=_mutated(uuid))
    def check(data: bytes) -> None:
        _decode_or_parse_error(uuid, data)

    check()


@pytest.mark.parametrize(
    "uuid", ["2A99", "0x10000", "not-a-uuid", "", 70000, -1, True, 2.5, None, b"\x2a\x35"]
)
def test_bad_uuid_is_a_parse_error(uuid: Any) -> None:
    with pytest.raises(ParseError):
        gatt.decode(uuid, b"\x00")


def test_oversized_value_is_refused_before_parsing() -> None:
    with pytest.raises(ParseError, match="longer than 512 bytes"):
        gatt.decode(0x2A29, b"A" * 513)


def test_non_bytes_value_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="must be bytes"):
        gatt.decode(0x2A35, "1E00")  # type: ignore[arg-type]  # the point of the test


def test_uuid_spellings() -> None:
    assert gatt.parse_uuid("2A35") == 0x2A35
    assert gatt.parse_uuid("0x2a35") == 0x2A35
    assert gatt.parse_uuid("00002a35-0000-1000-8000-00805f9b34fb") == 0x2A35
    assert gatt.parse_uuid(0x2A35) == 0x2A35


@settings(max_examples=500, deadline=None, print_blob=True)
@given(data=st.one_of(st.binary(max_size=24), _mutated(0x2A35)))
def test_blood_pressure_fast_path_agrees_with_the_checked_reader(data: bytes) -> None:
    # The hot path unpacks a precompiled layout; the checked reader is the reference.
    from phd_protocol.gatt.blood_pressure import _decode, _decode_checked

    outcomes: list[object] = []
    for decoder in (_decode, _decode_checked):
        try:
            outcomes.append(decoder("BPM", data))
        except ParseError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
