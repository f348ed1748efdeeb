"""Response bodies of the HTTP API, version 1 (``schema_version: "1"`` in every body)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.jobs.models import JobRecord, JobState
from service.pipeline.qa_schema import ModelInfo as BundleIdentity

API_SCHEMA_VERSION: Literal["1"] = "1"


class ErrorDetail(BaseModel):
    code: str = Field(description="stable code, e.g. TOO_FEW_SLICES, UNSAFE_ARCHIVE, BROKER_UNAVAILABLE")
    message: str = Field(description="what was wrong, naming the file and DICOM attribute where relevant")


class ErrorResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    error: ErrorDetail


class JobLinks(BaseModel):
    self: str
    rtstruct: str
    qa: str
    preview: str
    uncertainty: str


class GlandQualityResponse(BaseModel):
    status: Literal["ok", "review", "fail"] = Field(description="this gland's own QA status")
    p_poor: float | None = Field(description="estimated probability of a poor contour (null: bundle not calibrated)")
    predicted_dice: float | None
    review_threshold: float | None
    flags: list[str] = Field(description="codes of the QA flags raised for this gland (details in the QA JSON)")


class JobResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    id: str
    state: JobState
    progress: float = Field(description="0 to 1")
    stage: str | None = Field(description="pipeline stage last started")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model: str = Field(description="model bundle name:version used for this job")
    series_instance_uid: str
    n_files: int
    has_reference: bool
    attempts: int = Field(description="times a worker started the job (more than 1 after a redelivery)")
    error: ErrorDetail | None
    qa_status: Literal["ok", "review", "fail"] | None = Field(description="set when the job succeeded")
    qa_glands: dict[str, GlandQualityResponse] = Field(
        default_factory=dict, description="per gland QA status and quality estimate, set when the job succeeded"
    )
    existing: bool = Field(False, description="POST only: true when this series and model were submitted before")
    links: JobLinks

    @classmethod
    def from_record(cls, record: JobRecord, *, existing: bool = False) -> JobResponse:
        base = f"/v1/jobs/{record.id}"
        error = ErrorDetail(code=record.error.code, message=record.error.message) if record.error else None
        qa_status = record.qa_status if record.qa_status in ("ok", "review", "fail") else None
        return cls(
            id=record.id,
            state=record.state,
            progress=record.progress,
            stage=record.stage,
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            model=record.model,
            series_instance_uid=record.series_instance_uid,
            n_files=record.n_files,
            has_reference=record.has_reference,
            attempts=record.attempts,
            error=error,
            qa_status=qa_status,  # type: ignore[arg-type]
            qa_glands=_gland_quality(record.qa_glands),
            existing=existing,
            links=JobLinks(
                self=base,
                rtstruct=f"{base}/rtstruct",
                qa=f"{base}/qa",
                preview=f"{base}/preview.png",
                uncertainty=f"{base}/uncertainty.nii.gz",
            ),
        )


def _gland_quality(raw: dict[str, dict]) -> dict[str, GlandQualityResponse]:
    out = {}
    for name, q in raw.items():
        try:
            out[name] = GlandQualityResponse.model_validate(q)
        except ValueError:
            continue  # a record written by another version: leave the gland out rather than fail the response
    return out


class JobListResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    jobs: list[JobResponse]


class ModelInfo(BundleIdentity):
    """A bundle of the model store: its name and version as the QA report gives them, and how to ask for it."""

    spec: str = Field(description="name:version, accepted by POST /v1/jobs 'model'")
    default: bool = Field(description="used when a request names no model")


class ModelsResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str


class ReadyResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    ready: bool
    mode: Literal["embedded", "celery"]
    checks: dict[str, Check] = Field(description="queue (broker or embedded pool), model, disk")
