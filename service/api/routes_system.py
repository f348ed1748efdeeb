"""Models, health, readiness and metrics."""

from __future__ import annotations

import threading
import time

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from service.api.auth import require_owner
from service.api.errors import ERROR_RESPONSES
from service.api.routes_jobs import get_jobs
from service.api.schemas import Check, HealthResponse, ModelInfo, ModelsResponse, ReadyResponse
from service.errors import ServiceError
from service.jobs.service import JobService
from service.model_bundle import list_bundles, resolve_bundle, verify_bundle

router = APIRouter()
MODEL_CHECK_CACHE_S = 30.0


class ModelCheck:
    """Resolve and verify (checksums) the default bundle; the result is cached briefly (hashing a model is slow)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple, Check] | None = None

    def __call__(self, jobs: JobService) -> Check:
        settings = jobs.settings
        try:
            ref = resolve_bundle(settings.default_model, settings.model_store)
        except ServiceError as exc:
            return Check(ok=False, detail=f"{exc.code}: {exc.message}")
        sums = ref.path / "SHA256SUMS"
        key = (str(ref.path), sums.stat().st_mtime_ns if sums.exists() else 0)
        with self._lock:
            if self._cached and self._cached[1] == key and time.monotonic() - self._cached[0] < MODEL_CHECK_CACHE_S:
                return self._cached[2]
            try:
                verify_bundle(ref)
                check = Check(ok=True, detail=f"{ref.spec} verified")
            except ServiceError as exc:
                check = Check(ok=False, detail=f"{exc.code}: {exc.message}")
            self._cached = (time.monotonic(), key, check)
            return check


@router.get(
    "/v1/models", response_model=ModelsResponse, tags=["models"], summary="Model bundles", responses=ERROR_RESPONSES
)
def get_models(owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)) -> ModelsResponse:
    settings = jobs.settings
    try:
        default = resolve_bundle(settings.default_model, settings.model_store).spec
    except ServiceError:
        default = None
    return ModelsResponse(
        models=[
            ModelInfo(name=b.name, version=b.version, spec=b.spec, default=b.spec == default)
            for b in list_bundles(settings.model_store)
        ]
    )


@router.get("/healthz", response_model=HealthResponse, tags=["health"], summary="Alive (no key needed)")
def healthz() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    tags=["health"],
    summary="Ready to take jobs (no key needed)",
    responses={503: {"model": ReadyResponse, "description": "not ready; checks say why"}},
)
async def readyz(request: Request, jobs: JobService = Depends(get_jobs)) -> JSONResponse:
    queue_ok, queue_detail = await run_in_threadpool(jobs.dispatcher.check)
    model = await run_in_threadpool(request.app.state.model_check, jobs)
    free = jobs.store.free_bytes()
    need = jobs.settings.min_free_disk_bytes
    disk = Check(ok=free >= need, detail=f"{free // 2**20} MiB free in the job store, {need // 2**20} MiB needed")
    checks = {"queue": Check(ok=queue_ok, detail=queue_detail), "model": model, "disk": disk}
    ready = all(c.ok for c in checks.values())
    body = ReadyResponse(ready=ready, mode="celery" if jobs.settings.celery_mode else "embedded", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics (API key needed)",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **ERROR_RESPONSES},
)
async def metrics(request: Request, owner: str = Depends(require_owner)) -> Response:
    data = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
