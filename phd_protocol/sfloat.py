"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) numbers <-> exact ``Decimal``.

Both types are ``mantissa * 10**exponent`` with a signed two's-complement mantissa and exponent
(IEEE 11073-20601-2019 section F.8 "FLOAT-Type" / "SFLOAT-Type"; Bluetooth GSS section 2.2.1
"medfloat16"/"medfloat32")::

    SFLOAT: bits 15..12 exponent (-8..7),    bits 11..0 mantissa (-2048..2047)
    FLOAT:  bits 31..24 exponent (-128..127), bits 23..0 mantissa (-2**23..2**23-1)

The top five mantissa values are not numbers (exponent 0 in the canonical encoding):

    =========  ==========  ============  ==========
    value      SFLOAT      FLOAT         mantissa
    =========  ==========  ============  ==========
    NaN        0x07FF      0x007FFFFF    +(2**(n-1) - 1)
    NRes       0x0800      0x00800000    -(2**(n-1))
    +INF       0x07FE      0x007FFFFE    +(2**(n-1) - 2)
    -INF       0x0802      0x00800002    -(2**(n-1) - 2)
    reserved   0x0801      0x00800001    -(2**(n-1) - 1)
    =========  ==========  ============  ==========

Decoding classifies by mantissa alone, whatever the exponent bits say (a device that sets an
exponent on NaN still means NaN), so a number's mantissa is always within +-(2**(n-1) - 3).

Numbers decode to :class:`decimal.Decimal` built from integers (never through ``float``), so
``0xF4B5`` (exponent -1, mantissa 1205) is exactly ``Decimal("120.5")``. Special values decode
to :class:`SpecialValue` and are never turned into numbers. Encoders take a
``Decimal`` or a ``SpecialValue``, choose the exponent exactly (the value's own exponent when it
fits, else the nearest exact one) and raise ``ValueError`` when the value cannot be represented
exactly. This module never rounds.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from functools import lru_cache

__all__ = [
    "FLOAT_MANTISSA_MAX",
    "SFLOAT_MANTISSA_MAX",
    "MedicalNumber",
    "SpecialValue",
    "decode_float",
    "decode_sfloat",
    "encode_float",
    "encode_sfloat",
    "is_special",
]


class SpecialValue(enum.Enum):
    """The non-numeric SFLOAT/FLOAT values; ``.value`` is the wire spelling."""

    NAN = "NaN"
    NRES = "NRes"
    POS_INF = "+INF"
    NEG_INF = "-INF"
    RESERVED = "reserved"


MedicalNumber = Decimal | SpecialValue
"""What an SFLOAT or FLOAT decodes to."""

SFLOAT_MANTISSA_MAX = 2045  # 2**11 - 3: 2046 and 2047 are +INF and NaN
FLOAT_MANTISSA_MAX = 8388605  # 2**23 - 3

_SFLOAT_SPECIAL_BY_MANTISSA = {
    0x07FF: SpecialValue.NAN,
    0x0800: SpecialValue.NRES,
    0x07FE: SpecialValue.POS_INF,
    0x0802: SpecialValue.NEG_INF,
    0x0801: SpecialValue.RESERVED,
}
_FLOAT_SPECIAL_BY_MANTISSA = {
    0x007FFFFF: SpecialValue.NAN,
    0x00800000: SpecialValue.NRES,
    0x007FFFFE: SpecialValue.POS_INF,
    0x00800002: SpecialValue.NEG_INF,
    0x00800001: SpecialValue.RESERVED,
}
_SFLOAT_BY_SPECIAL = {v: k for k, v in _SFLOAT_SPECIAL_BY_MANTISSA.items()}
_FLOAT_BY_SPECIAL = {v: k for k, v in _FLOAT_SPECIAL_BY_MANTISSA.items()}


def is_special(value: object) -> bool:
    return isinstance(value, SpecialValue)


def _number(mantissa: int, exponent: int) -> Decimal:
    # Built from the integer digits: exact, and it keeps the device's exponent (120.5 stays
    # 120.5, 36.50 stays 36.50) so encode(decode(x)) reproduces the same exponent.
    sign = 1 if mantissa < 0 else 0
    digits = tuple(int(c) for c in str(abs(mantissa)))
    return Decimal((sign, digits, exponent))


