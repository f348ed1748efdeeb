"""``/v1/jobs/{id}/review``, ``/revisions``, ``/decision`` and ``/v1/review/jobs``: the review workstation's API.

Owner-scoped like every job endpoint (another key's job is 404). The CT and masks are served as gzipped NIfTI
from the job's review cache (``service.review.cache``, written by the worker); revisions and decisions are files
in the same folder (``service.review.store``), recorded in the job record and the review audit log.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from service.api.auth import require_owner
from service.api.errors import ERROR_RESPONSES, ApiError
from service.api.review_schemas import (
    DecisionRequest,
    DecisionResponse,
    ReviewDelivery,
    ReviewFiles,
    ReviewJob,
    ReviewJobList,
    ReviewResponse,
    RevisionResponse,
)
from service.api.schemas import JobResponse
from service.jobs.models import UNCERTAINTY_FILE, JobRecord, JobState
from service.jobs.service import JobService
from service.review.audit import ReviewAudit
from service.review.cache import CT_FILE, REFERENCE_FILE
from service.review.nifti import read_label_nifti
from service.review.settings import ReviewSettings
from service.review.store import ReviewCase, ReviewError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["review"])
NIFTI: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/gzip": {}}, "description": "gzipped NIfTI-1, RAS voxel order"}
}


def _jobs(request: Request) -> JobService:
    return request.app.state.jobs


def _settings(request: Request) -> ReviewSettings:
    return request.app.state.review_settings


def _audit(request: Request) -> ReviewAudit:
    return request.app.state.review_audit


def _case(jobs: JobService, owner: str, job_id: str) -> tuple[JobRecord, ReviewCase]:
    record = jobs.get_job(job_id, owner=owner)
    if record.state != JobState.SUCCEEDED:
        raise ApiError(409, "JOB_NOT_SUCCEEDED", f"job {job_id} is {record.state}; only a succeeded job is reviewed")
    case = ReviewCase(jobs.store.job_path(job_id), job_id)
    if not case.available:
        raise ApiError(404, "REVIEW_NOT_AVAILABLE", f"job {job_id} has no review data (built when the job finishes)")
    return record, case


def _route(owner: str) -> tuple[str, str | None]:
    return ("dicom", owner.removeprefix("dicom:")) if owner.startswith("dicom:") else ("http", None)


def _raise(exc: ReviewError) -> ApiError:
    return ApiError(exc.status, str(exc.code), exc.message)


@router.get(
    "/jobs/{job_id}/review",
    response_model=ReviewResponse,
    summary="Everything the viewer needs",
    responses=ERROR_RESPONSES,
)
def get_review(job_id: str, request: Request, owner: str = Depends(require_owner)) -> ReviewResponse:
    jobs = _jobs(request)
    record, case = _case(jobs, owner, job_id)
    try:
        geometry, revisions = case.geometry(), case.revisions()
    except ReviewError as exc:
        raise _raise(exc) from None
    route, sender = _route(record.owner)
    hold, release = case.hold(), case.release()
    policy = "review_before_send" if hold else ("direct" if route == "dicom" else "none")
    base = f"/v1/jobs/{job_id}/review"
    has_unc = jobs.store.output_path(job_id, UNCERTAINTY_FILE).is_file()
    return ReviewResponse(
        job_id=job_id,
        route=route,  # type: ignore[arg-type]
        sender=sender,
        series_instance_uid=geometry.series_instance_uid,
        series_description=geometry.series_description,
        series_date=geometry.series_date,
        shape_zyx=geometry.shape_zyx,
        spacing_mm_zyx=geometry.spacing_mm_zyx,
        glands=geometry.glands,
        revisions=revisions,
        latest_revision=revisions[-1].number,
        decision=case.decision(),
        mark_approved=_settings(request).mark_approved,
        delivery=ReviewDelivery(policy=policy, hold=hold, release=release),  # type: ignore[arg-type]
        files=ReviewFiles(
            ct=f"{base}/ct.nii.gz",
            masks=f"{base}/masks.nii.gz",
            reference=f"{base}/reference.nii.gz" if geometry.has_reference else None,
            uncertainty=f"{base}/uncertainty.nii.gz" if has_unc else None,
        ),
    )


def _nifti(path: Path, name: str) -> FileResponse:
    if not path.is_file():
        raise ApiError(404, "OUTPUT_NOT_FOUND", f"no {name} for this job")
    return FileResponse(
        path, media_type="application/gzip", filename=name, headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get(
    "/jobs/{job_id}/review/ct.nii.gz",
    summary="The CT (HU, int16) as NIfTI",
    response_class=FileResponse,
    responses={**NIFTI, **ERROR_RESPONSES},
)
def get_ct(job_id: str, request: Request, owner: str = Depends(require_owner)):
    _, case = _case(_jobs(request), owner, job_id)
    return _nifti(case.dir / CT_FILE, "ct.nii.gz")


@router.get(
    "/jobs/{job_id}/review/masks.nii.gz",
    summary="The structures as a label map (NIfTI)",
    response_class=FileResponse,
    responses={**NIFTI, **ERROR_RESPONSES},
)
def get_masks(
    job_id: str, request: Request, revision: int | None = Query(None, ge=0), owner: str = Depends(require_owner)
):
    _, case = _case(_jobs(request), owner, job_id)
    try:
        number = case.latest().number if revision is None else revision
        return _nifti(case.masks_path(number), "masks.nii.gz")
    except ReviewError as exc:
        raise _raise(exc) from None


@router.get(
    "/jobs/{job_id}/review/reference.nii.gz",
    summary="The reference structures (label map)",
    response_class=FileResponse,
    responses={**NIFTI, **ERROR_RESPONSES},
)
def get_reference(job_id: str, request: Request, owner: str = Depends(require_owner)):
    _, case = _case(_jobs(request), owner, job_id)
    return _nifti(case.dir / REFERENCE_FILE, "reference.nii.gz")


@router.get(
    "/jobs/{job_id}/review/uncertainty.nii.gz",
    summary="The uncertainty map, when QA made one",
    response_class=FileResponse,
    responses={**NIFTI, **ERROR_RESPONSES},
)
def get_uncertainty(job_id: str, request: Request, owner: str = Depends(require_owner)):
    jobs = _jobs(request)
    _case(jobs, owner, job_id)
    return _nifti(jobs.store.output_path(job_id, UNCERTAINTY_FILE), UNCERTAINTY_FILE)


@router.post(
    "/jobs/{job_id}/revisions",
    status_code=201,
    response_model=RevisionResponse,
    summary="Save a corrected mask as a new RTSTRUCT revision",
    description="``mask``: a NIfTI label map on the CT grid (as served by .../review/masks.nii.gz; values are the "
    "structures' labels). ``base_revision``: the revision it edits; when that is no longer the latest the answer "
    "is 409 REVISION_STALE (the same edit sent twice returns the saved revision with 200). ``gland``: take only "
    "this structure from the mask. The new RTSTRUCT keeps ROI numbers, colours and CT references, has a new SOP "
    "Instance UID and ROIGenerationAlgorithm SEMIAUTOMATIC for the edited structures; earlier revisions are kept.",
    responses={200: {"model": RevisionResponse}, **ERROR_RESPONSES},
)
async def post_revision(
    job_id: str,
    request: Request,
    mask: UploadFile = File(..., description="NIfTI label map (.nii or .nii.gz)"),
    base_revision: int = Form(..., ge=0),
    gland: str | None = Form(None, max_length=64),
    owner: str = Depends(require_owner),
) -> JSONResponse:
    jobs = _jobs(request)
    record, case = _case(jobs, owner, job_id)
    limit = _settings(request).max_mask_bytes
    data = await mask.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "UPLOAD_TOO_LARGE", f"mask: more than {limit} bytes")
    geometry = case.geometry()
    labels = await run_in_threadpool(
        read_label_nifti,
        data,
        geometry.shape_zyx,
        geometry.spacing_mm_zyx,
        geometry.origin_lps,
        name=mask.filename or "mask",
    )
    try:
        revision, created = await run_in_threadpool(
            case.add_revision, labels, base=base_revision, author=owner, gland=gland or None
        )
    except ReviewError as exc:
        raise _raise(exc) from None
    if created:
        _audit(request).record(
            "revision_saved",
            job_id=job_id,
            owner=owner,
            revision=revision.number,
            base=revision.base,
            edited=revision.edited,
            voxels_added=revision.voxels_added,
            voxels_removed=revision.voxels_removed,
            sop_instance_uid=revision.sop_instance_uid,
        )
        jobs.store.update(job_id, review=_summary(case))
    body = RevisionResponse(revision=revision, existing=not created)
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if created else 200)


@router.get(
    "/jobs/{job_id}/revisions/{number}/rtstruct",
    summary="The RTSTRUCT of one revision",
    response_class=FileResponse,
    responses={200: {"content": {"application/dicom": {}}}, **ERROR_RESPONSES},
)
def get_revision_rtstruct(job_id: str, number: int, request: Request, owner: str = Depends(require_owner)):
    _, case = _case(_jobs(request), owner, job_id)
    try:
        path = case.rtstruct_path(number)
    except ReviewError as exc:
        raise _raise(exc) from None
    return FileResponse(path, media_type="application/dicom", filename=f"RS_{job_id}_rev{number}.dcm")


@router.post(
    "/jobs/{job_id}/decision",
    status_code=201,
    response_model=DecisionResponse,
    summary="Approve or reject the latest revision",
    description="Final and idempotent: the same decision again returns the recorded one (200); a different "
    "decision, or a decision on a revision that is not the latest, is 409. An approval releases the RTSTRUCT "
    "held for a review-before-send DICOM peer; a rejected result is never delivered.",
    responses={200: {"model": DecisionResponse}, **ERROR_RESPONSES},
)
def post_decision(
    job_id: str, body: DecisionRequest, request: Request, owner: str = Depends(require_owner)
) -> JSONResponse:
    jobs = _jobs(request)
    _, case = _case(jobs, owner, job_id)
    try:
        decision, created = case.decide(
            body.decision,
            reviewer=body.reviewer.strip(),
            comment=body.comment,
            revision=body.revision,
            owner=owner,
            mark_approved=_settings(request).mark_approved,
        )
    except ReviewError as exc:
        raise _raise(exc) from None
    if created:
        _audit(request).record(
            "decision",
            job_id=job_id,
            owner=owner,
            revision=decision.revision,
            decision=decision.decision,
            reviewer=decision.reviewer,
            has_comment=bool(decision.comment),
            approved_sop_instance_uid=decision.approved_sop_instance_uid,
        )
        jobs.store.update(job_id, review=_summary(case))
    out = DecisionResponse(decision=decision, existing=not created, decided_at=decision.decided_at)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)


def _summary(case: ReviewCase) -> dict:
    """What the job record keeps of the review (``JobRecord.review``)."""
    d = case.decision()
    latest = case.latest()
    return {
        "revisions": latest.number,
        "decision": d.decision if d else None,
        "reviewer": d.reviewer if d else None,
        "comment": d.comment if d else None,
        "decided_at": d.decided_at.isoformat() if d else None,
        "decided_revision": d.revision if d else None,
    }


@router.get(
    "/review/jobs",
    response_model=ReviewJobList,
    summary="This API key's jobs for the review list",
    responses=ERROR_RESPONSES,
)
def list_review_jobs(request: Request, owner: str = Depends(require_owner)) -> ReviewJobList:
    jobs = _jobs(request)
    out = []
    for record in sorted(jobs.list_jobs(owner=owner), key=lambda r: r.created_at, reverse=True):
        route, sender = _route(record.owner)
        case = ReviewCase(jobs.store.job_path(record.id), record.id)
        description = date = None
        decision, revisions, held = None, 0, None
        if record.state == JobState.SUCCEEDED and case.available:
            g = case.geometry()
            description, date = g.series_description, g.series_date
            d = case.decision()
            decision = d.decision if d else None
            revisions = case.latest().number
            hold = case.hold()
            held = hold.destination if hold and not case.release() else None
        reasons, quality = _qa_summary(jobs.store.output_path(record.id, "qa.json"))
        out.append(
            ReviewJob(
                job=JobResponse.from_record(record),
                route=route,  # type: ignore[arg-type]
                sender=sender,
                series_description=description,
                series_date=date,
                qa_reasons=reasons,
                gland_quality=quality,
                decision=decision,
                revisions=revisions,
                held_for=held,
            )
        )
    return ReviewJobList(jobs=out)


def _qa_summary(path: Path) -> tuple[list[str], dict[str, float]]:
    try:
        qa = json.loads(path.read_text())
    except (OSError, ValueError):
        return [], {}
    reasons = [str(r.get("message", "")) for r in qa.get("reasons", []) if isinstance(r, dict)]
    glands = qa.get("glands", {})
    quality = {str(n): float(g.get("mean_probability", 0.0)) for n, g in glands.items() if isinstance(g, dict)}
    return reasons, quality
