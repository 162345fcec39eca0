"""The token endpoint, refresh rotation, logout, lockout and the staff-user API, attacked
through httpx's ASGITransport on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta

import httpx
import pytest
from sqlmodel import col, select

from hospital_server.auth import login, totp
from hospital_server.auth.errors import LoginRefusedError
from hospital_server.context import ServerContext
from hospital_server.models import AuditEvent, RefreshToken, StaffUser, utcnow
from phd_cli.demo.staff_login import StaffCredentials, StaffLogin, StaffLoginError
from tests.server.conftest import ADMIN, CLINICIAN, totp_secret_for

TOKEN = "/api/v1/auth/token"
USERS_PATH = "/api/v1/users"


def code_for(username: str, *, offset: int = 0) -> str:
    """The user's TOTP code ``offset`` steps from now (the server accepts -1..+1)."""
    return totp.totp(totp_secret_for(username), time.time() + offset * totp.STEP_SECONDS)


async def password_login(
    client: httpx.AsyncClient, username: str, password: str, code: str
) -> httpx.Response:
    form = {"grant_type": "password", "username": username, "password": password, "totp": code}
    return await client.post(TOKEN, data=form)


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await client.post(TOKEN, data=form)


def bearer(body: dict[str, object]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


def audit_events(context: ServerContext, event_type: str) -> list[AuditEvent]:
    with context.sessions() as s:
        return list(
            s.exec(
                select(AuditEvent)
                .where(AuditEvent.event_type == event_type)
                .order_by(col(AuditEvent.id))
            )
        )


def user_row(context: ServerContext, username: str) -> StaffUser:
    with context.sessions() as s:
        return s.exec(select(StaffUser).where(StaffUser.username == username)).one()


def failed_reasons(context: ServerContext) -> list[tuple[str, str]]:
    return [(e.actor, json.loads(e.detail)["reason"]) for e in audit_events(context, "auth.failed")]


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"error": "invalid_grant"}
    assert response.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------ happy path


async def test_login_refresh_logout(client: httpx.AsyncClient, context: ServerContext) -> None:
    r = await password_login(client, *ADMIN, code_for(ADMIN[0]))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 600)
    assert len(body["refresh_token"]) == 43
    users = await client.get("/api/v1/users", headers=bearer(body))
    assert users.status_code == 200

    r2 = await refresh(client, body["refresh_token"])
    assert r2.status_code == 200, r2.text
    rotated = r2.json()
    assert rotated["refresh_token"] != body["refresh_token"]
    assert rotated["access_token"] != body["access_token"]
    assert (await client.get("/api/v1/users", headers=bearer(rotated))).status_code == 200

    out = await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": rotated["refresh_token"]},
        headers=bearer(rotated),
    )
    assert out.status_code == 204
    assert_invalid_grant(await refresh(client, rotated["refresh_token"]))
    again = await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": "x" * 43},
        headers=bearer(rotated),
    )
    assert (again.status_code, again.json()) == (400, {"detail": "unknown_refresh_token"})

    admin = await asyncio.to_thread(user_row, context, ADMIN[0])
    logins = await asyncio.to_thread(audit_events, context, "auth.login")
    assert [(e.actor, json.loads(e.detail)) for e in logins] == [(admin.id, {"grant": "password"})]

    # The token hashes are all that is stored, and the family was revoked by the logout.
    def rows() -> list[RefreshToken]:
        with context.sessions() as s:
            return list(s.exec(select(RefreshToken)))

    stored = await asyncio.to_thread(rows)
    assert len(stored) == 2
    assert len({r.family_id for r in stored}) == 1
    assert all(r.revoked_at is not None for r in stored)
    tokens = {body["refresh_token"], rotated["refresh_token"]}
    assert not {r.token_hash for r in stored} & tokens


# ------------------------------------------------------------------ refused logins


