"""``JobService``: submit a CT series as a job and follow it, without the HTTP layer.

The HTTP API and the DICOM listener both use it, so both get the same checks, idempotency, store and dispatcher::

    from service.config import Settings
    from service.jobs.service import JobService
    from service.worker.dispatcher import make_dispatcher

    jobs = JobService.from_settings(Settings(), make_dispatcher)  # embedded pool, or Celery if PAROTID_BROKER_URL
    result = jobs.submit_series(folder_or_files, owner="dicom:SCANNER1", move=True)
    record = jobs.wait(result.job.id, timeout_s=600)      # or poll jobs.get_job(id)
    if record.state == "succeeded":
        rtstruct = jobs.output_path(record.id, "rtstruct")
    jobs.close()

``submit_series`` raises ``service.errors.InputError`` (code + message, paths given as the client named them)
for a series the pipeline would refuse, checked from the headers before anything is queued, and
``DispatchUnavailable`` when the job cannot be queued (broker down, queue full, disk full).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.config import Settings
from service.errors import ErrorCode, InputError, ServiceError
from service.jobs.dispatch import Dispatcher, DispatcherFactory, DispatchUnavailable
from service.jobs.ingest import check_reference, check_series, describe_paths, idempotency_key, write_manifest
from service.jobs.models import (
    INPUT_DIR,
    PREVIEW_FILE,
    QA_FILE,
    REFERENCE_FILE,
    RTSTRUCT_FILE,
    UNCERTAINTY_FILE,
    JobRecord,
    JobState,
)
from service.jobs.store import JobNotFound, JobStore
from service.model_bundle import resolve_bundle
from service.pipeline.plan import Plan
from service.pipeline.series_scan import list_input_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitResult:
    job: JobRecord
    created: bool  # False: the same series with the same model was already submitted by this owner


class JobService:
    def __init__(self, settings: Settings, store: JobStore, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher

    @classmethod
    def from_settings(cls, settings: Settings, make_dispatcher: DispatcherFactory, *, start: bool = True) -> JobService:
        """The job store at ``settings.job_dir`` with the dispatcher ``make_dispatcher`` builds for it (the
        composition roots pass ``service.worker.dispatcher.make_dispatcher``)."""
        store = JobStore(settings.job_dir).prepare()
        service = cls(settings, store, make_dispatcher(settings, store))
        if start:
            service.start()
        return service

    def start(self) -> None:
        self.dispatcher.start()

    def close(self) -> None:
        self.dispatcher.close()

    # ------------------------------------------------------------------ submit
    def check_capacity(self) -> None:
        """Refuse new work while the job store's disk is nearly full (DispatchUnavailable)."""
        free = self.store.free_bytes()
        if free < self.settings.min_free_disk_bytes:
            raise DispatchUnavailable(
                ErrorCode.INSUFFICIENT_STORAGE,
                f"only {free // 2**20} MiB free for the job store (PAROTID_MIN_FREE_DISK_BYTES "
                f"{self.settings.min_free_disk_bytes // 2**20} MiB); try again later",
                retry_after_s=300,
            )

    def submit_series(
        self,
        inputs: Path | Sequence[Path],
        *,
        owner: str,
        model: str | None = None,
        reference: Path | None = None,
        series_uid: str | None = None,
        move: bool = False,
        recompute: bool = False,
    ) -> SubmitResult:
        """Submit the CT series found in ``inputs`` (folders searched recursively, and/or files).

        The files are copied into the job store (moved with ``move=True``). ``model`` is NAME[:VERSION]
        (default: ``PAROTID_DEFAULT_MODEL``, else the promoted bundle); ``reference`` an RTSTRUCT to compare with.
        ``recompute``: a new job even when a succeeded one exists for the same series and model (it stays, but the
        new job takes over the idempotency key); a queued or running one is still returned.
        """
        staging = self.store.new_staging()
        try:
            (staging / INPUT_DIR).mkdir()
            names: dict[str, str] = {}
            for n, path in enumerate(list_input_files(inputs), 1):
                stored = f"{INPUT_DIR}/{n:06d}.dcm"
                (shutil.move if move else shutil.copyfile)(path, staging / stored)
                names[stored] = str(path)
            if reference is not None:
                shutil.copyfile(reference, staging / REFERENCE_FILE)
                names[REFERENCE_FILE] = str(reference)
            write_manifest(staging, names)
        except BaseException:
            self.store.discard(staging)
            raise
        return self.submit_staged(staging, owner=owner, model=model, series_uid=series_uid, recompute=recompute)

    def submit_staged(
        self,
        staging: Path,
        *,
        owner: str,
        model: str | None = None,
        series_uid: str | None = None,
        recompute: bool = False,
    ) -> SubmitResult:
        """Submit a staging folder (from ``store.new_staging()``) holding ``input/``, optionally ``reference.dcm``
        and ``manifest.json``. The folder becomes the job's folder, or is deleted."""
        try:
            self.check_capacity()
            ref = resolve_bundle(model or self.settings.default_model, self.settings.model_store)
            plan = Plan.load(ref.path / "plan.json")
            try:
                check = check_series(
                    staging / INPUT_DIR,
                    series_uid=series_uid,
                    min_slices=plan.min_slices,
                    model_spacing_mm_zyx=plan.spacing_mm_zyx,
                    memory_budget=self.settings.memory_budget_mb * 2**20,
                )
                ref_path = staging / REFERENCE_FILE
                ref_digest = check_reference(ref_path) if ref_path.exists() else None
            except InputError as exc:
                raise InputError(exc.code, describe_paths(exc.message, staging)) from None
            key = idempotency_key(owner, check, ref.spec, ref_digest)
            existing = self.store.find_by_key(key)
            if recompute and existing is not None and existing.state == JobState.SUCCEEDED:
                self.store.release_key(key, existing.id)  # the new job takes the key over; the old one stays
                log.info("job %s: same series and model submitted again, recomputing as asked", existing.id)
                existing = None
            if existing is not None and existing.state != JobState.FAILED:
                self.store.discard(staging)
                log.info("job %s: same series and model submitted again, existing job returned", existing.id)
                return SubmitResult(existing, created=False)
            record = JobRecord(
                id=uuid.uuid4().hex,
                owner=owner,
                model=ref.spec,
                series_instance_uid=check.series_instance_uid,
                idempotency_key=key,
                n_files=check.n_files,
                has_reference=ref_digest is not None,
                dispatcher="celery" if self.settings.celery_mode else "embedded",
            )
            self.store.create_from_staging(staging, record)
        except ServiceError as exc:  # the model store's location is not the client's business
            self.store.discard(staging)
            message = exc.message.replace(str(self.settings.model_store), "the model store")
            raise type(exc)(exc.code, message) from None
        except BaseException:
            self.store.discard(staging)
            raise
        holder = self.store.claim_key(key, record.id)
        if holder is not None:  # a concurrent submission of the same series won
            self.store.discard(self.store.job_path(record.id))
            return SubmitResult(self.store.get(holder), created=False)
        try:
            self.dispatcher.submit(record.id)
        except BaseException:
            self.store.delete(record.id)
            raise
        log.info("job %s: queued (%s, %d files, model %s)", record.id, record.dispatcher, check.n_files, ref.spec)
        return SubmitResult(record, created=True)

    # ------------------------------------------------------------------ follow
    def get_job(self, job_id: str, *, owner: str | None = None) -> JobRecord:
        """The job's record; JobNotFound if unknown or (with ``owner``) owned by someone else."""
        record = self.store.get(job_id)
        if owner is not None and record.owner != owner:
            raise JobNotFound(job_id)
        return record

    def list_jobs(self, *, owner: str | None = None) -> list[JobRecord]:
        return [r for r in self.store.list_jobs() if owner is None or r.owner == owner]

    def delete_job(self, job_id: str, *, owner: str | None = None) -> None:
        self.get_job(job_id, owner=owner)
        self.store.delete(job_id)

    def output_path(self, job_id: str, kind: str) -> Path:
        """``kind``: rtstruct, qa, preview or uncertainty. The file exists once the job succeeded."""
        return output_files(self.store, job_id)[kind]

    def wait(self, job_id: str, *, timeout_s: float, poll_s: float = 0.5) -> JobRecord:
        """Poll until the job is finished or ``timeout_s`` passed; returns the last record seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.store.get(job_id)
            if record.state.terminal or time.monotonic() >= deadline:
                return record
            time.sleep(poll_s)

    def cleanup(self) -> dict[str, int]:
        """Retention: delete finished jobs after PAROTID_RETENTION_S; fail stalled ones (see JobStore.cleanup)."""
        stall_s = self.settings.visibility_timeout_s + self.settings.hard_time_limit_s
        return self.store.cleanup(retention_s=self.settings.retention_s, stall_s=stall_s)


def output_files(store: JobStore, job_id: str) -> dict[str, Path]:
    """The output files of a succeeded job by kind (rtstruct, qa, preview, uncertainty)."""
    return {
        "rtstruct": store.output_path(job_id, RTSTRUCT_FILE),
        "qa": store.output_path(job_id, QA_FILE),
        "preview": store.output_path(job_id, PREVIEW_FILE),
        "uncertainty": store.output_path(job_id, UNCERTAINTY_FILE),
    }
