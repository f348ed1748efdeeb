"""``/v1/jobs``: submit a CT series, follow the job, fetch its RTSTRUCT / QA / preview, delete it."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from service.api.auth import require_owner
from service.api.errors import ERROR_RESPONSES, ApiError
from service.api.schemas import JobListResponse, JobResponse
from service.api.uploads import TEXT_FIELDS, UploadLimits, receive_upload
from service.errors import ErrorCode, ServiceError
from service.jobs.dispatch import DispatchUnavailable
from service.jobs.models import JobRecord, JobState
from service.jobs.service import JobService

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "additionalProperties": False,
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "description": "the CT series: one part per DICOM file, or one zip archive of them",
                        },
                        "reference": {
                            "type": "string",
                            "format": "binary",
                            "description": "optional reference RTSTRUCT: adds Dice/HD95 to the QA",
                        },
                        "model": {
                            "type": "string",
                            "pattern": TEXT_FIELDS["model"][0],
                            "maxLength": TEXT_FIELDS["model"][1],
                            "description": "NAME[:VERSION] from GET /v1/models (default: the promoted model)",
                        },
                        "series_uid": {
                            "type": "string",
                            "pattern": TEXT_FIELDS["series_uid"][0],
                            "maxLength": TEXT_FIELDS["series_uid"][1],
                            "description": "SeriesInstanceUID when the upload holds several CT series",
                        },
                    },
                }
            }
        },
    }
}


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


@router.post(
    "",
    status_code=202,
    response_model=JobResponse,
    summary="Submit a CT series",
    description="Multipart upload. 202 with a new job; 200 with the existing job when this API key already "
    "submitted the same series (SeriesInstanceUID and pixel data) for the same model version. The series "
    "headers are checked at once: a series the pipeline would refuse gets 4xx with the pipeline's code.",
    responses={200: {"model": JobResponse, "description": "the same series was submitted before"}, **ERROR_RESPONSES},
    openapi_extra=UPLOAD_SCHEMA,
)
async def submit_job(
    request: Request, owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)
) -> Response:
    metrics = request.app.state.metrics
    settings = jobs.settings
    try:
        jobs.check_capacity()
        staging = jobs.store.new_staging()
        try:
            limits = UploadLimits(
                settings.max_upload_bytes,
                settings.max_upload_files,
                settings.zip_max_ratio,
                settings.min_free_disk_bytes,
            )
            upload = await receive_upload(request, staging, limits)
        except BaseException:
            jobs.store.discard(staging)
            raise
        result = await run_in_threadpool(
            jobs.submit_staged,
            staging,
            owner=owner,
            model=upload.fields.get("model") or None,
            series_uid=upload.fields.get("series_uid") or None,
        )
    except ServiceError:  # the input, or the model store
        metrics.submitted.labels("refused").inc()
        raise
    except DispatchUnavailable:
        metrics.submitted.labels("unavailable").inc()
        raise
    metrics.submitted.labels("created" if result.created else "existing").inc()
    body = JobResponse.from_record(result.job, existing=not result.created)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202 if result.created else 200, headers={"Location": body.links.self}
    )


@router.get("", response_model=JobListResponse, summary="This API key's jobs", responses=ERROR_RESPONSES)
def list_jobs(owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)) -> JobListResponse:
    records = sorted(jobs.list_jobs(owner=owner), key=lambda r: r.created_at)
    return JobListResponse(jobs=[JobResponse.from_record(r) for r in records])


@router.get(
    "/{job_id}", response_model=JobResponse, summary="Job state, progress, error, QA status", responses=ERROR_RESPONSES
)
def get_job(job_id: str, owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)) -> JobResponse:
    return JobResponse.from_record(jobs.get_job(job_id, owner=owner))


@router.delete("/{job_id}", status_code=204, summary="Delete the job and its files", responses=ERROR_RESPONSES)
def delete_job(job_id: str, owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)) -> Response:
    jobs.delete_job(job_id, owner=owner)
    log.info("job %s: deleted by its owner", job_id)
    return Response(status_code=204)


def _output(jobs: JobService, owner: str, job_id: str, kind: str) -> tuple[JobRecord, Path]:
    record = jobs.get_job(job_id, owner=owner)
    if record.state != JobState.SUCCEEDED:
        detail = f"failed ({record.error.code})" if record.error else str(record.state)
        message = f"job {job_id} is {detail}; outputs exist only for succeeded jobs"
        raise ApiError(409, ErrorCode.JOB_NOT_SUCCEEDED, message)
    path = jobs.output_path(job_id, kind)
    if not path.is_file():
        raise ApiError(404, ErrorCode.OUTPUT_NOT_FOUND, f"job {job_id} has no {kind} output")
    return record, path


@router.get(
    "/{job_id}/rtstruct",
    summary="The RTSTRUCT (DICOM)",
    response_class=FileResponse,
    responses={200: {"content": {"application/dicom": {}}}, **ERROR_RESPONSES},
)
def get_rtstruct(job_id: str, owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)):
    _, path = _output(jobs, owner, job_id, "rtstruct")
    return FileResponse(path, media_type="application/dicom", filename=f"RS_{job_id}.dcm")


@router.get(
    "/{job_id}/qa",
    summary="The QA report (JSON, versioned schema)",
    responses={200: {"content": {"application/json": {}}}, **ERROR_RESPONSES},
)
def get_qa(job_id: str, owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)):
    _, path = _output(jobs, owner, job_id, "qa")
    return FileResponse(path, media_type="application/json")


@router.get(
    "/{job_id}/uncertainty.nii.gz",
    summary="The QA's uncertainty map on the CT grid (NIfTI, float32 in [0, 1])",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}}, **ERROR_RESPONSES},
)
def get_uncertainty(job_id: str, owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)):
    _, path = _output(jobs, owner, job_id, "uncertainty")
    return FileResponse(path, media_type="application/gzip", filename=f"uncertainty_{job_id}.nii.gz")


@router.get(
    "/{job_id}/preview.png",
    summary="Preview image (PNG)",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **ERROR_RESPONSES},
)
def get_preview(job_id: str, owner: str = Depends(require_owner), jobs: JobService = Depends(get_jobs)):
    _, path = _output(jobs, owner, job_id, "preview")
    return FileResponse(path, media_type="image/png")