async def test_refused_logins_answer_alike_and_audit_the_reason(
    client: httpx.AsyncClient, context: ServerContext
) -> None:
    good = code_for(ADMIN[0])
    wrong_code = f"{(int(good) + 1) % 1_000_000:06d}"
    answers = [
        await password_login(client, ADMIN[0], "wrong password here", good),
        await password_login(client, ADMIN[0], ADMIN[1], wrong_code),
        await password_login(client, "nobody-here", ADMIN[1], good),
        # The clinician's code is valid for the clinician only.
        await password_login(client, ADMIN[0], ADMIN[1], code_for(CLINICIAN[0])),
    ]
    for r in answers:
        assert_invalid_grant(r)
    assert len({r.content for r in answers}) == 1
    admin = await asyncio.to_thread(user_row, context, ADMIN[0])
    assert await asyncio.to_thread(failed_reasons, context) == [
        (admin.id, "bad_password"),
        (admin.id, "bad_totp"),
        ("unknown", "unknown_user"),
        (admin.id, "bad_totp"),
    ]
    assert admin.failed_logins == 3


async def test_a_totp_code_is_accepted_once(
    client: httpx.AsyncClient, context: ServerContext
) -> None:
    code = code_for(ADMIN[0])
    assert (await password_login(client, *ADMIN, code)).status_code == 200
    assert_invalid_grant(await password_login(client, *ADMIN, code))
    # An older step than the one used is a replay as well.
    assert_invalid_grant(await password_login(client, *ADMIN, code_for(ADMIN[0], offset=-1)))
    # The next step's code is new, and accepted (the window reaches one step ahead).
    assert (await password_login(client, *ADMIN, code_for(ADMIN[0], offset=1))).status_code == 200
    reasons = [reason for _, reason in await asyncio.to_thread(failed_reasons, context)]
    assert reasons == ["totp_reused", "totp_reused"]


def test_lockout_after_five_failures_for_fifteen_minutes(context: ServerContext) -> None:
    secret = totp_secret_for(ADMIN[0])
    start = utcnow()

    def attempt(password: str, at_seconds: float) -> None:
        at = start + timedelta(seconds=at_seconds)
        code = totp.totp(secret, at.timestamp())
        login.password_grant(context, username=ADMIN[0], password=password, code=code, now=at)

    for i in range(5):
        with pytest.raises(LoginRefusedError) as refused:
            attempt("wrong password here", i * 31)
        assert refused.value.reason == "bad_password"
    # Locked: the right password and a fresh code are refused, and say nothing more.
    with pytest.raises(LoginRefusedError) as refused:
        attempt(ADMIN[1], 200)
    assert refused.value.reason == "locked"
    with pytest.raises(LoginRefusedError):
        attempt(ADMIN[1], 14 * 60 + 100)
    admin = user_row(context, ADMIN[0])
    assert admin.locked_until is not None
    assert admin.locked_until == start + timedelta(seconds=4 * 31 + 15 * 60)
    # After the lockout: a fresh start, and the right credentials work.
    grant = login.password_grant(
        context,
        username=ADMIN[0],
        password=ADMIN[1],
        code=totp.totp(secret, (start + timedelta(minutes=20)).timestamp()),
        now=start + timedelta(minutes=20),
    )
    assert grant.user_id == admin.id
    after = user_row(context, ADMIN[0])
    assert (after.failed_logins, after.locked_until) == (0, None)
    details = [json.loads(e.detail) for e in audit_events(context, "auth.failed")]
    assert [d.get("failures") for d in details] == [1, 2, 3, 4, 5, None, None]
    assert [d.get("locked") for d in details] == [False, False, False, False, True, None, None]


def test_a_success_resets_the_failure_count(context: ServerContext) -> None:
    secret = totp_secret_for(ADMIN[0])
    now = utcnow()
    for _ in range(4):
        with pytest.raises(LoginRefusedError):
            login.password_grant(
                context, username=ADMIN[0], password="nope nope nope", code="000000", now=now
            )
    code = totp.totp(secret, now.timestamp())
    login.password_grant(context, username=ADMIN[0], password=ADMIN[1], code=code, now=now)
    assert user_row(context, ADMIN[0]).failed_logins == 0


