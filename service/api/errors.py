"""Errors -> HTTP responses, in one place. Every error body is ``{"schema_version": "1", "error": {code, message}}``.

Every status comes from the error catalogue (``service.errors.CATALOGUE``, docs/errors.md): input errors keep the
pipeline's code and message (400 for a malformed request or archive, 413 for size and count limits, 422 for a
series, model name or reference the pipeline refuses), a damaged model bundle is 503, and a queue that cannot take
the job (broker down, queue or disk full) is 503 with Retry-After.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import ErrorDetail, ErrorResponse
from service.errors import ErrorCode, ServiceError, spec_for
from service.jobs.dispatch import DispatchUnavailable
from service.jobs.store import JobNotFound

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with a stable code (auth, not found, not ready); ``status`` is the catalogue's for ``code``
    (tests/test_error_catalogue.py checks every ``ApiError(...)`` in the source)."""

    def __init__(self, status: int, code: ErrorCode | str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, ErrorCode(code), message, headers


def status_for(code: ErrorCode | str) -> int:
    """The HTTP status of an error response with ``code`` (codes that are never a response: 500)."""
    status = spec_for(code).http_status
    return status if status is not None else 500


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _refused(request: Request, exc: ServiceError) -> JSONResponse:  # InputError, EnvironmentFault
        log.info("request refused: %s", exc.code)
        return error_response(status_for(exc.code), str(exc.code), exc.message)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(DispatchUnavailable)
    async def _unavailable(request: Request, exc: DispatchUnavailable) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(status_for(exc.code), exc.code, exc.message, headers)

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        code = ErrorCode.JOB_NOT_FOUND
        return error_response(status_for(code), code, "no such job for this API key")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return error_response(status_for(ErrorCode.BAD_REQUEST), ErrorCode.BAD_REQUEST, where or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(exc.status_code, ErrorCode.HTTP_ERROR)
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=False)
        message = "unexpected server error; the server log has the details"
        return error_response(status_for(ErrorCode.INTERNAL_ERROR), ErrorCode.INTERNAL_ERROR, message)


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed request or archive",
        401: "missing or unknown API key",
        404: "no such job for this key",
        409: "the job has not succeeded (no outputs yet, or it failed)",
        413: "too many bytes or files",
        422: "the series, model name or reference is refused",
        503: "cannot take jobs now (queue/broker, disk, model)",
    }.items()
}
