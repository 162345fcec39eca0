"""Agent-facing enrollment and renewal (docs/ARCHITECTURE.md, "Enrollment HTTP contract").

No staff authentication: the one-time code (enroll) or the current credential's signature
(renew) is the proof. Bodies are parsed by phd_protocol.enrollment (bounded, strict);
refusals answer ``{"reason": <EnrollmentReason>}`` and nothing more.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hospital_server.context import ServerContext
from hospital_server.enrollment import EnrollmentService
from phd_protocol.enrollment import (
    MAX_REQUEST_BYTES,
    EnrollmentError,
    EnrollmentReason,
    EnrollmentRequest,
    RenewalRequest,
)

router = APIRouter(prefix="/api/v1/enroll", tags=["enrollment"])

_E = EnrollmentReason
_STATUS = {
    _E.MALFORMED: 400,
    _E.TOO_LARGE: 413,
    _E.CODE_MALFORMED: 400,
    _E.BAD_CSR: 400,
    _E.CLOCK_SKEW: 400,
    _E.CODE_INVALID: 403,
    _E.CODE_EXPIRED: 403,
    _E.CODE_USED: 403,
    _E.CODE_LOCKED: 403,
    _E.CODE_CANCELLED: 403,
    _E.BAD_SIGNATURE: 403,
    _E.WRONG_CREDENTIAL: 403,
    _E.REPLAY: 409,
}


def _refuse(reason: EnrollmentReason) -> JSONResponse:
    return JSONResponse({"reason": reason.value}, status_code=_STATUS.get(reason, 400))


async def _body(request: Request) -> bytes | None:
    body = await request.body()
    return None if len(body) > MAX_REQUEST_BYTES else body


def _service(request: Request) -> tuple[ServerContext, EnrollmentService]:
    return request.app.state.ctx, request.app.state.enrollment


@router.post("", response_class=Response)
async def enroll(request: Request) -> Response:
    body = await _body(request)
    if body is None:
        return _refuse(_E.TOO_LARGE)
    ctx, service = _service(request)

    def work() -> bytes:
        message = EnrollmentRequest.from_json(body)
        with ctx.sessions() as session:
            return service.enroll(session, message).to_json()

    try:
        return Response(await run_in_threadpool(work), media_type="application/json")
    except EnrollmentError as exc:
        return _refuse(exc.reason)


@router.post("/renew", response_class=Response)
async def renew(request: Request) -> Response:
    body = await _body(request)
    if body is None:
        return _refuse(_E.TOO_LARGE)
    ctx, service = _service(request)

    def work() -> bytes:
        message = RenewalRequest.from_json(body)
        with ctx.sessions() as session:
            return service.renew(session, message).to_json()

    try:
        return Response(await run_in_threadpool(work), media_type="application/json")
    except EnrollmentError as exc:
        return _refuse(exc.reason)
