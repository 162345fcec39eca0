"""No PHI in what ingest writes outside the encrypted columns: logs, audit entries, metrics.

Ingest's outcomes (stored, duplicate, replay, and refusals before and after decryption and
after verification) are driven for a patient whose identifying data and readings are
distinctive strings, with every logger at DEBUG (SQLAlchemy's statements and rows included);
then none of those strings may appear in any log record, audit entry or metric sample.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from prometheus_client import generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from hospital_server.ingest.process import process_envelope
from hospital_server.models import AuditEvent, ConsentKind
from hospital_server.patients import record_consent
from phd_protocol import crypto
from phd_protocol.envelope import DeviceSigner
from phd_protocol.wire import AckStatus
from tests.server.ingest_world import RAW_BP, World, bp, temperature

GW = "gw-1"
NAME, MRN, CONTACT, SERIAL = "Zebulon Quintavalle", "MRN-7731-SENTINEL", "zeb@q.example", "SN-4Q7Z"
SYSTOLIC, DIASTOLIC, TEMPERATURE = "173.4", "97.3", "39.87"
SECRETS = (NAME, MRN, CONTACT, SERIAL, SYSTOLIC, DIASTOLIC, TEMPERATURE, RAW_BP.hex())


def test_no_identifying_data_or_value_in_logs_audit_or_metrics(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger; and SQLAlchemy's (WARNING by default),
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # so its statements and rows too
    device = world.enroll(mrn=MRN, name=NAME, contact=CONTACT, serial=SERIAL)
    readings = [bp(device, SYSTOLIC, DIASTOLIC), temperature(device, Decimal(TEMPERATURE))]

    def one(envelope: bytes) -> AckStatus:
        with world.ctx.sessions() as s:
            return process_envelope(world.ingestor, s, envelope, GW).status

    stored = world.seal(device, readings, seq=1)
    assert one(stored) is AckStatus.STORED
    assert one(stored) is AckStatus.DUPLICATE
    assert one(world.seal(device, [bp(device, SYSTOLIC, "61")], seq=1)) is AckStatus.REJECTED
    tampered = bytearray(world.seal(device, readings))
    tampered[-5] ^= 0x40
    assert one(bytes(tampered)) is AckStatus.REJECTED  # decrypt_failed
    real_signer = device.signer
    device.signer = DeviceSigner(
        device_id=device.device_id, kid=real_signer.kid, key=crypto.generate_signing_key()
    )
    assert one(world.seal(device, readings)) is AckStatus.REJECTED  # bad_signature
    device.signer = real_signer
    bad = {"id": "0" * 32, "mdc_code": SYSTOLIC, "unit": CONTACT}
    assert one(world.seal(device, [bad])) is AckStatus.REJECTED  # malformed
    with world.ctx.sessions() as s:
        record_consent(s, device.patient_id, ConsentKind.COLLECTION, granted=False, actor="a")
        s.commit()
    assert one(world.seal(device, readings)) is AckStatus.REJECTED  # not_enrolled

    with world.ctx.sessions() as s:
        audit = [(e.subject or "") + (e.detail or "") for e in s.exec(select(AuditEvent))]
    metrics = generate_latest(world.ctx.metrics.registry).decode()
    assert "INSERT INTO" in caplog.text, "statements were not logged: nothing was checked"
    assert any(e.event_type == "ingest.rejected" for e in _events(world))
    for secret in SECRETS:
        assert secret not in caplog.text, f"log carries {secret!r}"
        assert not any(secret in entry for entry in audit), f"audit carries {secret!r}"
        assert secret not in metrics, f"metrics carry {secret!r}"


def _events(world: World) -> list[AuditEvent]:
    with world.ctx.sessions() as s:
        return list(s.exec(select(AuditEvent)))


def test_database_errors_carry_no_bound_values(world: World) -> None:
    # A driver error's text normally lists the statement's parameters; the engines hide them,
    # so an error logged anywhere (a traceback, uvicorn's log) does not carry them. PostgreSQL's
    # own DETAIL line can still quote the row a constraint refused: only ids, codes, times,
    # MACs and ciphertext ever reach SQL (docs/SECURITY.md), so that is all it can quote.
    with world.ctx.sessions() as s, pytest.raises(DBAPIError) as failed:
        s.connection().execute(text("INSERT INTO quarantine (digest) VALUES (:d)"), {"d": MRN})
    message = str(failed.value)
    assert "quarantine" in message
    assert "[SQL parameters hidden due to hide_parameters=True]" in message
    outside_detail = [line for line in message.splitlines() if not line.startswith("DETAIL:")]
    assert not any(MRN in line for line in outside_detail)
