"""The review files' schemas (pydantic, versioned): geometry, revisions, the decision and the delivery hold.

Nothing here holds a patient name or ID: the geometry keeps UIDs, grid and series description/date only; the
reviewer is a member of staff; the free-text comment stays in the job folder and the API, never in a log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

REVIEW_SCHEMA_VERSION: Literal[1] = 1


class Gland(BaseModel):
    name: str
    label: int = Field(description="value of this structure in the label-map NIfTI files")
    roi_number: int = Field(description="(3006,0022) ROINumber in the RTSTRUCT")
    color: tuple[int, int, int] = Field(description="(3006,002A) ROIDisplayColor")


class ReviewGeometry(BaseModel):
    """The CT grid (canonical LPS, ``service.pipeline.volume``) and what a new RTSTRUCT revision must reference."""

    schema_version: Literal[1] = REVIEW_SCHEMA_VERSION
    shape_zyx: tuple[int, int, int]
    spacing_mm_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    slice_sop_instance_uids: list[str]
    slice_z_mm: list[float]
    series_description: str = ""
    series_date: str = ""
    glands: list[Gland]
    has_reference: bool = False


class Revision(BaseModel):
    schema_version: Literal[1] = REVIEW_SCHEMA_VERSION
    number: int = Field(description="0: the model's result; n: the n-th correction")
    base: int | None = Field(description="the revision this one edits (None for revision 0)")
    created_at: datetime
    author: str = Field(description="API key owner that saved it")
    sop_instance_uid: str
    edited: list[str] = Field(default_factory=list, description="structures changed in this revision")
    voxels_added: dict[str, int] = Field(default_factory=dict)
    voxels_removed: dict[str, int] = Field(default_factory=dict)
    volume_cc: dict[str, float] = Field(default_factory=dict)


class Decision(BaseModel):
    schema_version: Literal[1] = REVIEW_SCHEMA_VERSION
    decision: Literal["approved", "rejected"]
    reviewer: str
    comment: str = ""
    revision: int
    decided_at: datetime
    owner: str
    approved_sop_instance_uid: str | None = Field(
        None, description="the APPROVED copy's SOP Instance UID when approval marking is enabled"
    )


class Hold(BaseModel):
    """Written by the DICOM listener: the RTSTRUCT waits for a decision before going to ``destination``."""

    schema_version: Literal[1] = REVIEW_SCHEMA_VERSION
    destination: str
    held_at: datetime


class Release(BaseModel):
    """Written by the DICOM listener once it acted on a decision."""

    schema_version: Literal[1] = REVIEW_SCHEMA_VERSION
    action: Literal["queued", "withheld"]
    destination: str
    revision: int | None = None
    sop_instance_uid: str | None = None
    at: datetime
