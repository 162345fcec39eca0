"""Enrollment and renewal of a device credential: the agent's only HTTP client (httpx).

Enrollment (``POST /api/v1/enroll``, docs/ARCHITECTURE.md "Enrollment HTTP contract"):

1. generate the device key here (Ed25519); it never leaves this machine;
2. send the one-time code, a CSR (proof of possession) and the PHD's Device Information;
3. accept the answer only if the returned root equals the **pinned** hospital root the agent
   was installed with, the certificate chains to it for the device-credential purpose, and
   the certificate is for our key;
4. store key (0600), certificate, chain, root and ingest keys (:mod:`device_agent.store`).

Renewal (``POST /api/v1/enroll/renew``) sends a CSR for a fresh key signed by the current
key (phd_protocol.enrollment), verifies the answer the same way, and swaps the files crash-
safely. :func:`needs_renewal` says when: inside the last third of the certificate's life.

TLS to the server is verified against the same pinned root (the server's certificate comes
from the hospital's service CA); plain ``http://`` is accepted only for loopback addresses
(development). httpx exceptions are translated here into :class:`EnrollError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from device_agent.errors import EnrollError, EnrollFailure
from device_agent.store import AgentHome, Credential, CredentialFiles, IngestKey, PhdInfo
from phd_protocol import crypto, enrollment
from phd_protocol.errors import PhdProtocolError
from phd_protocol.pki import (
    Purpose,
    build_device_csr,
    certificate_der,
    certificate_public_key,
    load_certificate,
    load_certificates,
    verify_chain,
)

__all__ = ["EnrollClient", "needs_renewal"]

_TIMEOUT = httpx.Timeout(15.0)
_MAX_RESPONSE = 64 * 1024


def needs_renewal(cert_pem: bytes, *, now: datetime) -> bool:
    """True once less than a third of the certificate's validity remains."""
    cert = load_certificate(cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= end - (end - start) / 3


def _check_url(server: str) -> str:
    parts = urlsplit(server)
    if parts.scheme == "https":
        return server.rstrip("/")
    if parts.scheme == "http":
        host = parts.hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return server.rstrip("/")
    raise EnrollError(
        EnrollFailure.UNREACHABLE, "server URL must be https:// (http only on loopback)"
    )


@dataclass(frozen=True, slots=True)
class _Verified:
    device_id: str
    files: CredentialFiles


class EnrollClient:
    """Talks to the hospital's enrollment endpoint; ``transport`` is injectable for tests."""

    def __init__(
        self,
        server: str,
        *,
        pinned_root_pem: bytes,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = _check_url(server)
        try:
            self.root = load_certificate(pinned_root_pem)
        except PhdProtocolError as exc:
            raise EnrollError(EnrollFailure.UNTRUSTED_CHAIN, "pinned root does not parse") from exc
        self.root_pem = pinned_root_pem
        self.transport = transport

    def _ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.root_pem.decode("ascii"))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def _post(self, path: str, body: bytes) -> bytes:
        verify = await asyncio.to_thread(self._ssl) if self.transport is None else True
        try:
            async with httpx.AsyncClient(
                base_url=self.server, transport=self.transport, verify=verify, timeout=_TIMEOUT
            ) as client:
                response = await client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
        except httpx.HTTPError as exc:
            raise EnrollError(EnrollFailure.UNREACHABLE, type(exc).__name__) from exc
        if len(response.content) > _MAX_RESPONSE:
            raise EnrollError(EnrollFailure.BAD_RESPONSE, "response too large")
        if response.status_code >= 500:
            raise EnrollError(EnrollFailure.UNREACHABLE, f"server error {response.status_code}")
        if response.status_code != 200:
            raise EnrollError(EnrollFailure.REFUSED, f"HTTP {response.status_code}")
        return response.content

    def _verify(self, body: bytes, key: crypto.SigningKey, *, now: datetime) -> _Verified:
        try:
            answer = enrollment.EnrollmentResponse.from_json(body)
        except PhdProtocolError as exc:
            raise EnrollError(EnrollFailure.BAD_RESPONSE, "malformed enrollment response") from exc
        returned_root = load_certificate(answer.root_pem)
        if not crypto.constant_time_equal(
            certificate_der(returned_root), certificate_der(self.root)
        ):
            raise EnrollError(EnrollFailure.UNTRUSTED_CHAIN, "server root is not the pinned root")
        chain = load_certificates(answer.chain_pem)
        leaf = answer.certificate
        try:
            verify_chain(
                leaf,
                intermediates=chain[1:],
                anchors=[self.root],
                purpose=Purpose.DEVICE_CREDENTIAL,
                at=now,
            )
        except PhdProtocolError as exc:
            raise EnrollError(EnrollFailure.UNTRUSTED_CHAIN, "certificate does not chain") from exc
        ours = crypto.public_key_pem(key.public_key())
        if crypto.public_key_pem(certificate_public_key(leaf)) != ours:
            raise EnrollError(EnrollFailure.KEY_MISMATCH, "certificate is not for our key")
        files = CredentialFiles(
            key_pem=crypto.private_key_pem(key),
            cert_pem=answer.certificate_pem,
            chain_pem=answer.chain_pem,
            root_pem=self.root_pem,
            ingest_keys=tuple(
                IngestKey(kid=k.kid, public_key=k.public_key) for k in answer.ingest_keys
            ),
        )
        return _Verified(str(answer.device_id), files)

    async def enroll(
        self, *, code: str, phd: PhdInfo, home: AgentHome, now: datetime | None = None
    ) -> Credential:
        key = await asyncio.to_thread(crypto.generate_signing_key)
        csr = await asyncio.to_thread(build_device_csr, key)
        try:
            request = enrollment.EnrollmentRequest(
                code=code,
                csr_pem=csr,
                phd=enrollment.PhdInfo(
                    system_id=phd.system_id or None,
                    model=phd.model or None,
                    serial=phd.serial or None,
                    manufacturer=phd.manufacturer or None,
                    firmware=phd.firmware or None,
                ),
            )
        except PhdProtocolError as exc:
            raise EnrollError(EnrollFailure.REFUSED, "code or device information invalid") from exc
        body = await self._post("/api/v1/enroll", request.to_json())
        verified = self._verify(body, key, now=now or datetime.now(UTC))
        return await asyncio.to_thread(
            home.create_credential, device_id=verified.device_id, phd=phd, files=verified.files
        )

    async def renew(self, credential: Credential, *, now: datetime | None = None) -> None:
        moment = now or datetime.now(UTC)
        current_key = crypto.load_private_key_pem(await asyncio.to_thread(credential.read_key_pem))
        current_cert = load_certificate(await asyncio.to_thread(credential.cert_path.read_bytes))
        new_key = await asyncio.to_thread(crypto.generate_signing_key)
        request = enrollment.make_renewal_request(
            current_key=current_key,  # type: ignore[arg-type]  # an X25519 key fails in sign()
            current_certificate=current_cert,
            new_key=new_key,
            now=moment,
        )
        body = await self._post("/api/v1/enroll/renew", request.to_json())
        verified = self._verify(body, new_key, now=moment)
        if verified.device_id != credential.device_id:
            raise EnrollError(EnrollFailure.BAD_RESPONSE, "renewal answered for another device")
        await asyncio.to_thread(credential.replace_files, verified.files)