async def test_inactive_user_is_refused_and_its_tokens_stop_at_once(
    client: httpx.AsyncClient, context: ServerContext, admin_headers: dict[str, str]
) -> None:
    r = await password_login(client, *CLINICIAN, code_for(CLINICIAN[0]))
    assert r.status_code == 200
    session = r.json()
    clinician = await asyncio.to_thread(user_row, context, CLINICIAN[0])
    logout_check = {"refresh_token": session["refresh_token"]}
    d = await client.post(f"/api/v1/users/{clinician.id}/deactivate", headers=admin_headers)
    assert d.status_code == 200
    assert d.json()["active"] is False
    # The access token has not expired, yet it no longer works; nor does the refresh token.
    denied = await client.post("/api/v1/auth/logout", json=logout_check, headers=bearer(session))
    assert (denied.status_code, denied.json()) == (401, {"detail": "invalid_token"})
    assert_invalid_grant(await refresh(client, session["refresh_token"]))
    assert_invalid_grant(await password_login(client, *CLINICIAN, code_for(CLINICIAN[0], offset=1)))
    reasons = await asyncio.to_thread(failed_reasons, context)
    assert reasons == [
        (clinician.id, "inactive"),  # the bearer token
        (clinician.id, "refresh_reuse"),  # its family was revoked by the deactivation
        (clinician.id, "inactive"),  # the password login
    ]


async def test_refresh_token_reuse_revokes_the_whole_family(
    client: httpx.AsyncClient, context: ServerContext
) -> None:
    first = (await password_login(client, *ADMIN, code_for(ADMIN[0]))).json()
    second = (await refresh(client, first["refresh_token"])).json()
    third = (await refresh(client, second["refresh_token"])).json()
    # A thief replays the first token: refused, and the legitimate holder's newest token dies.
    assert_invalid_grant(await refresh(client, first["refresh_token"]))
    assert_invalid_grant(await refresh(client, third["refresh_token"]))
    # Another session of the same user (another family) is untouched.
    other = (await password_login(client, *ADMIN, code_for(ADMIN[0], offset=1))).json()
    assert (await refresh(client, other["refresh_token"])).status_code == 200
    admin = await asyncio.to_thread(user_row, context, ADMIN[0])
    assert await asyncio.to_thread(failed_reasons, context) == [
        (admin.id, "refresh_reuse"),
        (admin.id, "refresh_reuse"),
    ]


def test_refresh_does_not_outlive_the_login(context: ServerContext) -> None:
    """Rotation keeps the family's expiry: a session ends 12 h after the password login."""
    now = utcnow()
    code = totp.totp(totp_secret_for(ADMIN[0]), now.timestamp())
    grant = login.password_grant(context, username=ADMIN[0], password=ADMIN[1], code=code, now=now)
    later = now + timedelta(hours=11)
    grant = login.refresh_grant(context, refresh_token=grant.refresh_token, now=later)
    with pytest.raises(LoginRefusedError) as refused:
        login.refresh_grant(
            context, refresh_token=grant.refresh_token, now=now + timedelta(hours=12, seconds=1)
        )
    assert refused.value.reason == "refresh_expired"
    with pytest.raises(LoginRefusedError) as unknown:
        login.refresh_grant(context, refresh_token="A" * 43, now=later)
    assert unknown.value.reason == "refresh_unknown"


# ------------------------------------------------------------------ input validation


