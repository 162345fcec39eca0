"""phd_protocol.envelope + phd_protocol.policy: round trips, rotation, and every refusal.

Attacks are real: tampered bytes in every region of the envelope, re-encrypted forgeries of
the signed layer, replays, stale or future timestamps, other recipients, other keys, expired
and revoked credentials. Each must be refused with exactly the documented reason.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phd_protocol import cbor, cose, crypto, envelope
from phd_protocol.envelope import (
    MAX_ENVELOPE_BYTES,
    DeviceSigner,
    EnvelopeError,
    IngestKey,
    KeyRing,
    Payload,
    RawRecord,
    encrypt_signed,
    open_envelope,
    seal,
    seal_payload,
)
from phd_protocol.errors import RejectReason
from phd_protocol.policy import (
    CredentialRecord,
    ReplayWindow,
    VerificationPolicy,
    VerifiedEnvelope,
    open_and_verify,
)
from tests.protocol.test_envelope_fixtures import (
    DEVICE_ID,
    SAMPLE_PHD,
    T0,
    T0_MS,
    Party,
    make_ingest,
    make_party,
    sample_observations,
    sample_raw,
)

R = RejectReason
ALGS = [crypto.COSE_EDDSA, crypto.COSE_ES256]


def _seal(party: Party, key: IngestKey, *, seq: int = 1, ts: int = T0_MS, n: int = 10) -> bytes:
    return seal(
        signer=party.signer,
        recipient=key.recipient,
        seq=seq,
        observations=sample_observations(n),
        raw=sample_raw(3),
        phd=SAMPLE_PHD,
        clock=lambda: ts,
    )


def _open(
    data: bytes,
    ring: KeyRing,
    *records: CredentialRecord,
    replay: ReplayWindow | None = None,
    policy: VerificationPolicy | None = None,
) -> VerifiedEnvelope:
    by_kid = {r.kid: r for r in records}
    return open_and_verify(
        data,
        keyring=ring,
        credentials=by_kid.get,
        received_at=T0 + timedelta(seconds=2),
        policy=policy,
        replay_window=None if replay is None else (lambda _kid: replay),
    )


def _reason(data: bytes, ring: KeyRing, *records: CredentialRecord, **kw: Any) -> R:
    with pytest.raises(EnvelopeError) as info:
        _open(data, ring, *records, **kw)
    # The message is the reason code and nothing else: no oracle, no content.
    assert str(info.value) == info.value.reason.value
    return info.value.reason


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("alg", ALGS)
def test_seal_open_round_trip(alg: int) -> None:
    party, key = make_party(alg), make_ingest()
    data = _seal(party, key, seq=7)
    assert len(data) < MAX_ENVELOPE_BYTES
    verified = _open(data, KeyRing([key]), party.record)
    assert verified.recipient_kid == key.kid
    assert verified.alg == alg
    assert verified.credential is party.record
    p = verified.payload
    assert (p.device_id, p.seq, p.ts, p.rcpt) == (DEVICE_ID, 7, T0_MS, key.kid)
    assert verified.observations == tuple(sample_observations(10))
    assert verified.observations[1]["components"][0]["value"] == Decimal("120.5")  # type: ignore[index,call-overload] # a dict
    assert verified.raw == tuple(sample_raw(3))
    assert dict(p.phd) == SAMPLE_PHD


def test_payload_is_deterministic_cbor_with_the_design_keys() -> None:
    party, key = make_party(), make_ingest()
    opened = open_envelope(_seal(party, key), KeyRing([key]))
    decoded = cbor.decode(opened.message.payload)
    assert isinstance(decoded, dict)
    assert set(decoded) == {"v", "dev", "seq", "ts", "rcpt", "obs", "raw", "phd"}
    assert cbor.encode(decoded) == opened.message.payload
    assert opened.message.kid == party.signer.kid


def test_key_rotation_old_and_new_keys_both_open_and_report_their_kid() -> None:
    party, old, new = make_party(), make_ingest(1), make_ingest(2)
    both = KeyRing([old, new])
    assert _open(_seal(party, old), both, party.record).recipient_kid == old.kid
    assert _open(_seal(party, new), both, party.record).recipient_kid == new.kid
    # After the overlap the old key is retired: its envelopes name a kid no longer held.
    assert _reason(_seal(party, old), KeyRing([new]), party.record) is R.UNKNOWN_RECIPIENT_KEY
    with pytest.raises(ValueError, match="share a kid"):
        KeyRing([old, IngestKey(kid=old.kid, private_key=crypto.generate_hpke_key())])


def test_too_large_on_seal_and_on_open() -> None:
    party, key = make_party(), make_ingest()
    with pytest.raises(EnvelopeError) as info:
        _seal(party, key, n=400)
    assert info.value.reason is R.TOO_LARGE
    assert _reason(b"\x00" * (MAX_ENVELOPE_BYTES + 1), KeyRing([key])) is R.TOO_LARGE


def test_secrets_stay_out_of_repr() -> None:
    party, key = make_party(), make_ingest()
    assert "private" not in repr(key).lower() or "private_key" not in repr(key)
    assert "key=" not in repr(party.signer)


# --------------------------------------------------------------------------- outer tampering


def _regions(data: bytes, kid: bytes) -> dict[str, range]:
    """Byte ranges of the framing: [1, kid, ct] with ct = enc(32) || body || tag(16)."""
    kid_at = data.index(kid)
    ct_head = kid_at + len(kid)
    ct_at = ct_head + (3 if len(data) - ct_head - 3 > 255 else 2)
    return {
        "framing header": range(kid_at),
        "rcpt kid": range(kid_at, ct_at - (ct_at - ct_head)),
        "hpke ct head": range(ct_head, ct_at),
        "hpke enc": range(ct_at, ct_at + 32),
        "ciphertext": range(ct_at + 32, len(data) - 16),
        "tag": range(len(data) - 16, len(data)),
    }


EXPECTED_OUTER = {
    "framing header": {R.MALFORMED},
    "rcpt kid": {R.UNKNOWN_RECIPIENT_KEY},
    "hpke ct head": {R.MALFORMED},
    "hpke enc": {R.DECRYPT_FAILED},
    "ciphertext": {R.DECRYPT_FAILED},
    "tag": {R.DECRYPT_FAILED},
}


def test_every_outer_byte_region_is_refused_with_its_reason() -> None:
    party, key = make_party(), make_ingest()
    ring = KeyRing([key])
    data = _seal(party, key, n=2)
    regions = _regions(data, key.kid)
    assert sum(len(r) for r in regions.values()) == len(data)
    for name, region in regions.items():
        # Every byte of the small regions; a spread of the large ciphertext.
        positions = (
            list(region) if len(region) <= 64 else list(region)[:: max(1, len(region) // 50)]
        )
        for index in positions:
            tampered = bytearray(data)
            tampered[index] ^= 0x01
            reason = _reason(bytes(tampered), ring, party.record)
            assert reason in EXPECTED_OUTER[name], (name, index, reason)


def test_a_kid_swapped_for_another_held_key_fails_decryption() -> None:
    # The HPKE info binds the kid: naming another key we hold does not help.
    party, a, b = make_party(), make_ingest(1), make_ingest(2)
    data = _seal(party, a)
    swapped = data.replace(a.kid, b.kid, 1)
    assert _reason(swapped, KeyRing([a, b]), party.record) is R.DECRYPT_FAILED


# --------------------------------------------------------------------------- inner tampering


def _signed(party: Party, key: IngestKey, **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "device_id": party.signer.device_id,
        "seq": 1,
        "ts": T0_MS,
        "rcpt": key.kid,
        "observations": sample_observations(2),
        "raw": sample_raw(1),
        "phd": SAMPLE_PHD,
    }
    fields.update(changes)
    payload = Payload.build(**fields)
    return cose.sign1(party.signer.key, kid=party.signer.kid, payload=payload.encode())


def _cose_regions(signed: bytes) -> dict[str, range]:
    message = cose.Sign1.decode(signed)
    prot_at = signed.index(message.protected)
    payload_at = signed.index(message.payload, prot_at + len(message.protected))
    return {
        "protected alg": range(prot_at + 1, prot_at + 3),
        "protected kid": range(prot_at + 6, prot_at + len(message.protected)),
        "payload": range(payload_at, payload_at + len(message.payload)),
        "signature": range(len(signed) - 64, len(signed)),
    }


EXPECTED_INNER = {
    # Changing alg to another supported value keeps the structure: the key type check fails.
    "protected alg": {R.MALFORMED, R.BAD_SIGNATURE},
    "protected kid": {R.UNKNOWN_CREDENTIAL},
    "payload": {R.BAD_SIGNATURE},
    "signature": {R.BAD_SIGNATURE},
}


@pytest.mark.parametrize("alg", ALGS)
def test_every_signed_region_tampered_and_re_encrypted_is_refused(alg: int) -> None:
    # An attacker who can encrypt to the hospital (its key is public) still cannot alter the
    # signed layer: re-encrypting a tampered COSE_Sign1 to the same key.
    party, key = make_party(alg), make_ingest()
    ring = KeyRing([key])
    signed = _signed(party, key)
    assert _open(encrypt_signed(signed, key.recipient), ring, party.record).payload.seq == 1
    for name, region in _cose_regions(signed).items():
        positions = list(region) if len(region) <= 70 else list(region)[:: len(region) // 40]
        for index in positions:
            tampered = bytearray(signed)
            tampered[index] ^= 0x01
            envelope = encrypt_signed(bytes(tampered), key.recipient)
            reason = _reason(envelope, ring, party.record)
            assert reason in EXPECTED_INNER[name], (name, index, reason)


def test_garbage_inside_valid_encryption_is_malformed() -> None:
    key = make_ingest()
    for inner in [b"", b"\x00", cbor.encode([1, 2, 3, 4]), b"\xd2\x84" + b"\x40" * 4]:
        assert _reason(encrypt_signed(inner, key.recipient), KeyRing([key])) is R.MALFORMED


# --------------------------------------------------------------------------- policy


def test_unknown_credential() -> None:
    party, key = make_party(), make_ingest()
    assert _reason(_seal(party, key), KeyRing([key])) is R.UNKNOWN_CREDENTIAL


@pytest.mark.parametrize("alg", ALGS)
def test_wrong_device_key_is_a_bad_signature(alg: int) -> None:
    # A thief knows the kid (it is in the clear inside) but not the key.
    party, key = make_party(alg), make_ingest()
    thief = DeviceSigner(
        device_id=DEVICE_ID, kid=party.signer.kid, key=crypto.generate_signing_key(alg)
    )
    forged = seal(
        signer=thief, recipient=key.recipient, seq=1, observations=[], clock=lambda: T0_MS
    )
    assert _reason(forged, KeyRing([key]), party.record) is R.BAD_SIGNATURE


def test_payload_for_another_recipient_is_refused() -> None:
    # Signed for hospital key A, then (by someone who could read it) encrypted to key B.
    party, a, b = make_party(), make_ingest(1), make_ingest(2)
    signed = _signed(party, a)
    data = encrypt_signed(signed, b.recipient)
    assert _reason(data, KeyRing([a, b]), party.record) is R.UNKNOWN_RECIPIENT_KEY


def test_device_id_must_match_the_credential() -> None:
    party, key = make_party(), make_ingest()
    signed = _signed(party, key, device_id="00000000-0000-4000-8000-000000000000")
    assert _reason(encrypt_signed(signed, key.recipient), KeyRing([key]), party.record) is (
        R.NOT_ENROLLED
    )


def test_credential_standing_at_the_time_of_sealing() -> None:
    key = make_ingest()
    ring = KeyRing([key])
    expired = make_party(not_after=T0 - timedelta(seconds=1))
    assert _reason(_seal(expired, key), ring, expired.record) is R.CREDENTIAL_EXPIRED
    early = make_party(not_before=T0 + timedelta(seconds=1))
    assert _reason(_seal(early, key), ring, early.record) is R.CREDENTIAL_EXPIRED
    revoked = make_party(revoked_at=T0)
    assert _reason(_seal(revoked, key), ring, revoked.record) is R.CREDENTIAL_REVOKED
    # Sealed before the revocation, delivered after: still the device's genuine reading.
    later = make_party(revoked_at=T0 + timedelta(minutes=1))
    assert _open(_seal(later, key), ring, later.record).payload.seq == 1
    ended = make_party(enrollment_ended_at=T0 - timedelta(days=1))
    assert _reason(_seal(ended, key), ring, ended.record) is R.NOT_ENROLLED
    # Revocation wins over expiry when both apply: the stronger statement.
    both = make_party(revoked_at=T0 - timedelta(days=2), not_after=T0 - timedelta(days=1))
    assert _reason(_seal(both, key), ring, both.record) is R.CREDENTIAL_REVOKED


def test_clock_skew_bounds_are_configurable() -> None:
    party, key = make_party(), make_ingest()
    ring = KeyRing([key])
    policy = VerificationPolicy(max_age=timedelta(hours=1), max_future=timedelta(seconds=30))
    ok_past = _seal(party, key, ts=T0_MS - 59 * 60_000)
    assert _open(ok_past, ring, party.record, policy=policy).payload.seq == 1
    stale = _seal(party, key, ts=T0_MS - 61 * 60_000)
    assert _reason(stale, ring, party.record, policy=policy) is R.CLOCK_SKEW
    future = _seal(party, key, ts=T0_MS + 60_000)
    assert _reason(future, ring, party.record, policy=policy) is R.CLOCK_SKEW
    assert _open(future, ring, party.record).payload.seq == 1  # default: 5 minutes ahead
    with pytest.raises(ValueError, match="non-negative"):
        VerificationPolicy(max_age=timedelta(seconds=-1))


def test_replay_and_reorder_within_the_window() -> None:
    party, key = make_party(), make_ingest()
    ring = KeyRing([key])
    window = ReplayWindow(size=8)
    for seq in [5, 3, 4, 9]:  # out of order but within the window
        verified = _open(_seal(party, key, seq=seq), ring, party.record, replay=window)
        window = window.accept(verified.payload.seq)
    for seq in [5, 3, 9]:  # a captured envelope sent again
        assert _reason(_seal(party, key, seq=seq), ring, party.record, replay=window) is R.REPLAY
    assert _open(_seal(party, key, seq=2), ring, party.record, replay=window).payload.seq == 2
    # Below the window nothing can be told apart from a replay: refused.
    assert _reason(_seal(party, key, seq=1), ring, party.record, replay=window) is R.REPLAY


def test_malformed_sections_from_a_genuine_sender_are_malformed() -> None:
    party, key = make_party(), make_ingest()
    good = Payload.build(
        device_id=DEVICE_ID, seq=1, ts=T0_MS, rcpt=key.kid, observations=[{"id": "x"}]
    )
    for obs_section, raw_section in [
        (b"\xff", good.raw_section),
        (cbor.encode({"not": "a list"}), good.raw_section),
        (cbor.encode([1, 2]), good.raw_section),
        (cbor.encode([{}]), good.raw_section),
        (good.obs_section + b"\x00", good.raw_section),
        (good.obs_section, cbor.encode([{"uuid": "2A35", "t": -1, "b": b""}])),
        (good.obs_section, cbor.encode([{"uuid": "2A35", "t": 1}])),
    ]:
        payload = Payload(
            device_id=DEVICE_ID,
            seq=1,
            ts=T0_MS,
            rcpt=key.kid,
            obs_section=obs_section,
            raw_section=raw_section,
        )
        signed = cose.sign1(party.signer.key, kid=party.signer.kid, payload=payload.encode())
        data = encrypt_signed(signed, key.recipient)
        assert _reason(data, KeyRing([key]), party.record) is R.MALFORMED


def test_payload_header_outside_the_shape_is_malformed() -> None:
    party, key = make_party(), make_ingest()
    base = Payload.build(device_id=DEVICE_ID, seq=1, ts=T0_MS, rcpt=key.kid, observations=[])
    changes: list[dict[str, Any]] = [
        {"v": 2},
        {"seq": -1},
        {"seq": "1"},
        {"ts": True},
        {"dev": "6F1D2C3B-4A59-4E6F-8A7B-9C0D1E2F3A4B"},
        {"rcpt": "kid"},
        {"obs": []},
        {"phd": {"nested": {"a": 1}}},
        {"extra": 1},
    ]
    for change in changes:
        fields: dict[str, Any] = {**base.to_cbor(), **change}
        signed = cose.sign1(party.signer.key, kid=party.signer.kid, payload=cbor.encode(fields))
        data = encrypt_signed(signed, key.recipient)
        assert _reason(data, KeyRing([key]), party.record) is R.MALFORMED, change


def test_seal_payload_refuses_mismatched_identities() -> None:
    party, key = make_party(), make_ingest()
    payload = Payload.build(
        device_id=DEVICE_ID, seq=1, ts=T0_MS, rcpt=b"\x09" * 16, observations=[]
    )
    with pytest.raises(ValueError, match="rcpt"):
        seal_payload(payload, signer=party.signer, recipient=key.recipient)
    with pytest.raises(ValueError, match="UUID"):
        DeviceSigner(device_id="not-a-uuid", kid=b"\x00" * 32, key=party.signer.key)
    with pytest.raises(ValueError, match="raw b"):
        RawRecord(uuid="2A35", t=0, b=b"\x00" * 513)


# --------------------------------------------------------------------------- replay window


@given(st.lists(st.integers(0, 200), max_size=60), st.integers(1, 40))
@settings(max_examples=200)
def test_replay_window_matches_a_set_model(seqs: list[int], size: int) -> None:
    window = ReplayWindow(size=size)
    accepted: set[int] = set()
    for seq in seqs:
        highest = max(accepted, default=-1)
        verdict = window.verdict(seq)
        if seq in accepted:
            assert verdict.value in {"seen", "too_old"}
        elif seq <= highest - size:
            assert verdict.value == "too_old"
        else:
            assert verdict.value == "fresh"
            window = window.accept(seq)
            accepted.add(seq)
        # The persisted fields always rebuild an equal, valid window.
        assert ReplayWindow(highest=window.highest, bitmap=window.bitmap, size=size) == window


def test_replay_window_refuses_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="bitmap"):
        ReplayWindow(highest=5, bitmap=0)
    with pytest.raises(ValueError, match="wider"):
        ReplayWindow(highest=5, bitmap=1 << 9, size=8)
    with pytest.raises(ValueError, match="not fresh"):
        ReplayWindow().accept(0).accept(0)


# --------------------------------------------------------------------------- fuzzing


_FUZZ_PARTY = make_party()
_FUZZ_KEY = make_ingest()
_FUZZ_RING = KeyRing([_FUZZ_KEY])
_FUZZ_VALID = _seal(_FUZZ_PARTY, _FUZZ_KEY, n=1)


def _open_or_reason(data: bytes) -> RejectReason | None:
    try:
        _open(data, _FUZZ_RING, _FUZZ_PARTY.record)
    except EnvelopeError as exc:
        return RejectReason(exc.reason)  # a public reason code, or ValueError fails the test
    return None


@given(st.binary(max_size=400))
@settings(max_examples=400)
def test_fuzz_any_bytes_give_a_value_or_an_envelope_error(data: bytes) -> None:
    assert _open_or_reason(data) is not None  # random bytes never authenticate


@given(st.data())
@settings(max_examples=300)
def test_fuzz_mutated_envelopes_are_refused_with_a_reason(data: st.DataObject) -> None:
    mutated = bytearray(_FUZZ_VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    candidate = bytes(mutated[:cut]) if data.draw(st.booleans()) else bytes(mutated)
    if candidate == _FUZZ_VALID:
        assert _open_or_reason(candidate) is None
    else:
        assert _open_or_reason(candidate) is not None


# --------------------------------------------------------------------------- fast paths
# The framing is assembled from parts when sealing and read directly when opening; the
# generic encoder and the strict parser are their oracles.


def _frame_outcome(parse: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(data)
    except EnvelopeError as exc:
        return "refused", exc.reason


@given(st.data())
@settings(max_examples=400)
def test_frame_fast_path_agrees_with_the_strict_parser(data: st.DataObject) -> None:
    kid = data.draw(st.binary(min_size=1, max_size=envelope.MAX_KID + 8))
    body = data.draw(st.binary(min_size=40, max_size=300))
    mutated = bytearray(cbor.encode([1, kid, body]))
    for _ in range(data.draw(st.integers(0, 3))):
        index = data.draw(st.one_of(st.integers(0, 40), st.integers(0, len(mutated) - 1)))
        if index < len(mutated):
            mutated[index] = data.draw(st.integers(0, 255))
    # Truncated or extended (trailing bytes) about as often as left at full length.
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(mutated))))
    candidate = bytes(mutated[:cut]) + data.draw(st.binary(max_size=2))
    assert _frame_outcome(envelope._parse_frame, candidate) == _frame_outcome(
        envelope._parse_frame_strict, candidate
    )


@pytest.mark.parametrize("size", [0, 200, 300, 70_000])
def test_assembled_framing_is_the_generic_encoding(size: int) -> None:
    key = make_ingest()
    signed = bytes(i % 253 for i in range(size))
    if size > MAX_ENVELOPE_BYTES:
        with pytest.raises(EnvelopeError) as info:
            encrypt_signed(signed, key.recipient)
        assert info.value.reason is R.TOO_LARGE
        return
    framed = encrypt_signed(signed, key.recipient)
    frame = cbor.decode(framed)
    assert isinstance(frame, list)
    assert cbor.encode(frame) == framed
    version, kid, sealed = frame
    assert (version, kid) == (1, key.kid)
    assert isinstance(sealed, bytes)
    assert crypto.hpke_open(key.private_key, sealed, info=b"phd-envelope-v1/" + key.kid) == signed


def _sample_payload(seq: int, ts: int) -> bytes:
    return Payload.build(
        device_id=DEVICE_ID,
        seq=seq,
        ts=ts,
        rcpt=b"\x01" * 16,
        observations=sample_observations(2),
        raw=sample_raw(1),
        phd=SAMPLE_PHD,
    ).encode()


def _payload_with_phd(phd: dict[str, Any], seq: int = 7) -> bytes:
    return Payload.build(
        device_id=DEVICE_ID,
        seq=seq,
        ts=T0_MS,
        rcpt=b"\x01" * 16,
        observations=sample_observations(1),
        raw=sample_raw(1),
        phd=phd,
    ).encode()


@pytest.mark.parametrize(
    "phd",
    [
        SAMPLE_PHD,
        {"model": "craw"},  # the raw key's bytes inside the map: the memo must not cut there
        {"craw": 1, "model": "x-craw-y"},
        {},
    ],
)
def test_phd_memo_gives_the_strict_value_and_a_private_copy(phd: dict[str, Any]) -> None:
    first = Payload.decode(_payload_with_phd(phd, seq=1))
    again = Payload.decode(_payload_with_phd(phd, seq=2))  # the memo's turn, if cached
    strict = cbor.decode(_payload_with_phd(phd, seq=2), max_depth=2, tags=frozenset())
    assert isinstance(strict, dict)
    assert first.phd == again.phd == strict["phd"] == phd
    assert again.encode() == _payload_with_phd(phd, seq=2)
    # A caller changing its map changes nobody else's.
    assert isinstance(again.phd, dict)
    again.phd["model"] = "changed"
    assert Payload.decode(_payload_with_phd(phd, seq=3)).phd == phd


def test_phd_map_outside_the_rules_is_refused_every_time_and_never_memoised() -> None:
    longest = "a" * envelope.MAX_TEXT
    good = _payload_with_phd({"model": longest})
    text = cbor.encode(longest)
    too_long = good.replace(text, cbor.encode(longest + "a"))  # one character over the bound
    assert too_long != good
    for _ in range(2):  # the second arrival must not find it memoised as valid
        with pytest.raises(EnvelopeError) as refused:
            Payload.decode(too_long)
        assert refused.value.reason is RejectReason.MALFORMED
    assert not any(longest + "a" in m.values() for m in envelope._PHD_CACHE.values())


def test_payload_built_from_the_layout_still_refuses_what_the_constructor_refuses() -> None:
    good = _payload_with_phd(SAMPLE_PHD)
    # The layout is intact but the device id is not a canonical UUID (upper case): refused.
    bad_dev = good.replace(DEVICE_ID.encode(), DEVICE_ID.upper().encode())
    assert envelope._decode_payload_fast(bad_dev) is not None  # the layout path reads it
    with pytest.raises(EnvelopeError) as refused:
        Payload.decode(bad_dev)
    assert refused.value.reason is RejectReason.MALFORMED


@given(st.data())
@settings(max_examples=400)
def test_payload_fast_path_agrees_with_the_strict_decoder(data: st.DataObject) -> None:
    seq = data.draw(st.one_of(st.integers(0, 30), st.integers(0, envelope.MAX_SEQ)))
    mutated = bytearray(_sample_payload(seq, data.draw(st.integers(0, 2**40))))
    for _ in range(data.draw(st.integers(0, 3))):
        index = data.draw(st.one_of(st.integers(0, 80), st.integers(0, len(mutated) - 1)))
        if index < len(mutated):
            mutated[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(mutated))))
    candidate = bytes(mutated[:cut]) + data.draw(st.binary(max_size=2))
    fast = envelope._decode_payload_fast(candidate)
    try:
        strict: Any = cbor.decode(candidate, max_depth=2, tags=frozenset())
    except cbor.CborError:
        strict = None
    if fast is not None:  # the fast path may decline, never disagree
        assert fast == strict
        assert [type(v) for v in fast.values()] == [type(v) for v in strict.values()]


def test_payload_fast_path_reads_every_valid_payload() -> None:
    for seq, ts in [(0, 0), (23, 24), (24, 2**32), (2**63 - 1, 2**63 - 1)]:
        encoded = _sample_payload(seq, ts)
        assert envelope._decode_payload_fast(encoded) == cbor.decode(
            encoded, max_depth=2, tags=frozenset()
        )
        assert Payload.decode(encoded).encode() == encoded


def test_payload_fast_path_declines_every_retyped_value() -> None:
    # Each value's head given every other major type (same argument): the fast path must
    # decline or agree with the strict decoder, never read the value as its usual type.
    encoded = _sample_payload(30, T0_MS)
    heads = []
    pos = 1
    for key in envelope._PAYLOAD_ORDER:
        pos += len(cbor.encode(key))
        heads.append(pos)
        _value, pos = cbor.decode_item(encoded, pos, max_depth=1, tags=frozenset())
    assert pos == len(encoded)
    for at in heads:
        for major in range(8):
            candidate = bytearray(encoded)
            candidate[at] = major << 5 | candidate[at] & 0x1F
            fast = envelope._decode_payload_fast(bytes(candidate))
            if fast is None:
                continue
            assert fast == cbor.decode(bytes(candidate), max_depth=2, tags=frozenset())
