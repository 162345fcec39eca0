"""Strict deterministic CBOR (RFC 8949) for envelopes, COSE structures and gateway messages.

What it is for: turning our protocol values into exactly one byte string each, and refusing
any byte string that is not that one encoding. A signature over CBOR is only meaningful if
every party serialises the same value the same way, and a parser that tolerates alternatives
(long heads, indefinite lengths, duplicate or unsorted keys) hands an attacker ambiguity.

Encoding follows the core deterministic encoding requirements of RFC 8949 section 4.2.1:

- integers, lengths and tag numbers use the shortest head (section 4.2.1, "preferred");
- only definite lengths;
- map keys are sorted by the bytewise lexicographic order of their deterministic encodings.

Supported Python values (``CborValue``): ``int`` (-2**64 .. 2**64-1, major types 0/1),
``bytes``, ``str``, ``bool``, ``None``, ``list``/``tuple`` (decoded as ``list``), ``dict``
with ``int`` or ``str`` keys, :class:`Tag` (any tag number the caller allows, e.g. 18 for
COSE_Sign1, RFC 9052 section 4.2) and :class:`decimal.Decimal`, carried as a tag 4 decimal
fraction ``[exponent, mantissa]`` (RFC 8949 section 3.4.4) so observations keep their exact
value and precision (``Decimal("1.50")`` stays ``[-2, 150]``).

The decoder refuses, with a :class:`CborError` naming the offset and the rule broken:
non-shortest heads, indefinite lengths, reserved additional information, unsorted or duplicate
map keys, keys other than int/str, invalid UTF-8, floats, simple values other than
false/true/null, tags not explicitly allowed, malformed tag 4 content, trailing bytes, and
inputs beyond the depth, item-count or size bounds. It never returns a partial value.

This module must never accept a second encoding of a value, never log, and never raise
anything but :class:`CborError` for bad input (``TypeError``/``ValueError`` on the encoding
side mean a programming error in the caller, not hostile input).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from phd_protocol.errors import ParseError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_SIZE",
    "MAX_DECIMAL_EXPONENT",
    "TAG_COSE_SIGN1",
    "TAG_DECIMAL_FRACTION",
    "CborError",
    "CborKey",
    "CborValue",
    "Encodable",
    "Tag",
    "decode",
    "encode",
]

TAG_DECIMAL_FRACTION = 4  # RFC 8949 section 3.4.4
TAG_COSE_SIGN1 = 18  # RFC 9052 section 4.2

# Bounds for hostile input. Envelopes are at most 64 KiB and gateway batches 1 MiB, so these
# defaults are generous for every legitimate message and small enough that a crafted one
# cannot make the decoder allocate or recurse without limit.
DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_ITEMS = 100_000
DEFAULT_MAX_SIZE = 4 * 1024 * 1024

# The exponent and mantissa of a decimal fraction must each fit a CBOR major type 0/1 head;
# bignum mantissas (tags 2/3) are refused: no PHD value needs more than 19 digits.
_UINT64_MAX = 2**64 - 1
# IEEE 11073 FLOAT exponents are 8-bit; a decimal exponent beyond this bound is hostile (it
# would make Decimal arithmetic or int conversion elsewhere arbitrarily expensive).
MAX_DECIMAL_EXPONENT = 1000
_NINT64_MIN = -(2**64)

CborKey: TypeAlias = int | str
# What decode() returns. String aliases: the unions refer to themselves and to Tag (below).
CborValue: TypeAlias = (
    "int | bytes | str | bool | Decimal | list[CborValue] | dict[CborKey, CborValue] | Tag | None"
)
# What encode() accepts: read-only, covariant containers so callers' dict[str, X] type-check.
Encodable: TypeAlias = (
    "int | bytes | str | bool | Decimal | Sequence[Encodable] | Mapping[str, Encodable]"
    " | Mapping[int, Encodable] | Mapping[CborKey, Encodable] | Tag | None"
)


class CborError(ParseError):
    """Input is not the one deterministic CBOR encoding we accept.

    ``offset`` is the byte position where the rule was broken; ``rule`` a short stable code
    (for example ``"non_shortest_head"``); the message holds both, never the data.
    """

    def __init__(self, rule: str, offset: int, detail: str = "") -> None:
        self.rule = rule
        self.offset = offset
        text = f"CBOR {rule} at offset {offset}"
        super().__init__(f"{text}: {detail}" if detail else text)


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged data item (RFC 8949 section 3.4) other than tag 4, which maps to Decimal."""

    number: int
    value: Encodable

    def __post_init__(self) -> None:
        if not 0 <= self.number <= _UINT64_MAX:
            raise ValueError("CBOR tag numbers are unsigned 64-bit integers")
        if self.number == TAG_DECIMAL_FRACTION:
            raise ValueError("use decimal.Decimal for tag 4 decimal fractions")