@lru_cache(maxsize=65536)
def decode_sfloat(raw: int) -> MedicalNumber:
    """Decode a 16-bit SFLOAT given as an unsigned integer (0..0xFFFF)."""
    if not 0 <= raw <= 0xFFFF:
        raise ValueError("SFLOAT raw value must be a 16-bit unsigned integer")
    mantissa = raw & 0x0FFF
    special = _SFLOAT_SPECIAL_BY_MANTISSA.get(mantissa)
    if special is not None:
        return special
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    exponent = raw >> 12
    if exponent >= 0x8:
        exponent -= 0x10
    return _number(mantissa, exponent)


@lru_cache(maxsize=4096)
def decode_float(raw: int) -> MedicalNumber:
    """Decode a 32-bit FLOAT given as an unsigned integer (0..0xFFFFFFFF)."""
    if not 0 <= raw <= 0xFFFFFFFF:
        raise ValueError("FLOAT raw value must be a 32-bit unsigned integer")
    mantissa = raw & 0x00FFFFFF
    special = _FLOAT_SPECIAL_BY_MANTISSA.get(mantissa)
    if special is not None:
        return special
    if mantissa >= 0x00800000:
        mantissa -= 0x01000000
    exponent = raw >> 24
    if exponent >= 0x80:
        exponent -= 0x100
    return _number(mantissa, exponent)


def _fit(
    value: Decimal, *, name: str, mantissa_max: int, exp_min: int, exp_max: int
) -> tuple[int, int]:
    """Find (mantissa, exponent) with mantissa * 10**exponent == value exactly, or refuse."""
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} takes a Decimal or a SpecialValue, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{name} cannot hold a non-finite Decimal; use SpecialValue instead")
    sign, digits, own_exp = value.as_tuple()
    if not isinstance(own_exp, int):  # pragma: no cover - finite Decimals have int exponents
        raise ValueError(f"{name} needs a finite Decimal")
    coefficient = int("".join(map(str, digits))) if digits else 0
    if coefficient == 0:
        return 0, min(max(own_exp, exp_min), exp_max)
    # Smallest exact form: strip trailing zeros into the exponent.
    m0, e0 = coefficient, own_exp
    while m0 % 10 == 0:
        m0 //= 10
        e0 += 1
    if m0 > mantissa_max:
        raise ValueError(f"{name} cannot represent this value exactly: too many significant digits")
    # Each step down in exponent multiplies the mantissa by ten; find how far we may go.
    headroom = 0
    while m0 * 10 ** (headroom + 1) <= mantissa_max:
        headroom += 1
    e_hi = min(e0, exp_max)
    e_lo = max(e0 - headroom, exp_min)
    if e_lo > e_hi:
        raise ValueError(f"{name} cannot represent this value exactly: magnitude out of range")
    exponent = min(max(own_exp, e_lo), e_hi)
    mantissa = m0 * 10 ** (e0 - exponent)
    return (-mantissa if sign else mantissa), exponent


def encode_sfloat(value: MedicalNumber) -> int:
    """Encode to a 16-bit SFLOAT (unsigned integer); ValueError if not exactly representable."""
    if isinstance(value, SpecialValue):
        return _SFLOAT_BY_SPECIAL[value]
    mantissa, exponent = _fit(
        value, name="SFLOAT", mantissa_max=SFLOAT_MANTISSA_MAX, exp_min=-8, exp_max=7
    )
    return ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)


def encode_float(value: MedicalNumber) -> int:
    """Encode to a 32-bit FLOAT (unsigned integer); ValueError if not exactly representable."""
    if isinstance(value, SpecialValue):
        return _FLOAT_BY_SPECIAL[value]
    mantissa, exponent = _fit(
        value, name="FLOAT", mantissa_max=FLOAT_MANTISSA_MAX, exp_min=-128, exp_max=127
    )
    return ((exponent & 0xFF) << 24) | (mantissa & 0x00FFFFFF)
