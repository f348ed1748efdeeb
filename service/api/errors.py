"""Errors -> HTTP responses, in one place. Every error body is ``{"schema_version": "1", "error": {code, message}}``.

Input errors keep the pipeline's code and message: 400 for a malformed request or archive, 413 for size and
count limits, 422 for a series (or model name, or reference) the pipeline refuses, 503 for a damaged model bundle.
A queue that cannot take the job (broker down, queue or disk full) is 503 with Retry-After.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import ErrorDetail, ErrorResponse
from service.errors import ErrorCode, InputError
from service.jobs.store import JobNotFound
from service.worker.dispatcher import DispatchUnavailable

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.BAD_UPLOAD: 400,
    ErrorCode.UNSAFE_ARCHIVE: 400,
    ErrorCode.BAD_ARCHIVE: 400,
    ErrorCode.UPLOAD_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_FILES: 413,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.INFLATED_TOO_LARGE: 413,
    ErrorCode.MODEL_INTEGRITY: 503,
}
DEFAULT_INPUT_STATUS = 422


class ApiError(Exception):
    """An HTTP error with a stable code (auth, not found, not ready)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def status_for(code: ErrorCode) -> int:
    return STATUS_BY_CODE.get(code, DEFAULT_INPUT_STATUS)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        log.info("request refused: %s", exc.code)
        return error_response(status_for(exc.code), str(exc.code), exc.message)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(DispatchUnavailable)
    async def _unavailable(request: Request, exc: DispatchUnavailable) -> JSONResponse:
        return error_response(503, exc.code, exc.message, {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return error_response(404, "JOB_NOT_FOUND", "no such job for this API key")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return error_response(422, "BAD_REQUEST", where or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=False)
        return error_response(500, "INTERNAL_ERROR", "unexpected server error; the server log has the details")


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
