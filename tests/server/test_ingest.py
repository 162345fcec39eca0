"""Ingest through the plain processing function, on SQLite and PostgreSQL.

Every public rejection reason is produced by a real envelope (real keys, real certificates)
and checked for: its reason, its quarantine row holding the sealed bytes, its audit event
(ids only) and its metric. Idempotence: redelivery, re-seal, re-download, crash before ack.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, text
from sqlmodel import col, select

from hospital_server.db import IntegrityError, make_engine, make_session_factory
from hospital_server.devices import revoke_device
from hospital_server.fieldcrypt import content_mac, content_mac_key, decrypt_field
from hospital_server.gateways import revoke_gateway
from hospital_server.ingest.process import process_envelope
from hospital_server.models import (
    AuditEvent,
    ConsentKind,
    Credential,
    IngestedEnvelope,
    Observation,
    Quarantine,
)
from hospital_server.patients import record_consent
from hospital_server.records import RecordError, open_envelope_record, open_observation
from hospital_server.security import certificate_der_to_pem
from phd_protocol import crypto
from phd_protocol.envelope import DeviceSigner, RecipientKey
from phd_protocol.errors import RejectReason
from phd_protocol.pki import certificate_public_key, load_certificate
from phd_protocol.sfloat import SpecialValue
from phd_protocol.wire import AckStatus, EnvelopeResult, UplinkBatch
from tests.server.ingest_world import RAW_BP, World, bp, temperature

GW = "gw-1"


def _count(world: World, model: type) -> int:
    with world.ctx.sessions() as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def _one(world: World, envelope: bytes, gateway: str = GW) -> EnvelopeResult:
    with world.ctx.sessions() as s:
        return process_envelope(world.ingestor, s, envelope, gateway)


def _assert_rejected(world: World, envelope: bytes, reason: RejectReason) -> None:
    before = world.ctx.metrics.rejected.labels(reason=reason.value)._value.get()
    stored_before = _count(world, Observation)
    result = _one(world, envelope)
    assert result == EnvelopeResult.rejected(reason, permanent=True)
    with world.ctx.sessions() as s:
        q = s.exec(select(Quarantine).where(Quarantine.digest == crypto.sha256(envelope).hex()))
        row = q.one()
        events = list(s.exec(select(AuditEvent).where(AuditEvent.event_type == "ingest.rejected")))
    assert row.reason == reason.value
    assert row.sealed == envelope
    assert row.gateway_id == GW
    detail = [json.loads(e.detail) for e in events]
    assert {"reason": reason.value, "gateway": GW}.items() <= detail[-1].items()
    after = world.ctx.metrics.rejected.labels(reason=reason.value)._value.get()
    assert after == before + 1
    assert _count(world, Observation) == stored_before  # nothing of it was stored


# ---------------------------------------------------------------- the happy path


def test_envelope_is_stored_encrypted_and_readable_with_the_patient_key(world: World) -> None:
    device = world.enroll(mrn="M-1")
    reading = bp(device, "128", "82")
    result = _one(world, world.seal(device, [reading]))
    assert result == EnvelopeResult.stored()
    with world.ctx.sessions() as s:
        obs = s.exec(select(Observation)).one()
        env = s.exec(select(IngestedEnvelope)).one()
        key = world.ctx.keys.get(s, device.patient_id)
    assert (obs.patient_id, obs.device_id, obs.quality) == (
        device.patient_id,
        device.device_id,
        "ok",
    )
    assert env.seq == device.seq
    assert env.gateway_id == GW
    assert b"128" not in env.signed_ct
    record = open_envelope_record(
        key, env.signed_ct, envelope_id=env.id, patient_id=device.patient_id
    )
    assert record.observations()[obs.item] == reading  # the wire dict as the device signed it
    reopened = open_observation(
        key, record, item=obs.item, device_id=device.device_id, content_id=obs.content_id
    )
    assert [c.value for c in reopened.components] == [Decimal(128), Decimal(82)]
    assert record.raw_records()[0].b == RAW_BP
    assert record.payload.phd == {"model": "BP-1"}
    assert record.payload.seq == env.seq
    assert obs.content_id == content_mac(
        content_mac_key(key), device_id=device.device_id, content_id=reading["id"]
    )
    # The stored record still carries the device's signature: it verifies against the
    # credential's certificate, and a flipped payload byte would not.
    with world.ctx.sessions() as s:
        cred = s.exec(select(Credential).where(Credential.device_id == device.device_id)).one()
    cert_key = certificate_public_key(load_certificate(certificate_der_to_pem(cred.cert_der)))
    record.verify(cert_key)
    last = record.message.payload[-1] ^ 1  # flipped: a fixed byte may equal the original
    forged = dataclasses.replace(
        record.message, payload=record.message.payload[:-1] + bytes([last])
    )
    with pytest.raises(crypto.CryptoError):
        dataclasses.replace(record, message=forged).verify(cert_key)
    # A record ciphertext moved to another row (here: an observation's id) does not decrypt.
    with pytest.raises(Exception, match="does not decrypt"):
        decrypt_field(
            key,
            env.signed_ct,
            table="ingested_envelope",
            column="signed",
            row_id=obs.id,
            patient_id=device.patient_id,
        )
    # A row pointed at a reading that is not its own is refused.
    with pytest.raises(RecordError, match="does not match"):
        open_observation(
            key, record, item=obs.item, device_id=device.device_id, content_id="0" * 64
        )
    assert world.ctx.metrics.envelopes.labels(outcome="stored")._value.get() == 1
    assert world.ctx.metrics.latency._sum.get() >= 0


def test_same_envelope_three_times_is_stored_once(world: World) -> None:
    device = world.enroll(mrn="M-2")
    envelope = world.seal(device)
    results = [_one(world, envelope) for _ in range(3)]  # QoS 1 redelivery, retry, replay
    assert [r.status for r in results] == [
        AckStatus.STORED,
        AckStatus.DUPLICATE,
        AckStatus.DUPLICATE,
    ]
    assert _count(world, IngestedEnvelope) == 1
    assert _count(world, Observation) == 1
    assert _count(world, Quarantine) == 0


def test_re_sealed_copy_of_the_same_signed_batch_is_a_duplicate(world: World) -> None:
    device = world.enroll(mrn="M-3")
    at = datetime.now(UTC).replace(microsecond=0)
    first = world.seal(device, [bp(device)], seq=7, ts=at)
    second = world.seal(device, [bp(device)], seq=7, ts=at)
    assert first != second  # fresh HPKE encapsulation each time
    assert _one(world, first).status is AckStatus.STORED
    assert _one(world, second).status is AckStatus.DUPLICATE
    assert _count(world, IngestedEnvelope) == 1


def test_re_downloaded_reading_with_a_new_seq_is_stored_once(world: World) -> None:
    device = world.enroll(mrn="M-4")
    reading = bp(device, "140", "90")
    assert _one(world, world.seal(device, [reading])).status is AckStatus.STORED
    # The agent was reinstalled and fetched the stored records again: new seq, same reading,
    # plus one genuinely new reading that merely looks alike (other time).
    later = bp(device, "140", "90", at=datetime(2026, 11, 2, 8, 30, tzinfo=UTC))
    assert _one(world, world.seal(device, [reading, later])).status is AckStatus.STORED
    assert _one(world, world.seal(device, [reading])).status is AckStatus.DUPLICATE
    assert _count(world, IngestedEnvelope) == 3  # every seq is consumed
    assert _count(world, Observation) == 2


def test_stored_content_key_is_keyed_so_values_cannot_be_recovered_by_hashing(
    world: World,
) -> None:
    device = world.enroll(mrn="M-11")
    other = world.enroll(mrn="M-12")
    reading = bp(device, "141", "87")
    assert _one(world, world.seal(device, [reading])).status is AckStatus.STORED
    assert _one(world, world.seal(other, [bp(other, "141", "87")])).status is AckStatus.STORED
    with world.ctx.sessions() as s:
        stored = s.exec(select(Observation).where(Observation.device_id == device.device_id)).one()
        theirs = s.exec(select(Observation).where(Observation.device_id == other.device_id)).one()
        key = world.ctx.keys.get(s, device.patient_id)
    # The attack on a stolen database: hash every plausible blood pressure for this device
    # and time, and look the stored column up. It works on raw content ids...
    guesses = {
        bp(device, str(sys_), str(dia))["id"]: (sys_, dia)
        for sys_ in range(80, 200)
        for dia in range(50, 120)
    }
    assert guesses[reading["id"]] == (141, 87)
    # ...and finds nothing in what is stored: a MAC under a key the database does not hold.
    assert stored.content_id not in guesses
    assert reading["id"] not in stored.content_id
    assert len(stored.content_id) == 64
    assert stored.content_id == content_mac(
        content_mac_key(key), device_id=device.device_id, content_id=reading["id"]
    )
    assert theirs.content_id != stored.content_id  # per-patient key: no linking across patients
    # Idempotence still holds on the keyed column: the same reading re-sent under a new seq
    # (a re-download) is not stored again, and the database constraint refuses a copy.
    assert _one(world, world.seal(device, [reading])).status is AckStatus.DUPLICATE
    assert _count(world, Observation) == 2
    with world.ctx.sessions() as s:
        s.add(Observation(**{**stored.model_dump(), "id": "00000000-0000-4000-8000-00000000000a"}))
        with pytest.raises(IntegrityError):
            s.commit()


def test_batch_with_the_same_envelope_twice(world: World) -> None:
    device = world.enroll(mrn="M-5")
    envelope = world.seal(device)
    with world.ctx.sessions() as s:
        results = world.ingestor.process(s, GW, [envelope, envelope])
    assert [r.status for r in results] == [AckStatus.STORED, AckStatus.DUPLICATE]
    assert _count(world, Observation) == 1


def test_crash_between_commit_and_ack_then_redelivery_stores_nothing_twice(
    world: World,
) -> None:
    device = world.enroll(mrn="M-6")
    batch = [world.seal(device, [temperature(device, Decimal("36.6"), minute=m)]) for m in range(5)]
    with world.ctx.sessions() as s:
        world.ingestor.process(s, GW, batch)  # committed; the worker dies before acking
    # The broker redelivers the whole batch (QoS 1, no PUBACK) to another worker.
    with world.ctx.sessions() as s:
        again = world.ingestor.process(s, GW, batch)
    assert {r.status for r in again} == {AckStatus.DUPLICATE}
    assert _count(world, IngestedEnvelope) == 5
    assert _count(world, Observation) == 5


def test_two_workers_racing_on_one_batch_store_it_once(world: World) -> None:
    device = world.enroll(mrn="M-7")
    batch = [world.seal(device, [temperature(device, Decimal("37.0"), minute=m)]) for m in range(8)]
    results: list[list[EnvelopeResult]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with world.ctx.sessions() as s:
                results.append(world.ingestor.process(s, GW, batch))
        except BaseException as exc:  # noqa: BLE001 -- surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count(world, Observation) == 8
    for i in range(8):
        statuses = sorted(r[i].status.value for r in results)
        assert statuses in (["duplicate", "stored"], ["duplicate", "duplicate"])
    assert any(r[i].status is AckStatus.STORED for r in results for i in range(8))


# ---------------------------------------------------------------- plausibility, special values


def test_implausible_and_special_values_are_kept_and_flagged(world: World) -> None:
    device = world.enroll(mrn="M-8")
    observations = [
        temperature(device, Decimal("60.1"), minute=1),  # implausible: stored, flagged
        temperature(device, SpecialValue.NAN, minute=2),  # special value, not a number
        temperature(device, Decimal("36.9"), minute=3),
    ]
    assert _one(world, world.seal(device, observations)).status is AckStatus.STORED
    with world.ctx.sessions() as s:
        rows = list(s.exec(select(Observation).order_by(col(Observation.measured_at))))
        key = world.ctx.keys.get(s, device.patient_id)
    assert [r.quality for r in rows] == ["implausible", "special", "ok"]
    with world.ctx.sessions() as s:
        env = s.exec(select(IngestedEnvelope)).one()
    record = open_envelope_record(
        key, env.signed_ct, envelope_id=env.id, patient_id=device.patient_id
    )
    values = [
        open_observation(
            key, record, item=r.item, device_id=device.device_id, content_id=r.content_id
        ).value
        for r in rows
    ]
    # never "fixed", never turned into numbers
    assert values == [Decimal("60.1"), SpecialValue.NAN, Decimal("36.9")]


# ---------------------------------------------------------------- every rejection reason


def test_too_large(world: World) -> None:
    _assert_rejected(world, b"\x83" + b"\x00" * (64 * 1024), RejectReason.TOO_LARGE)


def test_oversize_envelope_inside_a_batch_is_answered_alone(world: World) -> None:
    device = world.enroll(mrn="M-13")
    oversize = b"\x83" + b"\x00" * (64 * 1024)
    first, second = world.seal(device, [bp(device, "131")]), world.seal(device, [bp(device, "132")])
    batch = UplinkBatch.new([first, oversize, second])
    decoded = UplinkBatch.decode(batch.encode())  # the batch itself is within its bounds
    with world.ctx.sessions() as s:
        results = world.ingestor.process(s, GW, decoded.envelopes)
    assert results == [
        EnvelopeResult.stored(),
        EnvelopeResult.rejected(RejectReason.TOO_LARGE, permanent=True),
        EnvelopeResult.stored(),
    ]
    assert _count(world, IngestedEnvelope) == 2
    with world.ctx.sessions() as s:
        row = s.exec(select(Quarantine)).one()
    assert (row.reason, row.size, row.sealed) == ("too_large", len(oversize), oversize)


def test_malformed_framing(world: World) -> None:
    _assert_rejected(world, b"\x01\x02\x03 not cbor", RejectReason.MALFORMED)


def test_unknown_recipient_key(world: World) -> None:
    device = world.enroll(mrn="M-9")
    stranger = RecipientKey(kid=b"\x42" * 16, public_key=crypto.generate_hpke_key().public_key())
    _assert_rejected(
        world, world.seal(device, recipient=stranger), RejectReason.UNKNOWN_RECIPIENT_KEY
    )


def test_decrypt_failed(world: World) -> None:
    device = world.enroll(mrn="M-10")
    envelope = bytearray(world.seal(device))
    envelope[-5] ^= 0x40  # inside the AES-GCM ciphertext/tag
    _assert_rejected(world, bytes(envelope), RejectReason.DECRYPT_FAILED)


def test_bad_signature(world: World) -> None:
    device = world.enroll(mrn="M-11")
    forger = DeviceSigner(
        device_id=device.device_id, kid=device.signer.kid, key=crypto.generate_signing_key()
    )
    device.signer = forger
    _assert_rejected(world, world.seal(device), RejectReason.BAD_SIGNATURE)


def test_unknown_credential(world: World) -> None:
    device = world.enroll(mrn="M-12")
    device.signer = DeviceSigner(
        device_id=device.device_id, kid=b"\x07" * 32, key=device.signer.key
    )
    _assert_rejected(world, world.seal(device), RejectReason.UNKNOWN_CREDENTIAL)


def test_credential_revoked_after_but_not_before_revocation(world: World) -> None:
    device = world.enroll(mrn="M-13")
    before = world.seal(device, ts=datetime.now(UTC) - timedelta(minutes=2))
    with world.ctx.sessions() as s:
        revoke_device(s, device.device_id, actor="admin")
        s.commit()
    after = world.seal(device)
    _assert_rejected(world, after, RejectReason.CREDENTIAL_REVOKED)
    # Sealed while the credential was good, delivered late: accepted (DESIGN.md section 3).
    assert _one(world, before).status is AckStatus.STORED


def test_credential_expired(world: World) -> None:
    device = world.enroll(mrn="M-14")
    far = datetime.now(UTC) + timedelta(days=3 * 365)
    _assert_rejected(world, world.seal(device, ts=far), RejectReason.CREDENTIAL_EXPIRED)


def test_not_enrolled_without_collection_consent(world: World) -> None:
    device = world.enroll(mrn="M-15", consent=False)
    _assert_rejected(world, world.seal(device), RejectReason.NOT_ENROLLED)


def test_not_enrolled_after_consent_is_withdrawn(world: World) -> None:
    device = world.enroll(mrn="M-16")
    assert _one(world, world.seal(device)).status is AckStatus.STORED
    with world.ctx.sessions() as s:
        record_consent(s, device.patient_id, ConsentKind.COLLECTION, granted=False, actor="a")
        s.commit()
    _assert_rejected(
        world, world.seal(device, [bp(device, "150", "95")]), RejectReason.NOT_ENROLLED
    )


def test_consent_granted_again_after_withdrawal_lets_readings_in(world: World) -> None:
    # The newest collection record is in force, whatever came before it.
    device = world.enroll(mrn="M-16b")
    with world.ctx.sessions() as s:
        record_consent(s, device.patient_id, ConsentKind.COLLECTION, granted=False, actor="a")
        s.commit()
    _assert_rejected(world, world.seal(device, [bp(device, "151")]), RejectReason.NOT_ENROLLED)
    with world.ctx.sessions() as s:
        record_consent(s, device.patient_id, ConsentKind.COLLECTION, granted=True, actor="a")
        s.commit()
    assert _one(world, world.seal(device, [bp(device, "152")])).status is AckStatus.STORED


def test_replay_of_a_seq_with_different_content(world: World) -> None:
    device = world.enroll(mrn="M-17")
    assert _one(world, world.seal(device, [bp(device, "120", "80")], seq=42)).status is (
        AckStatus.STORED
    )
    forged_order = world.seal(device, [bp(device, "180", "120")], seq=42)
    _assert_rejected(world, forged_order, RejectReason.REPLAY)
    assert _count(world, Observation) == 1


def test_clock_skew(world: World) -> None:
    device = world.enroll(mrn="M-18")
    ahead = datetime.now(UTC) + timedelta(hours=2)
    _assert_rejected(world, world.seal(device, ts=ahead), RejectReason.CLOCK_SKEW)


def test_gateway_revoked(world: World) -> None:
    device = world.enroll(mrn="M-19")
    with world.ctx.sessions() as s:
        revoke_gateway(s, GW, actor="admin")
        s.commit()
    _assert_rejected(world, world.seal(device), RejectReason.GATEWAY_REVOKED)
    # Another gateway relaying the same device is fine.
    assert _one(world, world.seal(device), gateway="gw-2").status is AckStatus.STORED


def test_gateway_revoked_answers_every_envelope_of_its_batch_as_such(world: World) -> None:
    # Garbage and foreign envelopes from a revoked gateway are refused for the gateway, an
    # oversize one still for its size (the bound is checked first).
    device = world.enroll(mrn="M-19b")
    with world.ctx.sessions() as s:
        revoke_gateway(s, GW, actor="admin")
        s.commit()
    oversize = b"\x83" + b"\x00" * (64 * 1024)
    with world.ctx.sessions() as s:
        results = world.ingestor.process(s, GW, [world.seal(device), b"\x00garbage", oversize])
    revoked = EnvelopeResult.rejected(RejectReason.GATEWAY_REVOKED, permanent=True)
    too_large = EnvelopeResult.rejected(RejectReason.TOO_LARGE, permanent=True)
    assert results == [revoked, revoked, too_large]
    assert _count(world, IngestedEnvelope) == 0


def test_malformed_observations_from_an_authentic_sender(world: World) -> None:
    device = world.enroll(mrn="M-20")
    bad = {"id": "0" * 32, "mdc_code": "not-a-code"}
    _assert_rejected(world, world.seal(device, [bad]), RejectReason.MALFORMED)


def test_rejected_envelope_redelivered_is_quarantined_once(world: World) -> None:
    device = world.enroll(mrn="M-21", consent=False)
    envelope = world.seal(device)
    for _ in range(3):
        assert _one(world, envelope).reason is RejectReason.NOT_ENROLLED
    assert _count(world, Quarantine) == 1
    with world.ctx.sessions() as s:
        events = list(s.exec(select(AuditEvent).where(AuditEvent.event_type == "ingest.rejected")))
    assert len(events) == 1
    # Ids and codes only: no value, no name, no MRN in the audit trail.
    assert events[0].subject == device.device_id
    assert "Test Patient" not in events[0].detail
    assert "M-21" not in events[0].detail


def test_bad_gateway_id_is_refused_before_anything(world: World) -> None:
    with world.ctx.sessions() as s, pytest.raises(ValueError, match="gateway id"):
        world.ingestor.process(s, "../gw", [b"x"])


# ---------------------------------------------------------------- transient database errors


def test_locked_database_answers_retry_later_then_stores(world: World, db_url: str) -> None:
    device = world.enroll(mrn="M-22")
    envelope = world.seal(device)
    impatient = make_engine(db_url, lock_timeout_ms=200)
    blocker = make_engine(db_url)
    try:
        with blocker.connect() as conn:
            if blocker.dialect.name == "sqlite":
                conn.exec_driver_sql(
                    "INSERT INTO gateway (id, status, created_at) "
                    "VALUES ('gw-x', 'active', '2026-01-01 00:00:00')"
                )
            else:
                conn.execute(text("LOCK TABLE ingested_envelope IN EXCLUSIVE MODE"))
            # The write lock is held until this block ends without commit.
            with make_session_factory(impatient)() as s:
                result = world.ingestor.process(s, GW, [envelope])
            assert result == [EnvelopeResult.retry_later()]
            conn.rollback()
        assert _count(world, Observation) == 0
        assert _one(world, envelope).status is AckStatus.STORED
    finally:
        impatient.dispose()
        blocker.dispose()