# --------------------------------------------------------------------------- encoding

_PACK_B = struct.Struct(">B").pack
_PACK_BB = struct.Struct(">BB").pack
_PACK_BH = struct.Struct(">BH").pack
_PACK_BI = struct.Struct(">BI").pack
_PACK_BQ = struct.Struct(">BQ").pack


def _head(major: int, n: int) -> bytes:
    """Shortest head for major type ``major`` and argument ``n`` (RFC 8949 section 4.2.1)."""
    mt = major << 5
    if n < 24:
        return _PACK_B(mt | n)
    if n <= 0xFF:
        return _PACK_BB(mt | 24, n)
    if n <= 0xFFFF:
        return _PACK_BH(mt | 25, n)
    if n <= 0xFFFFFFFF:
        return _PACK_BI(mt | 26, n)
    return _PACK_BQ(mt | 27, n)


def _encode_int(value: int) -> bytes:
    if value >= 0:
        if value > _UINT64_MAX:
            raise ValueError("integer too large for CBOR major type 0 (bignums not supported)")
        return _head(0, value)
    if value < _NINT64_MIN:
        raise ValueError("integer too small for CBOR major type 1 (bignums not supported)")
    return _head(1, -1 - value)


def _encode_decimal(value: Decimal) -> bytes:
    if not value.is_finite():
        raise ValueError("NaN and infinite Decimals have no CBOR decimal fraction form")
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # unreachable for finite values; narrows the type
        raise ValueError("Decimal without an integer exponent")
    if abs(exponent) > MAX_DECIMAL_EXPONENT:
        raise ValueError("Decimal exponent out of range")
    mantissa = int("".join(map(str, digits))) if digits else 0
    if sign:
        mantissa = -mantissa
    return b"\xc4\x82" + _encode_int(exponent) + _encode_int(mantissa)


def _encode_into(out: list[bytes], value: object) -> None:
    # Order matters: bool is a subclass of int, so it is tested first.
    if value is None:
        out.append(b"\xf6")
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif isinstance(value, int):
        out.append(_encode_int(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(_head(3, len(raw)))
        out.append(raw)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(_head(2, len(raw)))
        out.append(raw)
    elif isinstance(value, list | tuple):  # not any Sequence: str and bytes are sequences too
        out.append(_head(4, len(value)))
        for item in value:
            _encode_into(out, item)
    elif isinstance(value, dict):
        pairs: list[tuple[bytes, object]] = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, int | str):
                raise TypeError("CBOR map keys must be int or str")
            pairs.append((_encode_key(key), item))
        pairs.sort(key=_first)
        out.append(_head(5, len(pairs)))
        previous = b""
        for encoded_key, item in pairs:
            if encoded_key == previous:  # e.g. two distinct Python keys cannot collide, kept
                raise ValueError("duplicate CBOR map key")  # as a guard for subclasses
            previous = encoded_key
            out.append(encoded_key)
            _encode_into(out, item)
    elif isinstance(value, Decimal):
        out.append(_encode_decimal(value))
    elif isinstance(value, Tag):
        out.append(_head(6, value.number))
        _encode_into(out, value.value)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


def _encode_key(key: CborKey) -> bytes:
    if isinstance(key, int):
        return _encode_int(key)
    raw = key.encode("utf-8")
    return _head(3, len(raw)) + raw


def _first(pair: tuple[bytes, object]) -> bytes:
    return pair[0]


def encode(value: Encodable) -> bytes:
    """The deterministic encoding of ``value``; TypeError/ValueError for unsupported values."""
    out: list[bytes] = []
    _encode_into(out, value)
    return b"".join(out)


# --------------------------------------------------------------------------- decoding

_UNPACK_H = struct.Struct(">H").unpack_from
_UNPACK_I = struct.Struct(">I").unpack_from
_UNPACK_Q = struct.Struct(">Q").unpack_from
# Smallest argument that may legitimately use each long head form (shortest-head rule).
_MIN_FOR_AI = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}


