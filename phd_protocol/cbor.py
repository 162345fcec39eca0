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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

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
    "byte_string_at",
    "decode",
    "decode_item",
    "encode",
    "encode_bytes_head",
    "head_at",
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
#
# Both directions are written for speed in plain Python (an envelope carries hundreds of
# items and is sealed and opened on every reading batch). The encoder dispatches on exact
# types, handles the scalars of a container inline in the container's loop (one Python call
# per container, not per item), and memoises what recurs from batch to batch: the encodings of
# short text (map keys, units, codes; never ids or time stamps, which would only evict them),
# of Decimals (keyed by their exact text, which differs whenever the encoding does) and the
# sorted key order of all-text maps. Subclasses and other containers take a slower, exact path.

_PACK_B = struct.Struct(">B").pack
_PACK_BB = struct.Struct(">BB").pack
_PACK_BH = struct.Struct(">BH").pack
_PACK_BI = struct.Struct(">BI").pack
_PACK_BQ = struct.Struct(">BQ").pack

_CACHE_LIMIT = 4096  # entries per memo table; beyond it new entries are simply not cached
# Text up to this many UTF-8 bytes is memoised: every observation key and enumerated value
# fits, a 20-byte RFC 3339 time stamp or a 32-byte observation id does not.
_TEXT_CACHE_MAX = 16
_TEXT_CACHE: dict[str, bytes] = {}
_DECIMAL_CACHE: dict[str, bytes] = {}  # str(Decimal) -> tag 4 encoding
_ORDER_CACHE: dict[tuple[str, ...], tuple[tuple[bytes, str], ...]] = {}
_SMALL_UINT = tuple(_PACK_B(n) for n in range(24))
_SMALL_NINT = tuple(_PACK_B(0x20 | n) for n in range(24))
_ARRAY_HEADS = tuple(_PACK_B(0x80 | n) for n in range(24))
_MAP_HEADS = tuple(_PACK_B(0xA0 | n) for n in range(24))
_BYTES_HEADS = tuple(_PACK_B(0x40 | n) for n in range(24))


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
        if value < 24:
            return _SMALL_UINT[value]
        if value > _UINT64_MAX:
            raise ValueError("integer too large for CBOR major type 0 (bignums not supported)")
        return _head(0, value)
    if value >= -24:
        return _SMALL_NINT[-1 - value]
    if value < _NINT64_MIN:
        raise ValueError("integer too small for CBOR major type 1 (bignums not supported)")
    return _head(1, -1 - value)


# Codes and units recur in every batch (MDC codes are below 2**24); times in ms do not.
_INT_CACHE_MAX = 1 << 24
_INT_CACHE: dict[int, bytes] = {n: _SMALL_UINT[n] for n in range(24)}
_INT_CACHE.update({-1 - n: _SMALL_NINT[n] for n in range(24)})


def _encode_int_memo(value: int) -> bytes:
    encoded = _encode_int(value)
    if -_INT_CACHE_MAX <= value <= _INT_CACHE_MAX and len(_INT_CACHE) < _CACHE_LIMIT:
        _INT_CACHE[value] = encoded
    return encoded


def _encode_text(value: str) -> bytes:
    encoded = _TEXT_CACHE.get(value)
    if encoded is None:
        raw = value.encode("utf-8")
        size = len(raw)
        encoded = (_PACK_B(0x60 | size) if size < 24 else _head(3, size)) + raw
        if size <= _TEXT_CACHE_MAX and len(_TEXT_CACHE) < _CACHE_LIMIT:
            _TEXT_CACHE[str(value)] = encoded  # str(): never keep a subclass as the key
    return encoded


def _encode_bytes(value: bytes) -> bytes:
    size = len(value)
    return (_BYTES_HEADS[size] if size < 24 else _head(2, size)) + value


def _encode_decimal(value: Decimal) -> bytes:
    # str() of a finite Decimal is exact and reversible (sign, digits and exponent all show:
    # "80", "80.0" and "8E+1" differ), so it is a sound memo key where the Decimal itself,
    # which compares and hashes by numeric value, is not.
    text = str(value)
    encoded = _DECIMAL_CACHE.get(text)
    if encoded is not None:
        return encoded
    if not value.is_finite():
        raise ValueError("NaN and infinite Decimals have no CBOR decimal fraction form")
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # unreachable for finite values; narrows the type
        raise ValueError("Decimal without an integer exponent")
    if abs(exponent) > MAX_DECIMAL_EXPONENT:
        raise ValueError("Decimal exponent out of range")
    mantissa = 0
    for digit in digits:
        mantissa = mantissa * 10 + digit
    if sign:
        mantissa = -mantissa
    encoded = b"\xc4\x82" + _encode_int(exponent) + _encode_int(mantissa)
    if len(_DECIMAL_CACHE) < _CACHE_LIMIT:
        _DECIMAL_CACHE[text] = encoded
    return encoded


