"""The listener's view of the service's jobs: submit a spooled series, poll its state, find its RTSTRUCT.

``JobBackend`` is the narrow interface the listener needs. ``ServiceJobBackend`` implements it on the service's
own job store and dispatcher (the same ones the HTTP API uses: embedded pool or Celery, chosen by
``PAROTID_BROKER_URL``), so idempotency (SeriesInstanceUID + pixel-data hash + model version), retention and
worker limits are the service's, not the listener's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service.errors import ErrorCode
from service.jobs.dispatch import DispatchUnavailable
from service.jobs.models import JobState
from service.jobs.service import JobService
from service.jobs.store import JobNotFound
from service.model_bundle import resolve_bundle
from service.pipeline.plan import Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    existing: bool  # True: the job store already had this series + pixel hash + model version


@dataclass(frozen=True)
class JobView:
    job_id: str
    state: JobState
    rtstruct_path: Path | None = None
    error_code: str | None = None
    error_message: str | None = None
    qa_status: str | None = None  # ok / review / fail once succeeded

    @property
    def done(self) -> bool:
        return self.state.terminal


class JobBackend(Protocol):
    def submit(
        self, batch_dir: Path, *, series_uid: str, model: str | None, owner: str, recompute: bool = False
    ) -> SubmittedJob:
        """Create (or find) the job for the DICOM files in ``batch_dir``; the backend takes the files over.
        ``recompute``: a new job even if a succeeded one exists for the same series and model."""
        ...

    def poll(self, job_id: str) -> JobView: ...

    def maintenance(self) -> None:
        """Called from the listener's loop; periodic upkeep of the job store (retention), if the backend has any."""
        ...

    def hold(self, job_id: str, destination: str) -> None:
        """Record that the job's RTSTRUCT waits for review before going to ``destination``."""
        ...

    def review_decision(self, job_id: str) -> tuple[str | None, Path | None, int | None]:
        """(decision, RTSTRUCT to deliver, revision): ("approved", path, n), ("rejected", None, n),
        (None, None, None) while undecided, ("gone", None, None) when the job no longer exists."""
        ...

    def released(self, job_id: str, action: str, destination: str, revision: int | None) -> None:
        """Record what the listener did with a decision ("queued" or "withheld")."""
        ...

    def close(self) -> None: ...


class SubmitLater(Exception):
    """The job could not be queued now (broker down, queue full, disk full); try again after ``retry_after_s``."""

    def __init__(self, code: ErrorCode | str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


def owner_for_ae(calling_ae: str) -> str:
    """The job-store owner of a DICOM peer's jobs: ``dicom:<AE title>`` (characters outside A-Z a-z 0-9 . _ @ : -
    become ``_``). An API key whose owner is this string sees the peer's jobs over HTTP."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._@:-") else "_" for c in calling_ae.strip())
    return f"dicom:{safe}"[:64]


class ServiceJobBackend:
    """``JobBackend`` on ``service.jobs.service.JobService`` (the HTTP API's store and dispatcher)."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self._last_cleanup = time.monotonic()

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceJobBackend:
        """Read ``service.config.Settings`` (``PAROTID_*``) and start its dispatcher (embedded pool or Celery).
        A composition root: the one place the listener meets ``service.worker``."""
        from service.config import Settings
        from service.worker.dispatcher import make_dispatcher

        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        return cls(JobService.from_settings(settings, make_dispatcher))

    def memory_limits(self, model: str | None) -> tuple[int, tuple[float, ...] | None]:
        """The job service's memory budget (bytes) and the model's plan spacing (None while no bundle resolves),
        for the listener's per-C-STORE estimate (``series_budget``)."""
        settings = self.service.settings
        try:
            ref = resolve_bundle(model or settings.default_model, settings.model_store)
            spacing: tuple[float, ...] | None = tuple(Plan.load(ref.path / "plan.json").spacing_mm_zyx)
        except Exception:  # noqa: BLE001 - no usable bundle yet: the CT-grid estimate alone (a lower bound)
            spacing = None
        return settings.memory_budget_mb * 2**20, spacing

    def submit(
        self, batch_dir: Path, *, series_uid: str, model: str | None, owner: str, recompute: bool = False
    ) -> SubmittedJob:
        try:
            res = self.service.submit_series(
                batch_dir, owner=owner, model=model, series_uid=series_uid, move=True, recompute=recompute
            )
        except DispatchUnavailable as exc:
            raise SubmitLater(exc.code, exc.message, float(exc.retry_after_s)) from None
        return SubmittedJob(res.job.id, existing=not res.created)

    def poll(self, job_id: str) -> JobView:
        try:
            rec = self.service.get_job(job_id)
        except JobNotFound:
            return JobView(job_id, JobState.FAILED, error_code=ErrorCode.JOB_NOT_FOUND, error_message="job deleted")
        rtstruct = self.service.output_path(job_id, "rtstruct") if rec.state == JobState.SUCCEEDED else None
        err = rec.error
        return JobView(
            job_id, rec.state, rtstruct, err.code if err else None, err.message if err else None, rec.qa_status
        )

    def maintenance(self) -> None:
        """The service's retention clean-up every PAROTID_CLEANUP_INTERVAL_S, as ``parotid-seg serve`` does, so a
        listener-only installation also deletes finished jobs after PAROTID_RETENTION_S. Safe beside an API doing
        the same on the shared store (a job the other process removed first is skipped)."""
        now = time.monotonic()
        if now - self._last_cleanup < self.service.settings.cleanup_interval_s:
            return
        self._last_cleanup = now
        try:
            counts = self.service.cleanup()
        except Exception as exc:  # noqa: BLE001 - a concurrent clean-up removed something first; next round
            log.warning("job store clean-up: %s", type(exc).__name__)
            return
        if any(counts.values()):
            log.info("job store clean-up: %s", counts)

    def _case(self, job_id: str):
        from service.review.store import ReviewCase

        return ReviewCase(self.service.store.job_path(job_id), job_id)

    def hold(self, job_id: str, destination: str) -> None:
        case = self._case(job_id)
        case.dir.mkdir(exist_ok=True)
        case.mark_held(destination)

    def review_decision(self, job_id: str) -> tuple[str | None, Path | None, int | None]:
        if not self.service.store.exists(job_id):
            return "gone", None, None
        case = self._case(job_id)
        decision = case.decision() if case.available else None
        if decision is None:
            return None, None, None
        if decision.decision == "approved":
            return "approved", case.final_rtstruct(), decision.revision
        return "rejected", None, decision.revision

    def released(self, job_id: str, action: str, destination: str, revision: int | None) -> None:
        from service.jobs.models import utc_now
        from service.review.models import Release

        case = self._case(job_id)
        sop = None
        if action == "queued" and (path := case.final_rtstruct()) is not None:
            import pydicom

            sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        case.mark_released(
            Release(action=action, destination=destination, revision=revision, sop_instance_uid=sop, at=utc_now())  # type: ignore[arg-type]
        )

    def close(self) -> None:
        self.service.close()
