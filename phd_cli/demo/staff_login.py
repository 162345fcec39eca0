"""Logging the demo's (or bench's, or compose's) admin into the staff API.

The server takes bearer tokens only (docs/auth.md): :class:`StaffLogin` is an ``httpx.Auth``
that logs in once at the token endpoint with the password and a TOTP code computed from the
admin's stored secret, sends the access token with every request, and on a 401 spends the
refresh token for a new one (and retries the request once). It works with both the sync and
the async httpx clients (the flow does no I/O of its own).

A TOTP code is accepted once: a second password login within the same 30-second step would be
refused, which is why the flow logs in only when it has no refresh token left to use.

What it must never do: print or log the password, the secret, a code or a token.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field

import httpx

from hospital_server.auth import totp

__all__ = ["StaffCredentials", "StaffLogin", "StaffLoginError"]

TOKEN_PATH = "/api/v1/auth/token"  # noqa: S105 (a URL path)


class StaffLoginError(Exception):
    """The token endpoint refused the credentials (or answered something unexpected)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StaffCredentials:
    username: str
    password: str = field(repr=False)
    totp_secret: bytes = field(repr=False)


class StaffLogin(httpx.Auth):
    requires_response_body = True

    def __init__(self, credentials: StaffCredentials) -> None:
        self._credentials = credentials
        self._access: str | None = None
        self._refresh: str | None = None

    def _token_request(self, request: httpx.Request, form: dict[str, str]) -> httpx.Request:
        url = request.url.copy_with(path=TOKEN_PATH, query=None, fragment=None)
        return httpx.Request("POST", url, data=form)

    def _password_form(self) -> dict[str, str]:
        c = self._credentials
        return {
            "grant_type": "password",
            "username": c.username,
            "password": c.password,
            "totp": totp.totp(c.totp_secret, time.time()),
        }

    def _take(self, response: httpx.Response) -> bool:
        if response.status_code != httpx.codes.OK:
            self._access = self._refresh = None
            return False
        body = response.json()
        self._access, self._refresh = str(body["access_token"]), str(body["refresh_token"])
        return True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._access is None:
            login = yield self._token_request(request, self._password_form())
            if not self._take(login):
                raise StaffLoginError(
                    f"the token endpoint refused {self._credentials.username!r} "
                    f"(HTTP {login.status_code}): check the password and TOTP secret, "
                    "the clock, or wait 30 s if this account just logged in"
                )
        request.headers["Authorization"] = f"Bearer {self._access}"
        response = yield request
        if response.status_code != httpx.codes.UNAUTHORIZED or self._refresh is None:
            return
        renewed = yield self._token_request(
            request, {"grant_type": "refresh_token", "refresh_token": self._refresh}
        )
        if not self._take(renewed):
            return  # the caller sees the original 401
        request.headers["Authorization"] = f"Bearer {self._access}"
        yield request
