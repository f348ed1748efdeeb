"""The job record (``job.json`` in each job folder) and the names of the files around it.

A job moves queued -> running -> succeeded | failed. A redelivered job (its worker died) goes back through
running with ``attempts`` counting every start; ``max_attempts`` starts end in failed (WORKER_LOST).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JOB_SCHEMA_VERSION: Literal[1] = 1
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")

# file names inside a job folder
JOB_FILE = "job.json"
INPUT_DIR = "input"
MANIFEST_FILE = "manifest.json"  # stored input name -> name as uploaded (for error messages only)
REFERENCE_FILE = "reference.dcm"
OUTPUT_DIR = "output"
RTSTRUCT_FILE = "rtstruct.dcm"
QA_FILE = "qa.json"
PREVIEW_FILE = "preview.png"
UNCERTAINTY_FILE = "uncertainty.nii.gz"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


class JobError(BaseModel):
    code: str
    message: str


def utc_now() -> datetime:
    return datetime.now(UTC)


class JobRecord(BaseModel):
    """What the store knows about one job. Never holds patient names or IDs."""

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = JOB_SCHEMA_VERSION
    id: str
    owner: str
    state: JobState = JobState.QUEUED
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    stage: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model: str  # name:version, resolved when the job was created
    series_instance_uid: str
    idempotency_key: str
    n_files: int = 0
    has_reference: bool = False
    dispatcher: Literal["embedded", "celery"] = "embedded"
    attempts: int = 0
    completions: int = 0  # times a run reached succeeded; stays 1 however often a task is delivered
    error: JobError | None = None
    qa_status: str | None = None
    # per gland: status (ok/review/fail), p_poor, predicted_dice, review_threshold, flags (QA schema 1.1)
    qa_glands: dict[str, dict] = Field(default_factory=dict)
    stage_times_s: dict[str, float] = Field(default_factory=dict)
    # the review workstation's summary (service.api.routes_review): revisions, decision, reviewer, time, comment
    review: dict[str, Any] | None = None
