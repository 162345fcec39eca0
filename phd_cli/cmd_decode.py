"""``phd decode --char 2A35 --hex <bytes>``: decode one GATT characteristic value and print JSON.

The output is one JSON object: the decoded fields (``characteristic``, ``name`` and the
characteristic's own fields; absent optional fields are left out) and an ``observations`` list
in the Observation wire shape (docs/ARCHITECTURE.md "Observation wire dict"). Numbers are
printed exactly (``120.5``, never ``120.49999``); special values as ``"NaN"``, ``"NRes"``,
``"+INF"``, ``"-INF"``, ``"reserved"``.

Exit codes: 0 decoded; 1 the bytes do not follow the specification (the ParseError message,
which names field and offset, goes to stderr); 2 bad arguments (argparse's usage error).

``--device`` (default ``cli``) is the device id that goes into the content ids; pass the
enrolled device id to reproduce the ids the agent computes. ``--received-at`` (default: now)
times observations of characteristics without a time stamp.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, tzinfo
from typing import Any

EXIT_OK = 0
EXIT_PARSE_ERROR = 1
DEFAULT_DEVICE = "cli"
_HEX_SEPARATORS = re.compile(r"[\s:_-]")
_MAX_HEX_CHARS = 2 * 512  # one ATT value at most


def _characteristic(text: str) -> int:
    from phd_protocol.errors import ParseError
    from phd_protocol.gatt import CODECS, parse_uuid

    try:
        uuid = parse_uuid(text)
    except ParseError:
        raise argparse.ArgumentTypeError(
            "expected a 16-bit characteristic UUID such as 2A35 or 0x2A35"
        ) from None
    if uuid not in CODECS:
        known = ", ".join(f"{u:04X}" for u in sorted(CODECS))
        raise argparse.ArgumentTypeError(f"{uuid:04X} is not supported; supported: {known}")
    return uuid


def _hex_bytes(text: str) -> bytes:
    cleaned = _HEX_SEPARATORS.sub("", text)
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    if len(cleaned) > _MAX_HEX_CHARS:
        raise argparse.ArgumentTypeError("value longer than 512 bytes")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected hexadecimal bytes, e.g. 1E780050005D00 (spaces and colons allowed)"
        ) from None


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO 8601 time with a UTC offset") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("the time needs a UTC offset, e.g. 2026-01-02T03:04:05Z")
    return moment


def _zone(text: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if text.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            "expected an IANA time zone such as Europe/Paris"
        ) from None


def _device(text: str) -> str:
    if not 1 <= len(text) <= 128 or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError("expected 1-128 printable ASCII characters, no spaces")
    return text


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "decode",
        help="decode a GATT characteristic value into fields and coded observations (JSON)",
        description="Decode one Bluetooth GATT characteristic value and print it as JSON.",
    )
    p.add_argument(
        "--char",
        required=True,
        type=_characteristic,
        metavar="UUID",
        help="characteristic UUID, e.g. 2A35 (blood pressure), 2A18 (glucose)",
    )
    p.add_argument(
        "--hex",
        dest="data",
        required=True,
        type=_hex_bytes,
        metavar="BYTES",
        help="the characteristic value in hex (spaces or colons allowed)",
    )
    p.add_argument(
        "--device",
        default=DEFAULT_DEVICE,
        type=_device,
        help="device id for the content ids (default: %(default)s)",
    )
    p.add_argument(
        "--received-at",
        type=_aware_time,
        default=None,
        metavar="ISO8601",
        help="agent receive time for values without a time stamp (default: now)",
    )
    p.add_argument(
        "--device-tz",
        type=_zone,
        default=UTC,
        metavar="ZONE",
        help="time zone of the device's clock (default: UTC)",
    )
    p.add_argument(
        "--context-hex",
        type=_hex_bytes,
        default=None,
        metavar="BYTES",
        help="with --char 2A18: the matching Glucose Measurement Context (2A34) value",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from phd_protocol import gatt
    from phd_protocol.errors import ParseError
    from phd_protocol.observation import wire_json

    received_at: datetime = args.received_at or datetime.now(UTC)
    try:
        value = gatt.decode(args.char, args.data)
        context = None
        if args.context_hex is not None:
            if args.char != gatt.GlucoseMeasurement.uuid:
                sys.stderr.write("error: --context-hex goes with --char 2A18\n")
                return EXIT_PARSE_ERROR
            decoded_context = gatt.decode(gatt.GlucoseMeasurementContext.uuid, args.context_hex)
            if not isinstance(decoded_context, gatt.GlucoseMeasurementContext):  # pragma: no cover
                raise ParseError("context did not decode to a Glucose Measurement Context")
            context = decoded_context
        observations = gatt.to_observations(
            value,
            device=args.device,
            received_at=received_at,
            device_tz=args.device_tz,
            context=context,
        )
    except ParseError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_PARSE_ERROR
    except ValueError as exc:  # a context whose sequence number does not match
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_PARSE_ERROR
    output = gatt.fields(value)
    if context is not None:
        output["context"] = gatt.fields(context)
    output["observations"] = [o.to_wire() for o in observations]
    sys.stdout.write(wire_json(output, indent=2) + "\n")
    return EXIT_OK
