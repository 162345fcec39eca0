"""phd_protocol.wire: uplink batch and ack round trips, bounds, and refusal of bad messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phd_protocol import cbor, wire
from phd_protocol.errors import PhdProtocolError, RejectReason
from phd_protocol.wire import (
    AckStatus,
    EnvelopeResult,
    UplinkAck,
    UplinkBatch,
    WireError,
)

BATCH_ID = bytes(range(16))


def test_batch_round_trip_and_layout() -> None:
    batch = UplinkBatch(id=BATCH_ID, envelopes=(b"\x83\x01", b"abc"))
    encoded = batch.encode()
    # {"id": h'00..0f', "v": 1, "env": [...]} with keys in deterministic order (bytewise).
    assert cbor.decode(encoded) == {"v": 1, "id": BATCH_ID, "env": [b"\x83\x01", b"abc"]}
    assert list(cbor.decode(encoded)) == ["v", "id", "env"]  # type: ignore[arg-type] # a dict
    assert UplinkBatch.decode(encoded) == batch
    assert wire.batch_size(batch.envelopes) >= len(encoded)


def test_new_batch_draws_a_random_id() -> None:
    batch = UplinkBatch.new([b"x"], rng=lambda n: b"\x07" * n)
    assert batch.id == b"\x07" * 16
    assert UplinkBatch.new([b"x"]).id != UplinkBatch.new([b"x"]).id


def test_ack_round_trip_every_status() -> None:
    results = (
        EnvelopeResult.stored(),
        EnvelopeResult.duplicate(),
        EnvelopeResult.retry_later(),
        EnvelopeResult.rejected(RejectReason.REPLAY, permanent=True),
        EnvelopeResult.rejected(RejectReason.UNKNOWN_CREDENTIAL, permanent=False),
    )
    ack = UplinkAck(id=BATCH_ID, results=results)
    assert UplinkAck.decode(ack.encode()) == ack
    assert [r.settled for r in results] == [True, True, False, True, False]
    assert cbor.decode(ack.encode())["results"][3] == {  # type: ignore[index,call-overload] # a dict
        "status": "rejected",
        "reason": "replay",
        "permanent": True,
    }


def test_ack_answers_its_batch() -> None:
    batch = UplinkBatch(id=BATCH_ID, envelopes=(b"a", b"b"))
    UplinkAck(id=BATCH_ID, results=(EnvelopeResult.stored(),) * 2).check_answers(batch)
    with pytest.raises(WireError, match="mismatch"):
        UplinkAck(id=BATCH_ID, results=(EnvelopeResult.stored(),)).check_answers(batch)
    with pytest.raises(WireError, match="mismatch"):
        UplinkAck(id=b"\x01" * 16, results=(EnvelopeResult.stored(),) * 2).check_answers(batch)


def test_result_invariants() -> None:
    with pytest.raises(ValueError, match="RejectReason"):
        EnvelopeResult(status=AckStatus.REJECTED)
    with pytest.raises(ValueError, match="only a rejection"):
        EnvelopeResult(status=AckStatus.STORED, reason=RejectReason.REPLAY)
    with pytest.raises(ValueError, match="only a rejection"):
        EnvelopeResult(status=AckStatus.RETRY_LATER, permanent=True)


def test_batch_bounds() -> None:
    UplinkBatch(id=BATCH_ID, envelopes=(b"x",) * wire.MAX_BATCH_ENVELOPES)
    with pytest.raises(WireError, match="too_many"):
        UplinkBatch(id=BATCH_ID, envelopes=(b"x",) * (wire.MAX_BATCH_ENVELOPES + 1))
    with pytest.raises(WireError, match="too_many"):
        UplinkBatch(id=BATCH_ID, envelopes=())
    big = b"x" * wire.MAX_ENVELOPE_BYTES
    with pytest.raises(WireError, match="too_large"):
        UplinkBatch(id=BATCH_ID, envelopes=(big,) * 16)
    with pytest.raises(WireError, match="malformed"):
        UplinkBatch(id=b"short", envelopes=(b"x",))
    with pytest.raises(WireError, match="malformed"):
        UplinkBatch(id=BATCH_ID, envelopes=(b"",))


def test_an_oversize_envelope_travels_in_a_batch_to_be_answered_alone() -> None:
    # The hospital answers it rejected(too_large, permanent); refusing the whole batch would
    # leave the gateway without any answer, retrying it forever.
    oversize = b"x" * (wire.MAX_ENVELOPE_BYTES + 1)
    batch = UplinkBatch(id=BATCH_ID, envelopes=(b"a", oversize, b"b"))
    decoded = UplinkBatch.decode(batch.encode())
    assert decoded.envelopes == (b"a", oversize, b"b")
    # The batch bound still holds for a batch of oversize envelopes.
    with pytest.raises(WireError, match="too_large"):
        UplinkBatch(id=BATCH_ID, envelopes=(oversize,) * 16)
    with pytest.raises(WireError) as info:
        UplinkBatch.decode(
            cbor.encode({"v": 1, "id": BATCH_ID, "env": [b"x" * (wire.MAX_BATCH_BYTES - 64)] * 2})
        )
    assert info.value.rule == "too_large"


def _raw(value: Any) -> bytes:
    return cbor.encode(value)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"\xff", "malformed"),
        (_raw([1, BATCH_ID, [b"x"]]), "malformed"),
        (_raw({"v": 2, "id": BATCH_ID, "env": [b"x"]}), "version"),
        (_raw({"v": True, "id": BATCH_ID, "env": [b"x"]}), "version"),
        (_raw({"v": 1, "id": BATCH_ID, "env": [b"x"], "extra": 0}), "malformed"),
        (_raw({"v": 1, "id": BATCH_ID[:8], "env": [b"x"]}), "malformed"),
        (_raw({"v": 1, "id": BATCH_ID, "env": ["text"]}), "malformed"),
        (_raw({"v": 1, "id": BATCH_ID, "env": b"x"}), "malformed"),
        (_raw({"v": 1, "id": BATCH_ID, "env": []}), "too_many"),
        (_raw({"v": 1, "id": BATCH_ID, "env": [b"x"] * 65}), "too_many"),
        (b"\x00" * (wire.MAX_BATCH_BYTES + 1), "too_large"),
        # Non-deterministic CBOR (keys unsorted) is refused even if the content is fine.
        (
            bytes.fromhex("a3")
            + _raw("id")
            + _raw(BATCH_ID)
            + _raw("v")
            + b"\x01"
            + _raw("env")
            + _raw([b"x"]),
            "malformed",
        ),
    ],
)
def test_bad_batches_are_refused(data: bytes, rule: str) -> None:
    with pytest.raises(WireError) as info:
        UplinkBatch.decode(data)
    assert info.value.rule == rule


@pytest.mark.parametrize(
    "result",
    [
        {"status": "lost"},
        {"status": "stored", "reason": "replay"},
        {"status": "rejected", "reason": "replay"},
        {"status": "rejected", "reason": "nope", "permanent": True},
        {"status": "rejected", "reason": "replay", "permanent": 1},
        {"status": 1},
        "stored",
    ],
)
def test_bad_ack_results_are_refused(result: Any) -> None:
    data = _raw({"v": 1, "id": BATCH_ID, "results": [result]})
    with pytest.raises(WireError, match="malformed"):
        UplinkAck.decode(data)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_fuzz_decoders_raise_only_wire_error(data: bytes) -> None:
    for decoder in (UplinkBatch.decode, UplinkAck.decode):
        try:
            decoder(data)
        except WireError as exc:
            error: PhdProtocolError = exc  # the documented root, and nothing else escapes
            assert error.args