def _key_order(value: Mapping[Any, object]) -> tuple[tuple[bytes, Any], ...]:
    keys = tuple(value)
    order = _ORDER_CACHE.get(keys)  # only all-str key tuples are ever stored
    if order is not None:
        return order
    pairs: list[tuple[bytes, Any]] = []
    all_text = True
    for key in keys:
        if type(key) is str:
            pairs.append((_encode_text(key), key))
        elif isinstance(key, bool) or not isinstance(key, int | str):
            raise TypeError("CBOR map keys must be int or str")
        elif isinstance(key, int):
            all_text = False
            pairs.append((_encode_int(key), key))
        else:  # a str subclass (e.g. a StrEnum member) encodes as its text
            all_text = False
            pairs.append((_encode_text(str(key)), key))
    pairs.sort()
    for i in range(1, len(pairs)):
        if pairs[i][0] == pairs[i - 1][0]:  # e.g. "a" and a StrEnum whose value is "a"
            raise ValueError("duplicate CBOR map key")
    result = tuple(pairs)
    if all_text and len(_ORDER_CACHE) < _CACHE_LIMIT:
        _ORDER_CACHE[keys] = result
    return result


def _encode_into(append: Callable[[bytes], None], value: object) -> None:
    # The two container loops below repeat the scalar dispatch inline on purpose: a function
    # call per item would cost more than all the work of encoding a typical item.
    kind = type(value)
    if kind is dict:
        size = len(value)  # type: ignore[arg-type] # kind is dict
        append(_MAP_HEADS[size] if size < 24 else _head(5, size))
        for encoded_key, key in _key_order(value):  # type: ignore[arg-type] # kind is dict
            append(encoded_key)
            item = value[key]  # type: ignore[index] # kind is dict
            kind = type(item)
            if kind is str:
                append(_TEXT_CACHE.get(item) or _encode_text(item))
            elif kind is int:
                append(_INT_CACHE.get(item) or _encode_int_memo(item))
            elif item is None:
                append(b"\xf6")
            elif kind is Decimal:
                append(_encode_decimal(item))
            elif kind is bytes:
                append(_encode_bytes(item))
            else:
                _encode_into(append, item)
    elif kind is list or kind is tuple:
        size = len(value)  # type: ignore[arg-type] # kind is list or tuple
        append(_ARRAY_HEADS[size] if size < 24 else _head(4, size))
        for item in value:  # type: ignore[attr-defined] # kind is list or tuple
            kind = type(item)
            if kind is str:
                append(_TEXT_CACHE.get(item) or _encode_text(item))
            elif kind is int:
                append(_INT_CACHE.get(item) or _encode_int_memo(item))
            elif item is None:
                append(b"\xf6")
            elif kind is Decimal:
                append(_encode_decimal(item))
            elif kind is bytes:
                append(_encode_bytes(item))
            else:
                _encode_into(append, item)
    elif kind is str:
        append(_encode_text(value))  # type: ignore[arg-type] # kind is str
    elif kind is int:
        append(_encode_int(value))  # type: ignore[arg-type] # kind is int
    elif kind is bytes:
        append(_encode_bytes(value))  # type: ignore[arg-type] # kind is bytes
    elif value is None:
        append(b"\xf6")
    elif value is True:
        append(b"\xf5")
    elif value is False:
        append(b"\xf4")
    elif kind is Decimal:
        append(_encode_decimal(value))  # type: ignore[arg-type] # kind is Decimal
    elif isinstance(value, Tag):
        append(_head(6, value.number))
        _encode_into(append, value.value)
    # Subclasses and other containers: slower, but exact.
    elif isinstance(value, str):
        append(_encode_text(str(value)))
    elif isinstance(value, int):  # bool never gets here: True and False are singletons
        append(_encode_int(int(value)))
    elif isinstance(value, bytes | bytearray | memoryview):
        append(_encode_bytes(bytes(value)))
    elif isinstance(value, Decimal):
        append(_encode_decimal(Decimal(value)))
    elif isinstance(value, Mapping):
        append(_head(5, len(value)))
        for encoded_key, key in _key_order(value):
            append(encoded_key)
            _encode_into(append, value[key])
    elif isinstance(value, list | tuple):  # not any Sequence: str and bytes are sequences too
        append(_head(4, len(value)))
        for item in value:
            _encode_into(append, item)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


