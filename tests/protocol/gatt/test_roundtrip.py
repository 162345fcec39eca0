"""Round-trip properties: for every characteristic, decode(encode(v)) == v, and every
observation survives its wire dict."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phd_protocol import gatt
from phd_protocol.observation import Observation

from .strategies import BY_UUID

RECEIVED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("uuid", sorted(BY_UUID), ids=lambda u: f"{u:04X}")
def test_encode_then_decode_is_identity(uuid: int) -> None:
    @settings(max_examples=150, deadline=None)
    @given(value=BY_UUID[uuid])
    def check(value: Any) -> None:
        data = gatt.encode(value)
        assert gatt.decode(uuid, data) == value
        # And the bytes are canonical: a second trip gives the same bytes.
        assert gatt.encode(gatt.decode(uuid, data)) == data

    check()


@pytest.mark.parametrize("uuid", sorted(BY_UUID), ids=lambda u: f"{u:04X}")
def test_observations_survive_the_wire_dict(uuid: int) -> None:
    @settings(max_examples=60, deadline=None)
    @given(value=BY_UUID[uuid], device=st.text("abcdef0123456789-", min_size=1, max_size=36))
    def check(value: Any, device: str) -> None:
        observations = gatt.to_observations(value, device=device, received_at=RECEIVED_AT)
        for obs in observations:
            assert Observation.from_wire(obs.to_wire()) == obs
            assert obs.char == uuid

    check()
