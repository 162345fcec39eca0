"""Liveness, readiness and metrics: unauthenticated, and free of any id or value."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from hospital_server.api.deps import Ctx
from hospital_server.db import check_database
from hospital_server.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(ctx: Ctx, response: Response) -> dict[str, str]:
    checks = {
        "database": "ok" if check_database(ctx.engine) else "unreachable",
        "broker": "ok" if ctx.broker_probe() else "unreachable",
    }
    if ctx.ingest_probe is not None:  # in-process ingest workers (phd server run --worker)
        checks["ingest"] = "ok" if ctx.ingest_probe() else "not_subscribed"
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ready" if ready else "not_ready", **checks}


@router.get("/metrics")
def metrics(ctx: Ctx) -> Response:
    return Response(content=ctx.metrics.render(), media_type=CONTENT_TYPE)