def encode(value: Encodable) -> bytes:
    """The deterministic encoding of ``value``; TypeError/ValueError for unsupported values."""
    out: list[bytes] = []
    _encode_into(out.append, value)
    return b"".join(out)


def encode_bytes_head(size: int) -> bytes:
    """The head of a byte string of ``size`` bytes: lets callers frame a large byte string
    they already hold (``head + data``) without it being copied into an intermediate list.
    """
    if not 0 <= size <= _UINT64_MAX:
        raise ValueError("byte string size out of range")
    return _BYTES_HEADS[size] if size < 24 else _head(2, size)


# --------------------------------------------------------------------------- decoding

_UNPACK_H = struct.Struct(">H").unpack_from
_UNPACK_I = struct.Struct(">I").unpack_from
_UNPACK_Q = struct.Struct(">Q").unpack_from
_KEY_CACHE: dict[bytes, str] = {}  # encoded short text key -> str (keys recur in every batch)


class _Budget:
    """Mutable bounds shared by one decode() call."""

    __slots__ = ("items", "tags")

    def __init__(self, items: int, tags: frozenset[int]) -> None:
        self.items = items
        self.tags = tags


def _head_at(data: bytes, pos: int) -> tuple[int, int, int]:
    """(major, argument, position after the head); CborError for rules on heads.

    Truncation surfaces as IndexError/struct.error, turned into CborError by decode().
    """
    initial = data[pos]
    major = initial >> 5
    ai = initial & 0x1F
    if ai < 24:
        return major, ai, pos + 1
    if major == 7:
        # Floats (ai 25..27) and the one-byte simple value form (ai 24) are outside our profile.
        if ai > 27:
            raise CborError("indefinite_length" if ai == 31 else "reserved_additional_info", pos)
        raise CborError("float_or_simple", pos, "floats and extended simple values")
    if ai == 24:
        n = data[pos + 1]
        if n < 24:
            raise CborError("non_shortest_head", pos, "argument fits a shorter head")
        return major, n, pos + 2
    if ai == 25:
        (n,) = _UNPACK_H(data, pos + 1)
        if n <= 0xFF:
            raise CborError("non_shortest_head", pos, "argument fits a shorter head")
        return major, n, pos + 3
    if ai == 26:
        (n,) = _UNPACK_I(data, pos + 1)
        if n <= 0xFFFF:
            raise CborError("non_shortest_head", pos, "argument fits a shorter head")
        return major, n, pos + 5
    if ai == 27:
        (n,) = _UNPACK_Q(data, pos + 1)
        if n <= 0xFFFFFFFF:
            raise CborError("non_shortest_head", pos, "argument fits a shorter head")
        return major, n, pos + 9
    if ai == 31:
        raise CborError("indefinite_length", pos, "only definite lengths are allowed")
    raise CborError("reserved_additional_info", pos, f"additional info {ai}")


