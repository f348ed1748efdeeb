"""``create_app(settings)``: the FastAPI application (settings and the job service injected, never global)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service.api import routes_jobs, routes_review, routes_system, routes_ui
from service.api.docs import install_offline_docs
from service.api.errors import install_error_handlers
from service.api.metrics import ApiMetrics
from service.api.routes_system import ModelCheck
from service.config import ConfigError, Settings
from service.jobs.service import JobService
from service.review.audit import ReviewAudit
from service.review.settings import ReviewSettings
from service.worker.dispatcher import make_dispatcher

log = logging.getLogger(__name__)

DESCRIPTION = """Automatic parotid gland contours (Parotid_L, Parotid_R) for head-and-neck CT. **Research use only:
every contour must be reviewed before clinical use.**

Submit a CT series (`POST /v1/jobs`), poll the job (`GET /v1/jobs/{id}`), then download the RTSTRUCT, the QA
report and a preview. Every endpoint except `/healthz` and `/readyz` needs `Authorization: Bearer <API key>`; a
key sees only its own jobs. Error bodies are `{"schema_version": "1", "error": {"code", "message"}}`.
"""


def _package_version() -> str:
    try:
        return version("parotid-seg")
    except PackageNotFoundError:
        return "0+unknown"


async def _cleanup_loop(jobs: JobService, interval_s: float) -> None:
    while True:
        try:
            counts = await run_in_threadpool(jobs.cleanup)
            if any(counts.values()):
                log.info("retention clean-up: %s", counts)
        except Exception as exc:  # keep the loop alive; the next round retries
            log.error("retention clean-up failed: %s", type(exc).__name__)
        await asyncio.sleep(interval_s)


def create_app(settings: Settings, jobs: JobService | None = None) -> FastAPI:
    """The API. ``jobs`` defaults to the job store at ``settings.job_dir`` with the dispatcher ``settings`` choose
    (embedded pool or Celery); it starts and stops with the app. This is a composition root: the one place the API
    meets ``service.worker``."""
    owners = settings.api_key_owners()
    if not owners:
        raise ConfigError(
            "no API keys configured: set PAROTID_API_KEYS or PAROTID_API_KEYS_FILE "
            "(parotid-seg serve --new-api-key OWNER prints a key and its line)"
        )
    job_service = jobs or JobService.from_settings(settings, make_dispatcher, start=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        job_service.start()
        cleanup = asyncio.create_task(_cleanup_loop(job_service, settings.cleanup_interval_s))
        log.info("parotid-seg API ready (%s mode)", job_service.dispatcher.kind)
        try:
            yield
        finally:
            cleanup.cancel()
            job_service.close()

    app = FastAPI(
        title="parotid-seg",
        version=_package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the installation (install_offline_docs), not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.jobs = job_service
    app.state.api_key_owners = owners
    app.state.metrics = ApiMetrics(job_service)
    app.state.model_check = ModelCheck()
    install_error_handlers(app)
    install_offline_docs(app)
    app.include_router(routes_jobs.router)
    app.include_router(routes_system.router)
    app.include_router(routes_review.router)
    app.state.review_settings = ReviewSettings()
    app.state.review_audit = ReviewAudit(job_service.store.root / "audit" / "review.jsonl")
    routes_ui.install(app)
    return app
