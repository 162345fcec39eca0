"""The optional external OIDC issuer: tokens verified through a JWKS served by a real local
HTTP server (no mock of PyJWT or of the fetch), mapped to active staff users only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pydantic import SecretStr
from sqlmodel import col, select

from hospital_server.app import create_app
from hospital_server.context import ServerContext
from hospital_server.models import AuditEvent, StaffUser
from hospital_server.settings import Settings
from tests.server.conftest import ADMIN, CLINICIAN

ISSUER = "https://idp.example.test/realms/hospital"
AUDIENCE = "phd-api-external"
USERS = "/api/v1/users"


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class IdentityProvider:
    """A signing key and the JWKS document a real HTTP server hands out."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks: dict[str, Any] = {
            "keys": [{**jwk, "kid": "idp-1", "use": "sig", "alg": "ES256"}]
        }
        self.fetches = 0

    def token(
        self,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str = "idp-1",
        **changes: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "f:3b2c:admin",
            "preferred_username": ADMIN[0],
            "roles": ["admin", "offline_access"],
            "iat": now,
            "exp": now + 300,
            "jti": "idp-jti-1",
        }
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, _pem(key or self.key), algorithm="ES256", headers={"kid": kid})


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture
def jwks_url(idp: IdentityProvider) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        provider: ClassVar[IdentityProvider] = idp

        def do_GET(self) -> None:
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            body = json.dumps(self.provider.jwks).encode()
            self.provider.fetches += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
            del format, args  # keep test output clean

    class Server(ThreadingHTTPServer):
        # Handler threads tracked, so server_close() joins them: no request's socket can
        # outlive the fixture (an unclosed one is a ResourceWarning, an error here).
        daemon_threads = False

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _settings(db_url: str, key_file: Path, jwks_url: str) -> Settings:
    return Settings(
        profile="dev",
        database_url=SecretStr(db_url),
        key_file=key_file,
        oidc_issuer=ISSUER,
        oidc_jwks_url=jwks_url,
        oidc_audience=AUDIENCE,
        oidc_role_claim="roles",
    )


@pytest.fixture
async def client(
    db_url: str, key_file: Path, jwks_url: str, context: ServerContext
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(db_url, key_file, jwks_url), context=context)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://server"
    ) as c:
        yield c


def _failures(context: ServerContext) -> list[tuple[str, str]]:
    with context.sessions() as s:
        rows = s.exec(
            select(AuditEvent)
            .where(AuditEvent.event_type == "auth.failed")
            .order_by(col(AuditEvent.id))
        ).all()
        return [(e.actor, json.loads(e.detail)["reason"]) for e in rows]


def _refused(context: ServerContext, reason: str) -> float | None:
    return context.metrics.registry.get_sample_value("phd_auth_refused_total", {"reason": reason})


def _user_id(context: ServerContext, username: str) -> str:
    with context.sessions() as s:
        return s.exec(select(StaffUser).where(StaffUser.username == username)).one().id


async def test_an_external_token_maps_to_the_staff_user(
    client: httpx.AsyncClient, idp: IdentityProvider, admin_headers: dict[str, str]
) -> None:
    r = await client.get(USERS, headers={"Authorization": f"Bearer {idp.token()}"})
    assert r.status_code == 200, r.text
    # A role given as a plain string works too; the built-in issuer still works beside it.
    single = idp.token(roles="admin", jti=None)
    assert (
        await client.get(USERS, headers={"Authorization": f"Bearer {single}"})
    ).status_code == 200
    assert (await client.get(USERS, headers=admin_headers)).status_code == 200
    assert idp.fetches == 1  # the key set is cached


