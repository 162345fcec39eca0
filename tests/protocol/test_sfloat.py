"""IEEE 11073-20601 SFLOAT/FLOAT: exact decoding, special values, exact-or-refuse encoding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phd_protocol.sfloat import (
    FLOAT_MANTISSA_MAX,
    SFLOAT_MANTISSA_MAX,
    SpecialValue,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
)

# (raw, expected): hand-computed from the bit layout (IEEE 11073-20601 F.8).
SFLOAT_VECTORS = [
    (0x07FF, SpecialValue.NAN),
    (0x0800, SpecialValue.NRES),
    (0x07FE, SpecialValue.POS_INF),
    (0x0802, SpecialValue.NEG_INF),
    (0x0801, SpecialValue.RESERVED),
    (0x0078, Decimal("120")),
    (0xF4B5, Decimal("120.5")),  # exponent -1, mantissa 1205
    (0xFFF8, Decimal("-0.8")),  # exponent -1, mantissa -8
    (0x1001, Decimal("1E+1")),  # exponent 1, mantissa 1
    (0x77FD, Decimal("2.045E+10")),  # largest: 2045 * 10**7
    (0x8803, Decimal("-2.045E-5")),  # exponent -8, mantissa -2045
    (0x0000, Decimal("0")),
    (0xD02D, Decimal("0.045")),
    # A special mantissa with a non-zero exponent is still the special value.
    (0x37FF, SpecialValue.NAN),
]

FLOAT_VECTORS = [
    (0x007FFFFF, SpecialValue.NAN),
    (0x00800000, SpecialValue.NRES),
    (0x007FFFFE, SpecialValue.POS_INF),
    (0x00800002, SpecialValue.NEG_INF),
    (0x00800001, SpecialValue.RESERVED),
    (0xFF00016D, Decimal("36.5")),
    (0xFEFFFE6B, Decimal("-4.05")),  # exponent -2, mantissa -405
    (0x007FFFFD, Decimal("8388605")),
    (0x80000001, Decimal("1E-128")),
    (0x7F000001, Decimal("1E+127")),
]


@pytest.mark.parametrize(("raw", "expected"), SFLOAT_VECTORS)
def test_sfloat_vectors(raw: int, expected: object) -> None:
    value = decode_sfloat(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("raw", "expected"), FLOAT_VECTORS)
def test_float_vectors(raw: int, expected: object) -> None:
    value = decode_float(raw)
    assert value == expected
    assert type(value) is type(expected)


def test_decoded_numbers_are_exact_decimals_never_floats() -> None:
    value = decode_sfloat(0xF4B5)
    assert isinstance(value, Decimal)
    assert str(value) == "120.5"
    assert value.as_tuple().exponent == -1


def test_every_sfloat_round_trips() -> None:
    # All 65536 encodings: a number re-encodes to the very same 16 bits (the decoder keeps
    # the device's exponent), a special value to its canonical form.
    for raw in range(0x10000):
        value = decode_sfloat(raw)
        again = encode_sfloat(value)
        if isinstance(value, SpecialValue):
            assert again & 0xF000 == 0
            assert decode_sfloat(again) is value
        else:
            assert again == raw, hex(raw)


@pytest.mark.parametrize("special", list(SpecialValue))
def test_specials_encode_canonically(special: SpecialValue) -> None:
    assert decode_sfloat(encode_sfloat(special)) is special
    assert decode_float(encode_float(special)) is special
    assert encode_sfloat(special) >> 12 == 0
    assert encode_float(special) >> 24 == 0


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (Decimal("120.5"), 0xF4B5),
        (Decimal("120"), 0x0078),  # own exponent 0 fits: kept
        (Decimal("1.2E+2"), 0x100C),  # own exponent 1 fits: kept
        (Decimal("120.50"), 0xF4B5),  # 12050 is too big: trailing zero dropped
        (Decimal("20450000000"), 0x77FD),  # exponent raised to fit
        (Decimal("-0"), 0x0000),
        (Decimal("0E-20"), 0x8000),  # zero keeps the nearest exponent in range
    ],
)
def test_encoder_chooses_the_exponent_exactly(value: Decimal, raw: int) -> None:
    assert encode_sfloat(value) == raw
    assert decode_sfloat(raw) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (Decimal("2046"), "too many significant digits"),
        (Decimal("0.12345"), "too many significant digits"),
        (Decimal("1E+20"), "magnitude out of range"),
        (Decimal("1E-9"), "magnitude out of range"),
        (Decimal("NaN"), "non-finite"),
        (Decimal("Infinity"), "non-finite"),
    ],
)
def test_sfloat_refuses_what_it_cannot_hold(value: Decimal, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encode_sfloat(value)


def test_encoders_refuse_binary_floats_and_ints() -> None:
    with pytest.raises(TypeError, match="Decimal or a SpecialValue"):
        encode_sfloat(120.5)  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError, match="Decimal or a SpecialValue"):
        encode_float(120)  # type: ignore[arg-type]  # the point of the test


def test_float_refuses_too_many_digits() -> None:
    with pytest.raises(ValueError, match="too many significant digits"):
        encode_float(Decimal(FLOAT_MANTISSA_MAX + 1))


@pytest.mark.parametrize("raw", [-1, 0x10000])
def test_sfloat_raw_range(raw: int) -> None:
    with pytest.raises(ValueError, match="16-bit"):
        decode_sfloat(raw)


@given(
    mantissa=st.integers(-SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX),
    exponent=st.integers(-8, 7),
)
def test_sfloat_number_round_trip(mantissa: int, exponent: int) -> None:
    value = Decimal(mantissa).scaleb(exponent)
    assert decode_sfloat(encode_sfloat(value)) == value


@given(
    mantissa=st.integers(-FLOAT_MANTISSA_MAX, FLOAT_MANTISSA_MAX),
    exponent=st.integers(-128, 127),
)
def test_float_number_round_trip(mantissa: int, exponent: int) -> None:
    value = Decimal((1 if mantissa < 0 else 0, tuple(map(int, str(abs(mantissa)))), exponent))
    decoded = decode_float(encode_float(value))
    assert decoded == value
    assert decoded.as_tuple() == value.as_tuple()  # type: ignore[union-attr]  # a number here


@given(value=st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_encode_is_exact_or_refuses(value: Decimal) -> None:
    # Whatever the input, the encoder either represents it exactly or raises ValueError:
    # it never rounds.
    try:
        raw = encode_sfloat(value)
    except ValueError:
        return
    assert decode_sfloat(raw) == value
