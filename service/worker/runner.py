"""``run_job``: the one function both dispatchers call with a job id (the embedded pool and the Celery task).

Safe to call any number of times for one job: a finished job is left alone; a job whose run lock another live
process holds is left to it; every start counts in ``attempts`` and the start after ``max_attempts`` fails the
job (WORKER_LOST) instead of running it again (a series that kills its worker must not loop forever). Outputs
have fixed names and are written all-or-nothing by the pipeline, so a rerun leaves exactly one RTSTRUCT.

Logs carry the job id, stage and error code only: never a patient name or ID, never a pipeline message (it names
uploaded files, whose names may).
"""

from __future__ import annotations

import logging
import traceback

from service.config import Settings
from service.errors import ErrorCode, ServiceError
from service.jobs.ingest import describe_paths
from service.jobs.models import (
    INPUT_DIR,
    PREVIEW_FILE,
    QA_FILE,
    REFERENCE_FILE,
    RTSTRUCT_FILE,
    UNCERTAINTY_FILE,
    JobState,
    utc_now,
)
from service.jobs.stats import record_stage_times
from service.jobs.store import JobNotFound, JobStore
from service.pipeline.stages import PROGRESS_AT, Stage

log = logging.getLogger(__name__)


class _Progress:
    """Writes (stage, fraction) into the record; a deleted job stops the run at the next stage."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    def __call__(self, stage: str, fraction: float) -> None:
        self.store.update(self.job_id, stage=stage, progress=round(min(max(fraction, 0.0), 0.99), 3))
        log.info("job %s: %s", self.job_id, stage)


def run_job(
    store: JobStore,
    settings: Settings,
    job_id: str,
    *,
    timeout_exceptions: tuple[type[BaseException], ...] = (),
) -> JobState | None:
    """Run one job to a terminal state; returns the state, or None when there was nothing to do."""
    try:
        with store.run_lock(job_id) as acquired:
            if not acquired:
                log.warning("job %s: another worker process is running it; this delivery is skipped", job_id)
                return None
            return _run_locked(store, settings, job_id, timeout_exceptions)
    except JobNotFound:
        log.info("job %s: deleted, nothing to do", job_id)
        return None


def _run_locked(
    store: JobStore, settings: Settings, job_id: str, timeout_exceptions: tuple[type[BaseException], ...]
) -> JobState | None:
    record = store.get(job_id)
    if record.state.terminal:
        log.info("job %s: already %s, delivery ignored", job_id, record.state)
        return None
    if record.attempts >= settings.max_attempts:
        store.fail(
            job_id,
            ErrorCode.WORKER_LOST,
            f"the job was started {record.attempts} time(s) and its worker stopped each time before it "
            "finished (killed, out of memory, or the machine stopped); it is not retried again",
        )
        store.remove_inputs(job_id)
        log.error("job %s: failed WORKER_LOST after %d attempts", job_id, record.attempts)
        return JobState.FAILED
    record = store.update(
        job_id,
        state=JobState.RUNNING,
        attempts=record.attempts + 1,
        started_at=utc_now(),
        progress=0.0,
        stage=Stage.STARTING,
    )
    log.info("job %s: started (attempt %d of %d)", job_id, record.attempts, settings.max_attempts)
    folder = store.job_path(job_id)
    try:
        from service.pipeline.segment import segment_series

        qa = segment_series(
            folder / INPUT_DIR,
            rtstruct_path=store.output_path(job_id, RTSTRUCT_FILE),
            qa_path=store.output_path(job_id, QA_FILE),
            preview_path=store.output_path(job_id, PREVIEW_FILE),
            uncertainty_path=store.output_path(job_id, UNCERTAINTY_FILE),
            model=record.model,
            reference=folder / REFERENCE_FILE if record.has_reference else None,
            series_uid=record.series_instance_uid,
            store=settings.model_store,
            progress=_Progress(store, job_id),
            memory_budget=settings.memory_budget_mb * 2**20,  # the injected settings, not only the environment
            structures=settings.structures,
        )
    except JobNotFound:
        raise
    except ServiceError as exc:  # the input, or the model store (EnvironmentFault)
        return _finish_failed(store, job_id, str(exc.code), describe_paths(exc.message, folder))
    except timeout_exceptions:
        return _finish_failed(
            store,
            job_id,
            ErrorCode.TIMEOUT,
            f"the job ran longer than the time limit of {settings.job_time_limit_s} s",
        )
    except Exception as exc:
        if not store.exists(job_id):
            raise JobNotFound(job_id) from None
        frames = "".join(traceback.format_tb(exc.__traceback__))  # no exception text: it may quote input values
        log.error("job %s: unexpected %s\n%s", job_id, type(exc).__name__, frames)
        return _finish_failed(
            store,
            job_id,
            ErrorCode.INTERNAL_ERROR,
            f"unexpected {type(exc).__name__} in the worker; the worker log has the details (job {job_id})",
        )
    times = {k: float(v) for k, v in qa.stage_times_s.items()}
    _build_review_cache(store, job_id, record.series_instance_uid, record.has_reference, times)
    store.update(
        job_id,
        state=JobState.SUCCEEDED,
        progress=1.0,
        stage=Stage.DONE,
        finished_at=utc_now(),
        qa_status=qa.status,
        qa_glands=gland_quality(qa),
        stage_times_s=times,
        completions=record.completions + 1,
        error=None,
    )
    store.remove_inputs(job_id)
    record_stage_times(store.stats_dir, times)
    log.info("job %s: succeeded, QA %s", job_id, qa.status)
    return JobState.SUCCEEDED


def _build_review_cache(store: JobStore, job_id: str, series_uid: str, has_reference: bool, times: dict) -> None:
    """The review workstation's copy of the CT and masks (``service.review.cache``), made while the input files
    still exist; a failure is logged and never fails the job."""
    import time

    from service.review.cache import try_build_review_cache

    _Progress(store, job_id)(Stage.REVIEW_CACHE.value, PROGRESS_AT[Stage.REVIEW_CACHE])
    folder = store.job_path(job_id)
    t0 = time.perf_counter()
    try_build_review_cache(
        folder,
        job_id,
        inputs=folder / INPUT_DIR,
        rtstruct_path=store.output_path(job_id, RTSTRUCT_FILE),
        series_uid=series_uid,
        reference=folder / REFERENCE_FILE if has_reference else None,
    )
    times[Stage.REVIEW_CACHE.value] = round(time.perf_counter() - t0, 3)


def _finish_failed(store: JobStore, job_id: str, code: str, message: str) -> JobState:
    store.fail(job_id, code, message)
    store.remove_inputs(job_id)
    log.warning("job %s: failed %s", job_id, code)
    return JobState.FAILED


def gland_quality(qa) -> dict[str, dict]:
    """Per gland, what the job record keeps of the QA: status, quality estimate, flag codes."""
    out = {}
    for name, g in qa.glands.items():
        own = [f.severity for f in qa.reasons if f.gland == name]
        out[name] = {
            "status": "fail" if "fail" in own else "review" if own else "ok",
            "p_poor": g.quality.p_poor if g.quality else None,
            "predicted_dice": g.quality.predicted_dice if g.quality else None,
            "review_threshold": g.quality.review_threshold if g.quality else None,
            "flags": list(g.flags),
        }
    return out
