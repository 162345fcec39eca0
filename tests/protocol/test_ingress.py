"""Agent -> gateway framing: round trips, bounds, poisoning, and a fuzzed invariant."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phd_protocol.ingress import (
    MAX_ENVELOPE_SIZE,
    IngressError,
    IngressReply,
    IngressStatus,
    ReplyReader,
    RequestReader,
    decode_reply,
    encode_reply,
    encode_request,
    parse_request_length,
)


def test_request_round_trip_split_at_every_byte() -> None:
    envs = [b"\x83\x01\x41a", b"x" * 300, b"y"]
    stream = b"".join(encode_request(e) for e in envs)
    reader = RequestReader()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    assert got == envs
    assert reader.buffered == 0


def test_largest_envelope_accepted_and_one_more_refused() -> None:
    assert RequestReader().feed(encode_request(b"a" * MAX_ENVELOPE_SIZE)) == [
        b"a" * MAX_ENVELOPE_SIZE
    ]
    with pytest.raises(IngressError) as info:
        encode_request(b"a" * (MAX_ENVELOPE_SIZE + 1))
    assert info.value.status is IngressStatus.TOO_LARGE


def test_oversized_header_refused_before_body_is_buffered() -> None:
    reader = RequestReader()
    with pytest.raises(IngressError) as info:
        reader.feed(struct.pack(">I", MAX_ENVELOPE_SIZE + 1))
    assert info.value.status is IngressStatus.TOO_LARGE
    assert reader.buffered == 0
    # Poisoned: the stream position is lost, so nothing more is parsed.
    with pytest.raises(IngressError):
        reader.feed(encode_request(b"ok"))


def test_zero_length_is_malformed() -> None:
    with pytest.raises(IngressError) as info:
        parse_request_length(b"\x00\x00\x00\x00")
    assert info.value.status is IngressStatus.MALFORMED
    with pytest.raises(IngressError):
        encode_request(b"")
    with pytest.raises(IngressError):
        parse_request_length(b"\x00\x01")


@pytest.mark.parametrize("status", list(IngressStatus))
def test_reply_round_trip(status: IngressStatus) -> None:
    reply = IngressReply(status=status, reason="outbox_full")
    wire = encode_reply(reply)
    assert wire[0] == int(status)
    assert decode_reply(wire) == reply


def test_reply_reader_incremental_and_bad_inputs() -> None:
    wire = encode_reply(IngressReply(status=IngressStatus.ACCEPTED, reason="stored")) * 2
    reader = ReplyReader()
    assert reader.feed(wire[:4]) == []
    assert [r.accepted for r in reader.feed(wire[4:])] == [True, True]
    with pytest.raises(IngressError):
        decode_reply(b"\x09\x00\x00")  # unknown status
    with pytest.raises(IngressError):
        decode_reply(b"\x00\x00\x01\xff")  # non-ASCII reason
    with pytest.raises(IngressError):
        decode_reply(b"\x00\x01\x01" + b"a" * 257)  # reason too long
    with pytest.raises(IngressError):
        decode_reply(wire)  # two replies where one is expected
    with pytest.raises(IngressError):
        IngressReply(status=IngressStatus.BUSY, reason="caf\u00e9")


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_request_reader_returns_envelopes_or_ingress_error(chunks: list[bytes]) -> None:
    reader = RequestReader()
    try:
        for chunk in chunks:
            for env in reader.feed(chunk):
                assert 1 <= len(env) <= MAX_ENVELOPE_SIZE
    except IngressError:
        pass  # the only exception allowed; anything else fails the test


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_reply_reader(data: bytes) -> None:
    try:
        for reply in ReplyReader().feed(data):
            assert reply.reason.isascii()
    except IngressError:
        pass  # the only exception allowed; anything else fails the test