async def test_the_role_comes_from_the_staff_user(
    client: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    """A clinician's external token claiming admin gets the clinician role (403 here)."""
    token = idp.token(preferred_username=CLINICIAN[0], roles=["clinician", "admin"])
    r = await client.get(USERS, headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()) == (403, {"detail": "role_not_allowed"})


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "no such staff user": ({"preferred_username": "stranger"}, "unknown_user"),
    "no preferred_username": ({"preferred_username": None}, "bad_claim"),
    "role claim lacks the user's role": ({"roles": ["clinician"]}, "role_mismatch"),
    "no role claim": ({"roles": None}, "role_mismatch"),
    "wrong audience": ({"aud": "someone-else"}, "wrong_audience"),
    "expired": ({"iat": int(time.time()) - 3600, "exp": int(time.time()) - 3000}, "expired"),
    "not yet valid": ({"nbf": int(time.time()) + 600}, "not_yet_valid"),
    "missing exp": ({"exp": None}, "missing_claim"),
    "missing sub": ({"sub": None}, "missing_claim"),
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_external_tokens_are_refused(
    name: str, client: httpx.AsyncClient, context: ServerContext, idp: IdentityProvider
) -> None:
    changes, reason = REFUSED[name]
    r = await client.get(USERS, headers={"Authorization": f"Bearer {idp.token(**changes)}"})
    assert (r.status_code, r.json()) == (401, {"detail": "invalid_token"})
    failures = await asyncio.to_thread(_failures, context)
    assert [f[1] for f in failures] == ([] if reason == "expired" else [reason])


async def test_forged_external_tokens_are_refused(
    client: httpx.AsyncClient, context: ServerContext, idp: IdentityProvider
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    forged = idp.token(key=other)  # right kid, wrong key
    unknown = idp.token(key=other, kid="idp-2")  # a kid the issuer never published
    public_pem = idp.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs256 = _hs256_with(public_pem, idp)
    none = _unsigned(idp)
    for token in (forged, unknown, hs256, none):
        r = await client.get(USERS, headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()) == (401, {"detail": "invalid_token"})
    reasons = [f[1] for f in await asyncio.to_thread(_failures, context)]
    # The second anonymous bad_algorithm within a minute is folded (tests/server/
    # test_auth_refusals.py); the metric counts both.
    assert reasons == ["bad_signature", "unknown_kid", "bad_algorithm"]
    assert _refused(context, "bad_algorithm") == 2


async def test_a_flood_of_unknown_kids_is_not_relayed_to_the_identity_provider(
    client: httpx.AsyncClient, context: ServerContext, idp: IdentityProvider
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    for n in range(20):
        token = idp.token(key=other, kid=f"forged-{n}")
        r = await client.get(USERS, headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()) == (401, {"detail": "invalid_token"})
    # One fetch for the first token; an unknown kid refetches only a minute after the last
    # fetch, so none of the 20 reached the identity provider again.
    assert idp.fetches == 1
    reasons = [f[1] for f in await asyncio.to_thread(_failures, context)]
    assert reasons == ["unknown_kid"]  # one entry, the other 19 folded into the next one
    assert _refused(context, "unknown_kid") == 20
    # A real token still passes from the cached set.
    r = await client.get(USERS, headers={"Authorization": f"Bearer {idp.token()}"})
    assert r.status_code == 200
    assert idp.fetches == 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(idp: IdentityProvider) -> str:
    payload = jwt.decode(idp.token(), options={"verify_signature": False})
    return _b64(json.dumps(payload).encode())


def _hs256_with(secret: bytes, idp: IdentityProvider) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "idp-1"}).encode())
    signing_input = f"{header}.{_claims(idp)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _unsigned(idp: IdentityProvider) -> str:
    header = _b64(json.dumps({"alg": "none", "kid": "idp-1"}).encode())
    return f"{header}.{_claims(idp)}."


async def test_a_deactivated_staff_user_is_shut_out_of_the_external_issuer_too(
    client: httpx.AsyncClient, context: ServerContext, idp: IdentityProvider
) -> None:
    def deactivate() -> None:
        with context.sessions() as s:
            user = s.exec(select(StaffUser).where(StaffUser.username == ADMIN[0])).one()
            user.active = False
            s.add(user)
            s.commit()

    await asyncio.to_thread(deactivate)
    r = await client.get(USERS, headers={"Authorization": f"Bearer {idp.token()}"})
    assert r.status_code == 401
    admin_id = await asyncio.to_thread(_user_id, context, ADMIN[0])
    assert await asyncio.to_thread(_failures, context) == [(admin_id, "inactive")]


async def test_an_unreachable_key_set_answers_503(
    db_url: str, key_file: Path, context: ServerContext, idp: IdentityProvider
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    settings = _settings(db_url, key_file, f"http://127.0.0.1:{port}/jwks.json")
    app = create_app(settings, context=context)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://server"
    ) as c:
        r = await c.get(USERS, headers={"Authorization": f"Bearer {idp.token()}"})
    assert (r.status_code, r.json()) == (503, {"detail": "issuer_unavailable"})


def test_oidc_settings_are_all_or_nothing(key_file: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="also needs"):
        Settings(profile="dev", key_file=key_file, oidc_issuer=ISSUER)
    with pytest.raises(ValidationError, match="must be https"):
        Settings(
            profile="prod",
            database_url=SecretStr("sqlite:///x.db"),
            key_file=key_file,
            oidc_issuer=ISSUER,
            oidc_jwks_url="http://idp.example.test/jwks.json",
            oidc_audience=AUDIENCE,
        )
    with pytest.raises(ValidationError, match="must differ"):
        Settings(
            profile="dev",
            oidc_issuer="phd-hospital",
            oidc_jwks_url="http://x/jwks.json",
            oidc_audience=AUDIENCE,
        )
