"""Bodies of the review endpoints (``schema_version: "1"``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.api.schemas import API_SCHEMA_VERSION, JobResponse
from service.review.models import Decision, Gland, Hold, Release, Revision


class ReviewFiles(BaseModel):
    ct: str
    masks: str = Field(description="label map of the latest revision (?revision=N for another)")
    reference: str | None
    uncertainty: str | None


class ReviewDelivery(BaseModel):
    policy: Literal["review_before_send", "direct", "none"] = Field(
        description="review_before_send: a DICOM listener peer's RTSTRUCT waits for approval; direct: it was sent "
        "as soon as the job finished; none: the result stays here (HTTP jobs)"
    )
    hold: Hold | None
    release: Release | None


class ReviewResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    job_id: str
    route: Literal["http", "dicom"] = Field(description="how the series arrived")
    sender: str | None = Field(description="the DICOM peer's AE title for listener jobs")
    series_instance_uid: str
    series_description: str
    series_date: str
    shape_zyx: tuple[int, int, int]
    spacing_mm_zyx: tuple[float, float, float]
    glands: list[Gland]
    revisions: list[Revision]
    latest_revision: int
    decision: Decision | None
    mark_approved: bool = Field(description="an approval also writes an APPROVED copy of the RTSTRUCT")
    delivery: ReviewDelivery
    files: ReviewFiles


class ReviewJob(BaseModel):
    job: JobResponse
    route: Literal["http", "dicom"]
    sender: str | None
    series_description: str | None
    series_date: str | None
    qa_reasons: list[str] = Field(description="the QA flags' messages")
    gland_quality: dict[str, float] = Field(description="per structure: the model's mean probability inside it")
    decision: Literal["approved", "rejected"] | None
    revisions: int
    held_for: str | None = Field(description="destination waiting for approval (review-before-send peers)")


class ReviewJobList(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    jobs: list[ReviewJob] = Field(description="newest first")


class DecisionRequest(BaseModel):
    decision: Literal["approved", "rejected"]
    reviewer: str = Field(min_length=1, max_length=64, pattern=r"^[^\\\x00-\x1f]+$")
    comment: str = Field(default="", max_length=2000)
    revision: int = Field(ge=0, description="the revision decided on; must be the latest")


class DecisionResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    decision: Decision
    existing: bool = Field(description="true when this decision had been recorded before (idempotent repeat)")
    decided_at: datetime


class RevisionResponse(BaseModel):
    schema_version: Literal["1"] = API_SCHEMA_VERSION
    revision: Revision
    existing: bool = Field(description="true when the same edit had been saved before (idempotent repeat)")