@pytest.mark.parametrize(
    ("content", "content_type", "error"),
    [
        ("", "application/x-www-form-urlencoded", "invalid_request"),
        (
            "grant_type=client_credentials",
            "application/x-www-form-urlencoded",
            "unsupported_grant_type",
        ),
        (
            "grant_type=password&username=admin&password=x",
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        (
            "grant_type=password&username=admin&password=&totp=123456",
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        (
            "grant_type=password&username=admin&username=root&password=xxxxxxxxxxxx&totp=123456",
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        (
            "grant_type=password&username=admin&password=xxxxxxxxxxxx&totp=1234567",
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        ('{"grant_type": "password"}', "application/json", "invalid_request"),
        ("grant_type=refresh_token", "application/x-www-form-urlencoded", "invalid_request"),
        (
            "grant_type=refresh_token&refresh_token=" + "a" * 44,
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        (
            "grant_type=password&password=" + "p" * 5000,
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        ("%ff%fe=1", "application/x-www-form-urlencoded", "invalid_request"),
        (
            "&".join(f"f{i}=1" for i in range(20)),
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
    ],
)
async def test_token_endpoint_refuses_malformed_requests(
    client: httpx.AsyncClient, content: str, content_type: str, error: str
) -> None:
    r = await client.post(TOKEN, content=content, headers={"Content-Type": content_type})
    assert (r.status_code, r.json()) == (400, {"error": error})
    assert r.headers["cache-control"] == "no-store"


async def test_openapi_documents_the_auth_endpoints(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    form = doc["paths"][TOKEN]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in form
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "/.well-known/jwks.json" in doc["paths"]


# ------------------------------------------------------------------ staff users


async def test_user_admin_api(
    client: httpx.AsyncClient,
    context: ServerContext,
    admin_headers: dict[str, str],
    clinician_headers: dict[str, str],
) -> None:
    new = {"username": "nurse-7", "password": "a long nurse password", "role": "nurse"}
    created = await client.post("/api/v1/users", json=new, headers=admin_headers)
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    secret = totp.parse_base32(body["totp_secret"])
    assert body["totp_uri"].startswith("otpauth://totp/PHD%20hospital:nurse-7?secret=")
    assert body["role"] == "nurse"
    assert body["totp_enrolled"] is True

    # The new user logs in with the secret just shown.
    code = totp.totp(secret, time.time())
    r = await password_login(client, "nurse-7", new["password"], code)
    assert r.status_code == 200, r.text
    # A nurse is not an admin.
    assert (await client.get("/api/v1/users", headers=bearer(r.json()))).status_code == 403

    listed = (await client.get("/api/v1/users", headers=admin_headers)).json()
    assert [u["username"] for u in listed] == ["admin", "dr-who", "nurse-7"]
    assert all(
        set(u) == {"id", "username", "role", "active", "created_at", "totp_enrolled", "locked"}
        for u in listed
    )
    assert body["totp_secret"] not in json.dumps(listed)

    dup = await client.post("/api/v1/users", json=new, headers=admin_headers)
    assert (dup.status_code, dup.json()) == (409, {"detail": "duplicate_username"})
    short = await client.post(
        "/api/v1/users",
        json={**new, "username": "nurse-8", "password": "tooshort"},
        headers=admin_headers,
    )
    assert (short.status_code, short.json()) == (422, {"detail": "password_too_short"})
    assert "tooshort" not in short.text
    bad_role = await client.post(
        "/api/v1/users", json={**new, "username": "n9", "role": "root"}, headers=admin_headers
    )
    assert bad_role.status_code == 422
    bad_name = await client.post(
        "/api/v1/users", json={**new, "username": "Nurse Jane"}, headers=admin_headers
    )
    assert bad_name.status_code == 422
    assert new["password"] not in bad_name.text
    refused = await client.post("/api/v1/users", json=new, headers=clinician_headers)
    assert refused.status_code == 403

    # Re-issue: the old secret stops working, the new one works, old sessions are revoked.
    reissued = await client.post(f"/api/v1/users/{body['id']}/totp", headers=admin_headers)
    assert reissued.status_code == 200
    new_secret = totp.parse_base32(reissued.json()["totp_secret"])
    assert new_secret != secret
    assert_invalid_grant(await refresh(client, r.json()["refresh_token"]))
    assert_invalid_grant(
        await password_login(
            client, "nurse-7", new["password"], totp.totp(secret, time.time() + 30)
        )
    )
    ok = await password_login(
        client, "nurse-7", new["password"], totp.totp(new_secret, time.time() + 30)
    )
    assert ok.status_code == 200

    missing = await client.post("/api/v1/users/not-an-id/totp", headers=admin_headers)
    assert (missing.status_code, missing.json()) == (404, {"detail": "user_not_found"})
    unknown = "00000000-0000-4000-8000-000000000000"
    gone = await client.post(f"/api/v1/users/{unknown}/deactivate", headers=admin_headers)
    assert (gone.status_code, gone.json()) == (404, {"detail": "user_not_found"})
    admin = await asyncio.to_thread(user_row, context, ADMIN[0])
    itself = await client.post(f"/api/v1/users/{admin.id}/deactivate", headers=admin_headers)
    assert (itself.status_code, itself.json()) == (409, {"detail": "cannot_deactivate_self"})

    changes = await asyncio.to_thread(audit_events, context, "user.changed")
    mine = [json.loads(e.detail)["change"] for e in changes if e.subject == body["id"]]
    assert mine == ["created", "totp_issued", "totp_reissued"]
    assert all(e.actor == admin.id for e in changes if e.subject == body["id"])


# ------------------------------------------------------------------ no secrets anywhere


async def test_no_secret_reaches_logs_or_audit(
    client: httpx.AsyncClient,
    context: ServerContext,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Sekrit-Passphrase-For-Logs"
    created = (
        await client.post(
            "/api/v1/users",
            json={"username": "res-1", "password": password, "role": "researcher"},
            headers=admin_headers,
        )
    ).json()
    secret = totp.parse_base32(created["totp_secret"])
    code = totp.totp(secret, time.time())
    await password_login(client, "res-1", "Wrong-Passphrase-For-Logs", code)
    ok = (await password_login(client, "res-1", password, code)).json()
    await refresh(client, ok["refresh_token"])
    await refresh(client, ok["refresh_token"])  # reuse
    await client.get("/api/v1/users", headers={"Authorization": "Bearer " + ok["access_token"]})

    def everything() -> str:
        with context.sessions() as s:
            rows = s.exec(select(AuditEvent)).all()
            return " ".join(f"{e.actor} {e.subject} {e.detail}" for e in rows)

    audit_text = await asyncio.to_thread(everything)
    log_text = " ".join(r.getMessage() for r in caplog.records)
    secrets = [
        password,
        "Wrong-Passphrase-For-Logs",
        created["totp_secret"],
        code,
        ok["access_token"],
        ok["refresh_token"],
        ok["access_token"].split(".")[2],
    ]
    for text in (audit_text, log_text):
        for secret_text in secrets:
            assert secret_text not in text
    assert "res-1" not in audit_text  # names stay out of the audit log: ids only


# ------------------------------------------------------------------ the CLI's client side


async def test_staff_login_logs_in_once_and_refreshes_on_401(
    client: httpx.AsyncClient, context: ServerContext
) -> None:
    """phd_cli.demo.staff_login (demo, bench, compose) against the real endpoint."""
    credentials = StaffCredentials(
        username=ADMIN[0], password=ADMIN[1], totp_secret=totp_secret_for(ADMIN[0])
    )
    assert "correct horse" not in repr(credentials)
    auth = StaffLogin(credentials)
    assert (await client.get(USERS_PATH, auth=auth)).status_code == 200
    assert (await client.get(USERS_PATH, auth=auth)).status_code == 200
    assert len(await asyncio.to_thread(audit_events, context, "auth.login")) == 1

    # The role changes: the access token is refused (401), the refresh token is spent for a
    # token of the new role, and the request retried once: now a 403, not a 401.
    def demote() -> None:
        with context.sessions() as s:
            user = s.exec(select(StaffUser).where(StaffUser.username == ADMIN[0])).one()
            user.role = "auditor"
            s.add(user)
            s.commit()

    await asyncio.to_thread(demote)
    assert (await client.get(USERS_PATH, auth=auth)).status_code == 403
    assert len(await asyncio.to_thread(audit_events, context, "auth.login")) == 1

    wrong = StaffLogin(
        StaffCredentials(username=ADMIN[0], password="not the password", totp_secret=bytes(20))
    )
    with pytest.raises(StaffLoginError, match="refused 'admin'"):
        await client.get(USERS_PATH, auth=wrong)
