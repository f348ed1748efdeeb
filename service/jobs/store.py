"""The filesystem job store: one folder per job, shared by the API and every worker (a shared volume).

Layout under the root::

    jobs/<id>/job.json            the JobRecord, rewritten atomically (temp file + os.replace) under a lock
    jobs/<id>/input/ reference.dcm   the upload (deleted when the job finishes; the upload names in manifest.json
                                     are dropped when the job is created)
    jobs/<id>/output/             rtstruct.dcm, qa.json, preview.png (written by the pipeline, all or nothing)
    index/<key>                   the job id owning an idempotency key (created with O_EXCL: first writer wins)
    staging/<tmp>/                uploads being received; renamed to jobs/<id> when accepted
    trash/                        folders being deleted (renamed here first, so a deletion is atomic)
    stats/                        cumulative stage-duration histogram (service.jobs.stats)

Locks are ``fcntl.flock`` locks, released by the kernel when a process dies: ``.lock`` serialises record updates,
``.run.lock`` is held by whoever runs the job, so a job whose worker was killed is recognisable.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from service.errors import ErrorCode
from service.fileio import write_atomic
from service.jobs.models import (
    INPUT_DIR,
    JOB_FILE,
    JOB_ID_RE,
    MANIFEST_FILE,
    OUTPUT_DIR,
    JobError,
    JobRecord,
    JobState,
    utc_now,
)
from service.jobs.staging_owner import OWNER_FILE, owner_gone, write_owner


class JobNotFound(KeyError):
    """No job with this id (or a malformed id)."""


class JobStore:
    STAGING_MAX_AGE_S = 86400

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.index_dir = self.root / "index"
        self.staging_dir = self.root / "staging"
        self.trash_dir = self.root / "trash"
        self.stats_dir = self.root / "stats"

    def prepare(self) -> JobStore:
        """Create the folders (owner-only permissions)."""
        for d in (self.jobs_dir, self.index_dir, self.staging_dir, self.trash_dir, self.stats_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.remove_interrupted_staging()
        return self

    def remove_interrupted_staging(self) -> int:
        """Remove staging folders whose process (on this host) has ended: uploads interrupted by a crash."""
        removed = 0
        for path in list(self.staging_dir.iterdir()):
            if path.is_dir() and owner_gone(path):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    # ---------------------------------------------------------------- paths
    def job_path(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise JobNotFound(job_id)
        return self.jobs_dir / job_id

    def input_dir(self, job_id: str) -> Path:
        return self.job_path(job_id) / INPUT_DIR

    def output_path(self, job_id: str, name: str) -> Path:
        return self.job_path(job_id) / OUTPUT_DIR / name

    def new_staging(self) -> Path:
        path = self.staging_dir / uuid.uuid4().hex
        path.mkdir(mode=0o700)
        write_owner(path)
        return path

    def discard(self, path: Path) -> None:
        """Delete a folder: rename it into trash/ (atomic), then remove it."""
        target = self.trash_dir / f"{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        shutil.rmtree(target, ignore_errors=True)

    # ---------------------------------------------------------------- records
    def create_from_staging(self, staging: Path, record: JobRecord) -> JobRecord:
        """Write the record into the staged folder and rename it to ``jobs/<id>``. The upload's file names
        (``manifest.json``, often patient names) served the door's messages and are not kept with the job."""
        (staging / OUTPUT_DIR).mkdir(exist_ok=True)
        (staging / MANIFEST_FILE).unlink(missing_ok=True)
        (staging / OWNER_FILE).unlink(missing_ok=True)
        write_atomic(staging / JOB_FILE, record.model_dump_json(indent=2).encode())
        os.rename(staging, self.job_path(record.id))
        return record

    def get(self, job_id: str) -> JobRecord:
        path = self.job_path(job_id) / JOB_FILE
        try:
            return JobRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise JobNotFound(job_id) from None

    def exists(self, job_id: str) -> bool:
        try:
            return (self.job_path(job_id) / JOB_FILE).is_file()
        except JobNotFound:
            return False

    @contextmanager
    def _locked(self, job_id: str) -> Iterator[None]:
        try:
            fd = os.open(self.job_path(job_id) / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        except FileNotFoundError:
            raise JobNotFound(job_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Apply ``changes`` to the record under the job's lock; ``updated_at`` is set to now."""
        with self._locked(job_id):
            record = self.get(job_id)
            data = record.model_dump()
            data.update(changes, updated_at=utc_now())
            new = JobRecord.model_validate(data)
            write_atomic(self.job_path(job_id) / JOB_FILE, new.model_dump_json(indent=2).encode())
            return new

    def fail(self, job_id: str, code: str, message: str) -> JobRecord:
        return self.update(
            job_id, state=JobState.FAILED, finished_at=utc_now(), error=JobError(code=str(code), message=message)
        )

    def list_jobs(self) -> Iterator[JobRecord]:
        for path in sorted(self.jobs_dir.glob("*/" + JOB_FILE)):
            try:
                yield self.get(path.parent.name)
            except (JobNotFound, ValueError):
                continue  # deleted meanwhile, or not a job folder

    def delete(self, job_id: str) -> None:
        """Remove the job folder and its idempotency index entry (a running worker's later writes are lost)."""
        record = self.get(job_id)
        self._drop_index(record.idempotency_key, job_id)
        self.discard(self.job_path(job_id))

    def remove_inputs(self, job_id: str) -> None:
        path = self.input_dir(job_id)
        if path.exists():
            self.discard(path)

    @contextmanager
    def run_lock(self, job_id: str) -> Iterator[bool]:
        """Hold the job's run lock (non-blocking): yields False when another live process holds it."""
        try:
            fd = os.open(self.job_path(job_id) / ".run.lock", os.O_CREAT | os.O_RDWR, 0o600)
        except FileNotFoundError:
            raise JobNotFound(job_id) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def is_running_somewhere(self, job_id: str) -> bool:
        with self.run_lock(job_id) as acquired:
            return not acquired

    # ---------------------------------------------------------------- idempotency
    def claim_key(self, key: str, job_id: str) -> str | None:
        """Register ``job_id`` for ``key``; returns the id of a live, not-failed job that holds it already."""
        path = self.index_dir / key
        for _ in range(5):
            tmp = self.index_dir / f".{key}.{uuid.uuid4().hex}"
            tmp.write_text(job_id)
            try:
                os.link(tmp, path)  # atomic create-with-content: fails if the key is held
            except FileExistsError:
                holder = self._read_index(path)
                live = holder is not None and holder != job_id and self.exists(holder)
                if live and holder is not None and self.get(holder).state != JobState.FAILED:
                    return holder
                self._drop_index(key, holder)  # dangling, or a failed job: a new submission replaces it
                continue
            finally:
                tmp.unlink(missing_ok=True)
            return None
        raise RuntimeError(f"could not claim idempotency key {key}")

    def release_key(self, key: str, job_id: str) -> None:
        """Let go of ``key`` if ``job_id`` holds it (a recomputation replaces that job as the key's holder)."""
        self._drop_index(key, job_id)

    def find_by_key(self, key: str) -> JobRecord | None:
        holder = self._read_index(self.index_dir / key)
        if holder is None or not self.exists(holder):
            return None
        return self.get(holder)

    @staticmethod
    def _read_index(path: Path) -> str | None:
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _drop_index(self, key: str, job_id: str | None) -> None:
        path = self.index_dir / key
        if self._read_index(path) == job_id:
            path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- retention
    def cleanup(self, *, retention_s: float, stall_s: float, now: datetime | None = None) -> dict[str, int]:
        """Delete finished jobs older than ``retention_s``; fail jobs nobody runs and that made no progress for
        ``stall_s`` (their worker died and no redelivery came); drop abandoned staging folders and dangling index
        entries. Returns counts by action."""
        now = now or utc_now()
        counts = {"deleted": 0, "stalled": 0, "staging": 0, "index": 0}
        for record in list(self.list_jobs()):
            if record.state.terminal:
                if record.finished_at and record.finished_at < now - timedelta(seconds=retention_s):
                    self.delete(record.id)
                    counts["deleted"] += 1
            elif record.updated_at < now - timedelta(seconds=stall_s) and not self.is_running_somewhere(record.id):
                self.fail(
                    record.id,
                    ErrorCode.STALLED,
                    f"no progress for {int(stall_s)} s and no worker holds the job (its worker stopped and "
                    "no redelivery came, or it passed the hard time limit); submit it again",
                )
                self.remove_inputs(record.id)
                counts["stalled"] += 1
        counts["staging"] += self.remove_interrupted_staging()
        cutoff = time.time() - self.STAGING_MAX_AGE_S
        for path in list(self.staging_dir.iterdir()) + list(self.trash_dir.iterdir()):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
                    counts["staging"] += 1
            except FileNotFoundError:
                continue
        for path in list(self.index_dir.iterdir()):
            if path.name.startswith("."):
                continue
            holder = self._read_index(path)
            if holder is None or not self.exists(holder):
                path.unlink(missing_ok=True)
                counts["index"] += 1
        return counts

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def dump_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