class _Decoder:
    """One-shot recursive-descent decoder; every read is bounds-checked before it happens."""

    __slots__ = ("data", "depth_left", "end", "items_left", "pos", "tags")

    def __init__(self, data: bytes, max_depth: int, max_items: int, tags: frozenset[int]):
        self.data = data
        self.end = len(data)
        self.pos = 0
        self.depth_left = max_depth
        self.items_left = max_items
        self.tags = tags

    def fail(self, rule: str, detail: str = "", offset: int | None = None) -> CborError:
        return CborError(rule, self.pos if offset is None else offset, detail)

    def head(self) -> tuple[int, int, int]:
        """Read one head; returns (major type, argument, offset of the head)."""
        data = self.data
        start = pos = self.pos
        if pos >= self.end:
            raise self.fail("truncated", "expected a data item")
        initial = data[pos]
        major = initial >> 5
        ai = initial & 0x1F
        pos += 1
        if ai < 24:
            self.pos = pos
            return major, ai, start
        if ai == 24:
            if pos + 1 > self.end:
                raise self.fail("truncated", "head argument", start)
            n = data[pos]
            pos += 1
        elif ai == 25:
            if pos + 2 > self.end:
                raise self.fail("truncated", "head argument", start)
            (n,) = _UNPACK_H(data, pos)
            pos += 2
        elif ai == 26:
            if pos + 4 > self.end:
                raise self.fail("truncated", "head argument", start)
            (n,) = _UNPACK_I(data, pos)
            pos += 4
        elif ai == 27:
            if pos + 8 > self.end:
                raise self.fail("truncated", "head argument", start)
            (n,) = _UNPACK_Q(data, pos)
            pos += 8
        elif ai == 31:
            raise self.fail("indefinite_length", "only definite lengths are allowed", start)
        else:
            raise self.fail("reserved_additional_info", f"additional info {ai}", start)
        if major == 7:
            # Floats (ai 25..27) and the one-byte simple value form (ai 24) are refused.
            raise self.fail("float_or_simple", "floats and extended simple values", start)
        if n < _MIN_FOR_AI[ai]:
            raise self.fail("non_shortest_head", "argument fits a shorter head", start)
        self.pos = pos
        return major, n, start

    def take(self, length: int, start: int) -> bytes:
        pos = self.pos
        if length > self.end - pos:
            raise self.fail("truncated", "string longer than the remaining input", start)
        self.pos = pos + length
        return self.data[pos : pos + length]

    def item(self) -> CborValue:
        self.items_left -= 1
        if self.items_left < 0:
            raise self.fail("too_many_items", "item count bound exceeded")
        major, n, start = self.head()
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return self.take(n, start)
        if major == 3:
            raw = self.take(n, start)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("invalid_utf8", "text string", start) from None
        if major == 7:
            if n == 20:
                return False
            if n == 21:
                return True
            if n == 22:
                return None
            raise self.fail("float_or_simple", f"simple value {n}", start)
        # Containers and tags: bound the nesting.
        self.depth_left -= 1
        if self.depth_left < 0:
            raise self.fail("too_deep", "nesting depth bound exceeded", start)
        try:
            if major == 4:
                # Each element takes at least one byte: a claimed count beyond the remaining
                # input is refused before any allocation.
                if n > self.end - self.pos:
                    raise self.fail("truncated", "array longer than the remaining input", start)
                return [self.item() for _ in range(n)]
            if major == 5:
                return self.map(n, start)
            return self.tag(n, start)
        finally:
            self.depth_left += 1

    def map(self, n: int, start: int) -> dict[CborKey, CborValue]:
        if 2 * n > self.end - self.pos:
            raise self.fail("truncated", "map longer than the remaining input", start)
        result: dict[CborKey, CborValue] = {}
        data = self.data
        previous = b""
        for _ in range(n):
            key_start = self.pos
            self.items_left -= 1
            if self.items_left < 0:
                raise self.fail("too_many_items", "item count bound exceeded")
            major, arg, _ = self.head()
            key: CborKey
            if major == 0:
                key = arg
            elif major == 1:
                key = -1 - arg
            elif major == 3:
                raw = self.take(arg, key_start)
                try:
                    key = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise self.fail("invalid_utf8", "map key", key_start) from None
            else:
                raise self.fail("bad_map_key", "map keys must be int or text", key_start)
            encoded_key = data[key_start : self.pos]
            # Strictly increasing encoded keys: refuses unsorted and duplicate keys at once
            # (RFC 8949 section 4.2.1 ordering; section 5.6 duplicates).
            if encoded_key <= previous:
                rule = "duplicate_map_key" if encoded_key == previous else "unsorted_map_keys"
                raise self.fail(rule, "", key_start)
            previous = encoded_key
            result[key] = self.item()
        return result

    def tag(self, number: int, start: int) -> CborValue:
        if number == TAG_DECIMAL_FRACTION and number in self.tags:
            content = self.item()
            if not isinstance(content, list) or len(content) != 2:
                raise self.fail("bad_decimal_fraction", "expected [exponent, mantissa]", start)
            exponent, mantissa = content
            # bool is an int subclass but the decoder never yields bool from major types 0/1.
            if not isinstance(exponent, int) or isinstance(exponent, bool):
                raise self.fail("bad_decimal_fraction", "exponent must be an integer", start)
            if not isinstance(mantissa, int) or isinstance(mantissa, bool):
                raise self.fail("bad_decimal_fraction", "mantissa must be an integer", start)
            if abs(exponent) > MAX_DECIMAL_EXPONENT:
                raise self.fail("bad_decimal_fraction", "exponent out of range", start)
            # Built from text, not arithmetic: exact whatever the decimal context precision.
            return Decimal(f"{mantissa}E{exponent}")
        if number not in self.tags:
            raise self.fail("unknown_tag", f"tag {number} is not allowed here", start)
        return Tag(number, self.item())


def decode(
    data: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_size: int = DEFAULT_MAX_SIZE,
    tags: frozenset[int] = frozenset({TAG_DECIMAL_FRACTION}),
) -> CborValue:
    """Decode exactly one deterministic CBOR data item filling all of ``data``.

    ``tags`` lists the tag numbers accepted; tag 4 yields :class:`~decimal.Decimal`, others a
    :class:`Tag`. Raises :class:`CborError` for anything else (see the module docstring).
    """
    if not isinstance(data, bytes):
        raise TypeError("decode() takes bytes")
    if len(data) > max_size:
        raise CborError("too_large", 0, f"{len(data)} bytes exceeds the bound of {max_size}")
    decoder = _Decoder(data, max_depth, max_items, tags)
    value = decoder.item()
    if decoder.pos != len(data):
        raise CborError("trailing_bytes", decoder.pos, f"{len(data) - decoder.pos} bytes")
    return value