def _item(data: bytes, pos: int, depth: int, budget: _Budget) -> tuple[CborValue, int]:
    """Decode the item at ``pos``; returns it and the position after it."""
    start = pos
    initial = data[pos]
    major = initial >> 5
    n = initial & 0x1F
    # One- and two-byte heads (arguments below 256: small values, ids, times, short strings)
    # inline, with the same shortest-form rule as _head_at, which handles the rest.
    if n < 24:
        pos += 1
    elif n == 24 and major != 7:
        n = data[pos + 1]
        if n < 24:
            raise CborError("non_shortest_head", pos, "argument fits a shorter head")
        pos += 2
    else:
        major, n, pos = _head_at(data, pos)
    if major == 0:
        return n, pos
    if major == 3:
        end = pos + n
        if end > len(data):
            raise CborError("truncated", start, "text longer than the remaining input")
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError:
            raise CborError("invalid_utf8", start, "text string") from None
    if major == 1:
        return -1 - n, pos
    if major == 2:
        end = pos + n
        if end > len(data):
            raise CborError("truncated", start, "bytes longer than the remaining input")
        return data[pos:end], end
    if major == 7:
        if n == 22:
            return None, pos
        if n == 21:
            return True, pos
        if n == 20:
            return False, pos
        raise CborError("float_or_simple", start, f"simple value {n}")
    # Containers and tags: bound nesting and the total number of items.
    if depth <= 0:
        raise CborError("too_deep", start, "nesting depth bound exceeded")
    if major == 4:
        # Each element takes at least one byte: refuse a count beyond the remaining input
        # before allocating anything.
        if n > len(data) - pos:
            raise CborError("truncated", start, "array longer than the remaining input")
        budget.items -= n
        if budget.items < 0:
            raise CborError("too_many_items", start, "item count bound exceeded")
        items: list[CborValue] = []
        append = items.append
        for _ in range(n):
            # Small unsigned integers and short text inline (the commonest elements), the rest
            # through _item; both paths apply the same rules.
            initial = data[pos]
            if initial < 0x18:
                append(initial)
                pos += 1
            elif 0x60 <= initial < 0x78:
                end = pos + initial - 0x5F
                if end > len(data):
                    raise CborError("truncated", pos, "text longer than the remaining input")
                try:
                    append(data[pos + 1 : end].decode("utf-8"))
                except UnicodeDecodeError:
                    raise CborError("invalid_utf8", pos, "text string") from None
                pos = end
            else:
                value, pos = _item(data, pos, depth - 1, budget)
                append(value)
        return items, pos
    if major == 5:
        return _map(data, pos, n, start, depth, budget)
    return _tag(data, pos, n, start, depth, budget)


def _map(  # noqa: PLR0917 -- hot path: positional arguments are measurably faster
    data: bytes, pos: int, n: int, start: int, depth: int, budget: _Budget
) -> tuple[dict[CborKey, CborValue], int]:
    if 2 * n > len(data) - pos:
        raise CborError("truncated", start, "map longer than the remaining input")
    budget.items -= 2 * n
    if budget.items < 0:
        raise CborError("too_many_items", start, "item count bound exceeded")
    result: dict[CborKey, CborValue] = {}
    previous = b""
    cache = _KEY_CACHE
    for _ in range(n):
        key_start = pos
        initial = data[pos]
        key: CborKey
        if 0x60 <= initial < 0x78:  # short text key, by far the common case
            pos += 1 + (initial - 0x60)
            encoded_key = data[key_start:pos]
            if len(encoded_key) != pos - key_start:
                raise CborError("truncated", key_start, "map key")
            cached = cache.get(encoded_key)
            if cached is None:
                try:
                    cached = encoded_key[1:].decode("utf-8")
                except UnicodeDecodeError:
                    raise CborError("invalid_utf8", key_start, "map key") from None
                if len(cache) < _CACHE_LIMIT:
                    cache[encoded_key] = cached
            key = cached
        else:
            major, arg, pos = _head_at(data, pos)
            if major == 0:
                key = arg
            elif major == 1:
                key = -1 - arg
            elif major == 3:
                end = pos + arg
                if end > len(data):
                    raise CborError("truncated", key_start, "map key")
                try:
                    key = data[pos:end].decode("utf-8")
                except UnicodeDecodeError:
                    raise CborError("invalid_utf8", key_start, "map key") from None
                pos = end
            else:
                raise CborError("bad_map_key", key_start, "map keys must be int or text")
            encoded_key = data[key_start:pos]
        # Strictly increasing encoded keys refuse unsorted and duplicate keys at once
        # (RFC 8949 section 4.2.1 ordering; section 5.6 duplicates).
        if encoded_key <= previous:
            rule = "duplicate_map_key" if encoded_key == previous else "unsorted_map_keys"
            raise CborError(rule, key_start)
        previous = encoded_key
        # The value: small unsigned integers and short text inline, as for array elements.
        initial = data[pos]
        if initial < 0x18:
            result[key] = initial
            pos += 1
        elif 0x60 <= initial < 0x78:
            end = pos + initial - 0x5F
            if end > len(data):
                raise CborError("truncated", pos, "text longer than the remaining input")
            try:
                result[key] = data[pos + 1 : end].decode("utf-8")
            except UnicodeDecodeError:
                raise CborError("invalid_utf8", pos, "text string") from None
            pos = end
        else:
            result[key], pos = _item(data, pos, depth - 1, budget)
    return result, pos


