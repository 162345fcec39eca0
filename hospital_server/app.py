"""The FastAPI application factory. Nothing is built at import time.

``create_app(settings)`` builds a :class:`~hospital_server.context.ServerContext` (engine, key
provider, metrics) unless one is passed in (tests, or ``phd server run`` sharing it with the
ingest workers), the external OIDC verifier when one is configured (it fetches nothing until a
token of that issuer arrives), and mounts the routers. The OpenAPI document is at
``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hospital_server.api.routes import (
    auth,
    clinical,
    devices,
    enroll,
    fhir,
    gateways,
    health,
    patients,
    users,
)
from hospital_server.auditlog import checkpoint_loop, checkpoint_now
from hospital_server.auth.oidc import OidcVerifier
from hospital_server.auth.refusals import RefusalAudit
from hospital_server.context import ServerContext
from hospital_server.enrollment import EnrollmentService
from hospital_server.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, context: ServerContext | None = None) -> FastAPI:
    owned = context is None
    ctx = context if context is not None else ServerContext.build(settings)

    refusals = RefusalAudit(ctx.sessions, ctx.metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        every = settings.audit_checkpoint_seconds
        loop = (
            asyncio.create_task(checkpoint_loop(ctx.sessions, ctx.key_provider, every, ctx.metrics))
            if every
            else None
        )
        yield
        if loop is not None:
            loop.cancel()
        refusals.flush()
        if every:
            # Anchor what this server wrote last (the refusals just flushed included).
            try:
                await asyncio.to_thread(checkpoint_now, ctx.sessions, ctx.key_provider)
            except Exception as exc:  # noqa: BLE001 -- shutting down; the next server anchors it
                log.warning("final audit checkpoint failed (%s)", type(exc).__name__)
        if owned:
            ctx.close()

    app = FastAPI(
        title="PHD hospital server",
        version="1",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    app.state.enrollment = EnrollmentService(layout=ctx.pki, keys=ctx.keys, pepper=ctx.code_pepper)
    app.state.oidc = OidcVerifier.from_settings(settings)
    app.state.refusals = refusals
    for module in (health, auth, users, patients, devices, gateways, enroll, clinical, fhir):
        app.include_router(module.router)
    app.include_router(auth.wellknown)
    return app
