"""Clinical reads: care teams, break-glass, decryption and integrity of what is shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from hospital_server.access import (
    Access,
    AccessDenied,
    add_to_care_team,
    authorize_read,
    break_glass_register,
    declare_break_glass,
    remove_from_care_team,
)
from hospital_server.clinical import (
    ReadingQuery,
    RecordIntegrityError,
    observation_patient,
    read_observation,
    read_observations,
    reading_wire,
)
from hospital_server.fieldcrypt import PatientKeys
from hospital_server.ingest.process import process_envelope
from hospital_server.models import BreakGlass, IngestedEnvelope, StaffUser
from hospital_server.models import Observation as ObservationRow
from hospital_server.staff import create_staff_user
from phd_protocol import mdc
from tests.server.conftest import audit_entries
from tests.server.ingest_world import EnrolledDevice, World, bp, temperature

PASSWORD = "correct horse battery staple"
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _user(world: World, name: str, role: str) -> str:
    with world.ctx.sessions() as s:
        user = create_staff_user(s, name, PASSWORD, role=role, actor="test")
        s.commit()
        return user.id


def _store(world: World, device: EnrolledDevice, observations: list[dict[str, object]]) -> None:
    with world.ctx.sessions() as s:
        result = process_envelope(world.ingestor, s, world.seal(device, observations), "gw-1")
    assert result.status.value == "stored"


def _authorize(world: World, user_id: str, role: str, patient_id: str) -> Access:
    with world.ctx.sessions() as s:
        try:
            return authorize_read(s, user_id=user_id, role=role, patient_id=patient_id).access
        finally:
            s.commit()  # a denial is audited even though it raises


def _read(world: World, patient_id: str, query: ReadingQuery | None = None) -> list[dict[str, Any]]:
    with world.ctx.sessions() as s:
        readings, _more = read_observations(s, world.ctx.keys, patient_id, query or ReadingQuery())
    return [reading_wire(r) for r in readings]


@pytest.fixture
def ward(world: World) -> tuple[World, EnrolledDevice, str]:
    """One patient with five readings (3 BP, 2 temperatures) and a clinician on the care team."""
    device = world.enroll(mrn="C-1")
    _store(
        world,
        device,
        [bp(device, str(120 + i), "80", at=T0 + timedelta(hours=i)) for i in range(3)],
    )
    _store(world, device, [temperature(device, Decimal("36.60"), minute=m) for m in (5, 6)])
    doctor = _user(world, "dr-care", "clinician")
    with world.ctx.sessions() as s:
        assert add_to_care_team(s, patient_id=device.patient_id, user_id=doctor, actor="admin-1")
        s.commit()
    return world, device, doctor


def test_care_team_member_reads_decrypted_readings_newest_first(
    ward: tuple[World, EnrolledDevice, str],
) -> None:
    world, device, doctor = ward
    assert _authorize(world, doctor, "clinician", device.patient_id) is Access.CARE_TEAM
    readings = _read(world, device.patient_id)
    assert len(readings) == 5
    times = [r["time"] for r in readings]
    assert times == sorted(times, reverse=True)
    bps = [r for r in readings if r["mdc_code"] == mdc.PRESS_BLD_NONINV.code]
    assert [c["value"] for c in bps[0]["components"]] == [Decimal(122), Decimal(80)]
    temps = [r for r in readings if r["mdc_code"] == mdc.TEMP_BODY.code]
    assert {str(t["value"]) for t in temps} == {"36.60"}  # precision kept
    assert all(r["patient_id"] == device.patient_id for r in readings)
    assert all(r["quality"] == "ok" for r in readings)


def test_query_by_code_time_and_pages(ward: tuple[World, EnrolledDevice, str]) -> None:
    world, device, _doctor = ward
    only_bp = ReadingQuery(mdc_codes=frozenset({mdc.PRESS_BLD_NONINV.code}))
    assert len(_read(world, device.patient_id, only_bp)) == 3
    window = ReadingQuery(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=1, minutes=5))
    assert [r["time"] for r in _read(world, device.patient_id, window)] == ["2026-11-01T09:00:00Z"]
    with world.ctx.sessions() as s:
        first, more = read_observations(s, world.ctx.keys, device.patient_id, ReadingQuery(limit=2))
        rest, more_after = read_observations(
            s, world.ctx.keys, device.patient_id, ReadingQuery(limit=2, offset=4)
        )
    assert (len(first), more, len(rest), more_after) == (2, True, 1, False)
    with pytest.raises(ValueError, match="limit"):
        ReadingQuery(limit=0)
    with pytest.raises(ValueError, match="time zone"):
        ReadingQuery(since=datetime(2026, 1, 1))  # noqa: DTZ001 -- the point of the test


def test_one_reading_by_id_only_for_its_own_patient(
    ward: tuple[World, EnrolledDevice, str],
) -> None:
    world, device, _doctor = ward
    other = world.enroll(mrn="C-2")
    with world.ctx.sessions() as s:
        row = s.exec(select(ObservationRow)).first()
        assert row is not None
        assert observation_patient(s, row.id) == device.patient_id
        assert observation_patient(s, "no-such-id") is None
        assert read_observation(s, world.ctx.keys, device.patient_id, row.id) is not None
        assert read_observation(s, world.ctx.keys, other.patient_id, row.id) is None


@pytest.mark.parametrize("role", ["admin", "researcher", "auditor"])
def test_roles_that_do_not_give_care_never_read_clinical_data(
    ward: tuple[World, EnrolledDevice, str], role: str
) -> None:
    world, device, _doctor = ward
    user = _user(world, f"u-{role}", role)
    with pytest.raises(AccessDenied) as denied:
        _authorize(world, user, role, device.patient_id)
    assert denied.value.reason == "role_not_permitted"
    assert {
        "actor": user,
        "subject": device.patient_id,
        "reason": "role_not_permitted",
    }.items() <= (audit_entries(world.ctx, "authz.denied")[-1].items())


def test_clinician_outside_the_care_team_is_refused_and_audited(
    ward: tuple[World, EnrolledDevice, str],
) -> None:
    world, device, doctor = ward
    outsider = _user(world, "nurse-out", "nurse")
    with pytest.raises(AccessDenied, match="not_care_team"):
        _authorize(world, outsider, "nurse", device.patient_id)
    # An unknown patient id gets the same answer: no oracle for which ids exist.
    with pytest.raises(AccessDenied, match="not_care_team"):
        _authorize(world, outsider, "nurse", "00000000-0000-4000-8000-000000000000")
    assert len(audit_entries(world.ctx, "authz.denied")) == 2
    # Removal takes effect at once.
    with world.ctx.sessions() as s:
        assert remove_from_care_team(s, patient_id=device.patient_id, user_id=doctor, actor="a")
        assert not remove_from_care_team(s, patient_id=device.patient_id, user_id=doctor, actor="a")
        s.commit()
    with pytest.raises(AccessDenied):
        _authorize(world, doctor, "clinician", device.patient_id)


def test_care_team_only_takes_active_carers(world: World) -> None:
    device = world.enroll(mrn="C-3")
    researcher = _user(world, "res-1", "researcher")
    gone = _user(world, "nurse-gone", "nurse")
    with world.ctx.sessions() as s:
        s.execute(update(StaffUser).where(col(StaffUser.id) == gone).values(active=False))
        for user, code in [(researcher, "role_not_permitted"), (gone, "user_not_found")]:
            with pytest.raises(ValueError, match=code):
                add_to_care_team(s, patient_id=device.patient_id, user_id=user, actor="a")
        with pytest.raises(ValueError, match="patient_not_found"):
            add_to_care_team(s, patient_id="nope", user_id=gone, actor="a")


def test_break_glass_grants_flagged_time_limited_access(
    ward: tuple[World, EnrolledDevice, str],
) -> None:
    world, device, _doctor = ward
    er = _user(world, "er-doc", "clinician")
    reason = "Unconscious in ED, Jane Doe's notes needed"
    now = datetime.now(UTC)
    with world.ctx.sessions() as s:
        grant = declare_break_glass(
            s,
            world.ctx.keys,
            user_id=er,
            role="clinician",
            patient_id=device.patient_id,
            reason=reason,
            duration=timedelta(minutes=30),
            now=now,
        )
        grant_id = grant.id
        s.commit()
    assert _authorize(world, er, "clinician", device.patient_id) is Access.BREAK_GLASS
    event = audit_entries(world.ctx, "breakglass.granted")[-1]
    assert event == {
        "actor": er,
        "subject": device.patient_id,
        "grant": grant_id,
        "minutes": 30,
    }
    # The reason is kept, encrypted, for the auditors' register; never in plaintext at rest.
    with world.ctx.sessions() as s:
        stored = s.exec(select(BreakGlass)).one().reason_ct
        register = break_glass_register(s, world.ctx.keys, since=now - timedelta(minutes=1))
    assert b"Jane" not in stored
    assert [(g.id, g.reason) for g in register] == [(grant_id, reason)]
    # After expiry: refused again.
    with world.ctx.sessions() as s, pytest.raises(AccessDenied, match="not_care_team"):
        authorize_read(
            s,
            user_id=er,
            role="clinician",
            patient_id=device.patient_id,
            now=now + timedelta(minutes=31),
        )


def test_break_glass_bounds(ward: tuple[World, EnrolledDevice, str]) -> None:
    world, device, _doctor = ward
    er = _user(world, "er-2", "nurse")
    admin = _user(world, "adm-2", "admin")

    def declare(user: str, role: str, reason: str, minutes: int) -> object:
        with world.ctx.sessions() as s:
            try:
                return declare_break_glass(
                    s,
                    world.ctx.keys,
                    user_id=user,
                    role=role,
                    patient_id=device.patient_id,
                    reason=reason,
                    duration=timedelta(minutes=minutes),
                )
            finally:
                s.commit()

    with pytest.raises(ValueError, match="reason"):
        declare(er, "nurse", "short", 30)
    with pytest.raises(ValueError, match="duration"):
        declare(er, "nurse", "a long enough reason", 5 * 60)
    with pytest.raises(AccessDenied, match="role_not_permitted"):
        declare(admin, "admin", "a long enough reason", 30)
    with world.ctx.sessions() as s:
        assert s.exec(select(BreakGlass)).all() == []


def test_a_re_pointed_row_is_an_integrity_error_not_a_wrong_value(
    ward: tuple[World, EnrolledDevice, str],
) -> None:
    world, device, _doctor = ward
    with world.ctx.sessions() as s:
        rows = s.exec(select(ObservationRow).order_by(col(ObservationRow.measured_at))).all()
        # Swap the positions two rows point at inside their envelope.
        first, second = (r for r in rows if r.mdc_code == mdc.PRESS_BLD_NONINV.code and r.item < 2)
        s.execute(
            update(ObservationRow)
            .where(col(ObservationRow.id) == first.id)
            .values(item=second.item)
        )
        s.commit()
    with pytest.raises(RecordIntegrityError, match="fails its checks") as error:
        _read(world, device.patient_id)
    assert "120" not in str(error.value)  # ids only


def test_a_ciphertext_moved_between_envelopes_is_an_integrity_error(
    ward: tuple[World, EnrolledDevice, str],
) -> None:
    world, device, _doctor = ward
    with world.ctx.sessions() as s:
        envelopes = s.exec(select(IngestedEnvelope)).all()
        a, b = envelopes[0], envelopes[1]
        s.execute(
            update(IngestedEnvelope)
            .where(col(IngestedEnvelope.id) == a.id)
            .values(signed_ct=b.signed_ct)
        )
        s.commit()
    with pytest.raises(RecordIntegrityError, match="envelope"):
        _read(world, device.patient_id)


def test_a_crypto_shredded_patient_has_nothing_to_read(
    ward: tuple[World, EnrolledDevice, str],
) -> None:
    world, device, _doctor = ward
    keys: PatientKeys = world.ctx.keys
    with world.ctx.sessions() as s:
        keys.destroy(s, device.patient_id)
        s.commit()
    assert _read(world, device.patient_id) == []
