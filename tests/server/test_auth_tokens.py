"""Access tokens under attack: forged, tampered, expired, wrong audience/issuer/algorithm,
unknown key, missing claims, deactivated or re-roled users; the JWKS; key rotation.

Forgeries are built with PyJWT and phd_protocol.crypto, never by patching the verifier: each
goes through the real bearer dependency of a real route and must answer 401 invalid_token
with the expected reason in the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlmodel import col, select

from hospital_server.app import create_app
from hospital_server.auth.errors import TokenRejectedError
from hospital_server.auth.tokens import (
    TokenPolicy,
    current_signing_key,
    issue_access_token,
    jwks,
    rotate_signing_key,
    verify_access_token,
)
from hospital_server.context import ServerContext
from hospital_server.keys import KeyUnavailableError, WrappedKey
from hospital_server.models import AuditEvent, StaffUser, TokenSigningKey, utcnow
from hospital_server.settings import Settings
from phd_protocol import crypto
from tests.server.conftest import ADMIN, CLINICIAN

USERS = "/api/v1/users"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Forge:
    """The issuer's real key material (as an attacker who stole nothing would NOT have it;
    used to build tokens that are correctly signed but wrong in one claim) plus helpers."""

    def __init__(self, context: ServerContext) -> None:
        with context.sessions() as s:
            row = current_signing_key(s, context.key_provider, now=utcnow())
            s.commit()
            self.kid = row.kid
            self.public_pem = row.public_pem
            self.private_pem = context.key_provider.unwrap(
                WrappedKey(row.kek_id, row.private_wrapped),
                context=b"token-signing-key\x00" + row.kid.encode(),
            )
            users = {u.username: u for u in s.exec(select(StaffUser))}
        self.admin_id = users[ADMIN[0]].id
        self.clinician_id = users[CLINICIAN[0]].id
        self.policy = TokenPolicy.from_settings(context.settings)

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.policy.issuer,
            "aud": self.policy.audience,
            "sub": self.admin_id,
            "role": "admin",
            "jti": "forged-jti-1",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: bytes | None = None,
        kid: str | None = "",
        typ: str = "at+jwt",
    ) -> str:
        headers: dict[str, Any] = {"typ": typ}
        if kid is not None:
            headers["kid"] = kid or self.kid
        return jwt.encode(claims, key or self.private_pem, algorithm="ES256", headers=headers)

    def unsigned(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        h = _b64(json.dumps(header).encode())
        p = _b64(json.dumps(claims).encode())
        return f"{h}.{p}."

    def hmac_with_public_key(self, claims: dict[str, Any]) -> str:
        header = {"alg": "HS256", "typ": "at+jwt", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        mac = hmac.new(self.public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"


@pytest.fixture
def forge(context: ServerContext) -> Forge:
    return Forge(context)


def _other_key_pem() -> bytes:
    return crypto.private_key_pem(crypto.generate_signing_key(crypto.COSE_ES256))


def _tampered(f: Forge) -> str:
    token = f.sign(f.claims(sub=f.clinician_id, role="clinician"))
    header, _payload, signature = token.split(".")
    payload = _b64(json.dumps(f.claims(role="admin")).encode())
    return f"{header}.{payload}.{signature}"


FORGERIES: dict[str, tuple[Callable[[Forge], str], str]] = {
    "signed by another key": (lambda f: f.sign(f.claims(), key=_other_key_pem()), "bad_signature"),
    "alg none": (
        lambda f: f.unsigned({"alg": "none", "typ": "at+jwt", "kid": f.kid}, f.claims()),
        "bad_algorithm",
    ),
    "HS256 keyed with the public key": (
        lambda f: f.hmac_with_public_key(f.claims()),
        "bad_algorithm",
    ),
    "wrong audience": (lambda f: f.sign(f.claims(aud="another-api")), "wrong_audience"),
    "wrong issuer": (lambda f: f.sign(f.claims(iss="https://evil.example")), "wrong_issuer"),
    "not yet valid": (
        lambda f: f.sign(f.claims(nbf=int(time.time()) + 300)),
        "not_yet_valid",
    ),
    "issued in the future": (
        lambda f: f.sign(f.claims(iat=int(time.time()) + 300)),
        "issued_in_future",
    ),
    "unknown kid": (lambda f: f.sign(f.claims(), kid="no-such-key"), "unknown_kid"),
    "no kid": (lambda f: f.sign(f.claims(), kid=None), "unknown_kid"),
    "tampered payload": (_tampered, "bad_signature"),
    "not an access token (typ JWT)": (lambda f: f.sign(f.claims(), typ="JWT"), "wrong_type"),
    "role outside the model": (lambda f: f.sign(f.claims(role="root")), "bad_claim"),
    "exp as a string": (lambda f: f.sign(f.claims(exp="9999999999")), "bad_claim"),
    "unknown subject": (
        lambda f: f.sign(f.claims(sub="00000000-0000-4000-8000-000000000000")),
        "unknown_user",
    ),
    "role escalated in a validly signed token": (
        lambda f: f.sign(f.claims(sub=f.clinician_id, role="admin")),
        "role_changed",
    ),
    "garbage": (lambda f: "a.b", "malformed"),
    "oversized": (lambda f: "a" * 9000, "oversized"),
    **{
        f"missing {claim}": (
            lambda f, claim=claim: f.sign(f.claims(**{claim: None})),  # type: ignore[misc]
            "missing_claim",
        )
        for claim in ("exp", "iat", "nbf", "iss", "aud", "sub", "jti", "role")
    },
}


def _failures(context: ServerContext) -> list[dict[str, Any]]:
    with context.sessions() as s:
        rows = s.exec(
            select(AuditEvent)
            .where(AuditEvent.event_type == "auth.failed")
            .order_by(col(AuditEvent.id))
        ).all()
        return [{"actor": e.actor, **json.loads(e.detail)} for e in rows]


@pytest.mark.parametrize("name", list(FORGERIES))
async def test_forged_tokens_are_refused(
    name: str, client: httpx.AsyncClient, context: ServerContext, forge: Forge
) -> None:
    build, reason = FORGERIES[name]
    token = build(forge)
    r = await client.get(USERS, headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()) == (401, {"detail": "invalid_token"}), name
    assert r.headers["www-authenticate"] == 'Bearer realm="phd-hospital", error="invalid_token"'
    failures = await asyncio.to_thread(_failures, context)
    assert [f["reason"] for f in failures] == [reason]
    assert failures[0]["via"] == "bearer"
    if reason == "role_changed":
        assert failures[0]["actor"] == forge.clinician_id


async def test_the_genuine_article_passes(client: httpx.AsyncClient, forge: Forge) -> None:
    """The forge itself is sound: its correct token is accepted (so each refusal above is
    caused by the one thing that was changed)."""
    r = await client.get(USERS, headers={"Authorization": f"Bearer {forge.sign(forge.claims())}"})
    assert r.status_code == 200


async def test_expired_token_is_refused_without_an_audit_entry(
    client: httpx.AsyncClient, context: ServerContext, forge: Forge
) -> None:
    past = int(time.time()) - 3600
    token = forge.sign(forge.claims(iat=past, nbf=past, exp=past + 600))
    r = await client.get(USERS, headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()) == (401, {"detail": "invalid_token"})
    assert await asyncio.to_thread(_failures, context) == []  # routine: clients refresh


def test_time_checks_use_the_leeway(context: ServerContext, forge: Forge) -> None:
    policy = TokenPolicy.from_settings(context.settings)
    now = utcnow()
    token = forge.sign(forge.claims())
    with context.sessions() as s:
        exp_at = now + timedelta(seconds=600)
        late_ok = verify_access_token(s, policy, token, now=exp_at + timedelta(seconds=29))
        assert late_ok.user_id == forge.admin_id
        with pytest.raises(TokenRejectedError) as late:
            verify_access_token(s, policy, token, now=exp_at + timedelta(seconds=31))
        assert late.value.reason == "expired"
        early_ok = verify_access_token(s, policy, token, now=now - timedelta(seconds=29))
        assert early_ok.user_id == forge.admin_id
        with pytest.raises(TokenRejectedError) as early:
            verify_access_token(s, policy, token, now=now - timedelta(seconds=31))
        assert early.value.reason in {"not_yet_valid", "issued_in_future"}


async def test_role_change_and_deactivation_take_effect_at_once(
    client: httpx.AsyncClient,
    context: ServerContext,
    forge: Forge,
    admin_headers: dict[str, str],
) -> None:
    assert (await client.get(USERS, headers=admin_headers)).status_code == 200

    def set_admin(**values: Any) -> None:
        with context.sessions() as s:
            user = s.get(StaffUser, forge.admin_id)
            assert user is not None
            for k, v in values.items():
                setattr(user, k, v)
            s.add(user)
            s.commit()

    await asyncio.to_thread(set_admin, role="auditor")
    r = await client.get(USERS, headers=admin_headers)
    assert (r.status_code, r.json()) == (401, {"detail": "invalid_token"})
    await asyncio.to_thread(set_admin, role="admin", active=False)
    assert (await client.get(USERS, headers=admin_headers)).status_code == 401
    await asyncio.to_thread(set_admin, active=True)
    assert (await client.get(USERS, headers=admin_headers)).status_code == 200
    reasons = [f["reason"] for f in await asyncio.to_thread(_failures, context)]
    assert reasons == ["role_changed", "inactive"]


# ------------------------------------------------------------------ JWKS and rotation


async def test_jwks_publishes_the_public_key_only(
    client: httpx.AsyncClient, forge: Forge, admin_headers: dict[str, str]
) -> None:
    r = await client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/jwk-set+json"
    keys = r.json()["keys"]
    assert len(keys) == 1
    jwk = keys[0]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}  # no "d"
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")
    assert jwk["kid"] == forge.kid
    # The kid is the RFC 7638 thumbprint.
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
    )
    assert jwk["kid"] == _b64(hashlib.sha256(canonical.encode()).digest())
    assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32
    # A resource server holding only the JWKS verifies our tokens (interoperability).
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience="phd-hospital-api",
        issuer="phd-hospital",
    )
    assert claims["role"] == "admin"


async def test_jwks_creates_the_first_key(settings: Settings, context: ServerContext) -> None:
    app = create_app(settings, context=context)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        first = (await c.get("/.well-known/jwks.json")).json()
        second = (await c.get("/.well-known/jwks.json")).json()
    assert len(first["keys"]) == 1
    assert first == second


def test_rotation_keeps_old_tokens_valid_until_they_expire(context: ServerContext) -> None:
    policy = TokenPolicy.from_settings(context.settings)
    keys = context.key_provider
    t0 = utcnow()
    with context.sessions() as s:
        admin = s.exec(select(StaffUser).where(StaffUser.username == ADMIN[0])).one()
        old = issue_access_token(s, keys, policy, user_id=admin.id, role="admin", now=t0)
        old_kid = jwt.get_unverified_header(old.token)["kid"]
        s.commit()

        t1 = t0 + timedelta(minutes=5)
        rotation = rotate_signing_key(s, keys, policy, now=t1)
        s.commit()
        assert rotation.retired == (old_kid,)
        assert rotation.deleted == ()
        new = issue_access_token(s, keys, policy, user_id=admin.id, role="admin", now=t1)
        assert jwt.get_unverified_header(new.token)["kid"] == rotation.new_kid != old_kid

        # Both verify; both keys are published, the new one first.
        assert verify_access_token(s, policy, old.token, now=t1).token_id == old.jti
        assert verify_access_token(s, policy, new.token, now=t1).token_id == new.jti
        assert [k["kid"] for k in jwks(s, policy, now=t1)["keys"]] == [rotation.new_kid, old_kid]

        # Once every token the old key can have signed has expired, it is gone.
        t2 = t1 + policy.retired_key_grace + timedelta(seconds=1)
        assert [k["kid"] for k in jwks(s, policy, now=t2)["keys"]] == [rotation.new_kid]
        with pytest.raises(TokenRejectedError) as gone:
            verify_access_token(s, policy, old.token, now=t2)
        assert gone.value.reason == "unknown_kid"
        again = rotate_signing_key(s, keys, policy, now=t2)
        s.commit()
        assert again.deleted == (old_kid,)
        assert again.retired == (rotation.new_kid,)
        assert s.get(TokenSigningKey, old_kid) is None


def test_a_wrapped_signing_key_is_bound_to_its_kid(context: ServerContext) -> None:
    """Copying one key's wrapped private half onto another row does not unwrap."""
    policy = TokenPolicy.from_settings(context.settings)
    with context.sessions() as s:
        first = current_signing_key(s, context.key_provider, now=utcnow())
        second_kid = rotate_signing_key(s, context.key_provider, policy, now=utcnow()).new_kid
        s.commit()
        with pytest.raises(KeyUnavailableError):
            context.key_provider.unwrap(
                WrappedKey(first.kek_id, first.private_wrapped),
                context=b"token-signing-key\x00" + second_kid.encode(),
            )