def _tag(  # noqa: PLR0917 -- hot path: positional arguments are measurably faster
    data: bytes, pos: int, number: int, start: int, depth: int, budget: _Budget
) -> tuple[CborValue, int]:
    if number not in budget.tags:
        raise CborError("unknown_tag", start, f"tag {number} is not allowed here")
    content, pos = _item(data, pos, depth - 1, budget)
    if number != TAG_DECIMAL_FRACTION:
        return Tag(number, content), pos
    if not isinstance(content, list) or len(content) != 2:
        raise CborError("bad_decimal_fraction", start, "expected [exponent, mantissa]")
    exponent, mantissa = content
    # bool is an int subclass but the decoder never yields bool from major types 0/1.
    if not isinstance(exponent, int) or isinstance(exponent, bool):
        raise CborError("bad_decimal_fraction", start, "exponent must be an integer")
    if not isinstance(mantissa, int) or isinstance(mantissa, bool):
        raise CborError("bad_decimal_fraction", start, "mantissa must be an integer")
    if abs(exponent) > MAX_DECIMAL_EXPONENT:
        raise CborError("bad_decimal_fraction", start, "exponent out of range")
    # Built from text, not arithmetic: exact whatever the decimal context precision.
    return Decimal(f"{mantissa}E{exponent}"), pos


def byte_string_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """Bounds ``(start, end)`` of the byte string whose head is at ``data[pos]``, or None.

    None unless ``data[pos]`` starts a byte string with the shortest head (RFC 8949 section
    4.2.1) whose content lies within ``data``. For fast paths over fixed layouts (envelope
    framing, COSE_Sign1): a caller that gets None falls back to :func:`decode`, which stays
    the authority on what is refused and why.
    """
    if not 0 <= pos < len(data):
        return None
    initial = data[pos]
    if 0x40 <= initial < 0x58:
        start = pos + 1
        end = start + initial - 0x40
    elif initial == 0x58 and pos + 1 < len(data) and data[pos + 1] >= 24:
        start = pos + 2
        end = start + data[pos + 1]
    elif initial == 0x59 and pos + 2 < len(data):
        size = data[pos + 1] << 8 | data[pos + 2]
        if size <= 0xFF:
            return None
        start = pos + 3
        end = start + size
    elif initial == 0x5A and pos + 4 < len(data):
        (size,) = _UNPACK_I(data, pos + 1)
        if size <= 0xFFFF:
            return None
        start = pos + 5
        end = start + size
    else:  # another major type, a 64-bit length (beyond any bound of ours), or truncated
        return None
    return (start, end) if end <= len(data) else None


def head_at(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """``(major type, argument, offset after the head)`` of the head at ``data[pos]``, or None.

    None for a head :func:`decode` would refuse (not the shortest form, reserved additional
    information, indefinite length, floats and extended simple values) or that runs past the
    end. Like :func:`byte_string_at`, for fast paths over fixed layouts that fall back to
    :func:`decode` on None; it checks the head only, not what follows it.
    """
    if not 0 <= pos < len(data):
        return None
    initial = data[pos]
    if initial & 0x1F < 24:  # a one-byte head is always the shortest
        return initial >> 5, initial & 0x1F, pos + 1
    try:
        return _head_at(data, pos)
    except (CborError, IndexError, struct.error):
        return None


def decode_item(
    data: bytes,
    pos: int,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
    tags: frozenset[int] = frozenset({TAG_DECIMAL_FRACTION}),
) -> tuple[CborValue, int]:
    """Decode the one data item starting at ``data[pos]``: ``(value, offset after it)``.

    The rules and bounds of :func:`decode`, except that bytes may follow the item (the caller
    decides what comes next). CborError otherwise.
    """
    if not isinstance(data, bytes):
        raise TypeError("decode_item() takes bytes")
    if not 0 <= pos < len(data):
        raise CborError("truncated", pos, "no data item at this offset")
    try:
        return _item(data, pos, max_depth, _Budget(max_items, tags))
    except (IndexError, struct.error):
        raise CborError("truncated", len(data), "input ends inside a data item") from None


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
    :class:`Tag`. ``max_depth`` bounds the nesting of arrays, maps and tags; ``max_items`` the
    number of items in all containers together. Raises :class:`CborError` for anything else
    (see the module docstring).
    """
    if not isinstance(data, bytes):
        raise TypeError("decode() takes bytes")
    if len(data) > max_size:
        raise CborError("too_large", 0, f"{len(data)} bytes exceeds the bound of {max_size}")
    try:
        value, end = _item(data, 0, max_depth, _Budget(max_items, tags))
    except (IndexError, struct.error):
        raise CborError("truncated", len(data), "input ends inside a data item") from None
    if end != len(data):
        raise CborError("trailing_bytes", end, f"{len(data) - end} bytes")
    return value
