"""Build a finished job's review cache: what the viewer shows, written once by the worker before the job's input
files are deleted (they are the only copy of the CT).

``jobs/<id>/review/``::

    ct.nii.gz          the CT in HU (int16), RAS voxel order (``service.review.nifti``)
    geometry.json      ReviewGeometry: grid, UIDs, structures (label, ROI number, colour), series description/date
    reference.nii.gz   the reference RTSTRUCT rasterized on the CT as a label map (when one was given)
    revisions/0/       revision.json + masks.nii.gz: the model's RTSTRUCT rasterized back on the CT (label map)

The masks come from rasterizing the RTSTRUCT the planning system receives (``read_rtstruct_masks``), not from
the model's in-memory masks, so the viewer shows what will be delivered. Failing to build the cache never fails
the job: it is logged (job id and exception type only) and the review endpoints answer 404 REVIEW_NOT_AVAILABLE.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom

from service.fileio import write_atomic
from service.pipeline.rtstruct_read import read_rtstruct_masks
from service.pipeline.series import load_series
from service.pipeline.volume import Volume
from service.review.models import Gland, ReviewGeometry, Revision
from service.review.nifti import nifti_bytes

log = logging.getLogger(__name__)

REVIEW_DIR = "review"
CT_FILE = "ct.nii.gz"
GEOMETRY_FILE = "geometry.json"
REFERENCE_FILE = "reference.nii.gz"
REVISIONS_DIR = "revisions"
MASKS_FILE = "masks.nii.gz"
REVISION_FILE = "revision.json"
RTSTRUCT_FILE = "rtstruct.dcm"


def glands_of(rtstruct: pydicom.Dataset) -> list[Gland]:
    """Structures in (3006,0020) StructureSetROISequence order, label = position + 1, with their
    (3006,002A) ROIDisplayColor from (3006,0039) ROIContourSequence."""
    colors = {int(c.ReferencedROINumber): c.get("ROIDisplayColor") for c in rtstruct.get("ROIContourSequence", [])}
    out = []
    for n, roi in enumerate(rtstruct.StructureSetROISequence, start=1):
        color = colors.get(int(roi.ROINumber)) or (255, 255, 0)
        out.append(
            Gland(
                name=str(roi.ROIName),
                label=n,
                roi_number=int(roi.ROINumber),
                color=(int(color[0]), int(color[1]), int(color[2])),
            )
        )
    return out


def label_map(masks: dict[str, np.ndarray], glands: list[Gland], shape_zyx) -> np.ndarray:
    out = np.zeros(shape_zyx, dtype=np.uint8)
    for g in glands:
        if g.name in masks:
            out[np.asarray(masks[g.name], dtype=bool)] = g.label
    return out


def volume_cc(labels: np.ndarray, glands: list[Gland], spacing_mm_zyx) -> dict[str, float]:
    voxel_cc = float(np.prod(spacing_mm_zyx)) / 1000.0
    return {g.name: round(int(np.count_nonzero(labels == g.label)) * voxel_cc, 3) for g in glands}


def _series_header(ct: Volume) -> tuple[str, str]:
    """(0008,103E) SeriesDescription and (0008,0021) SeriesDate (else (0008,0020) StudyDate) of the first file."""
    files = ct.info.source_files if ct.info else ()
    if not files:
        return "", ""
    try:
        ds = pydicom.dcmread(
            files[0], stop_before_pixels=True, specific_tags=["SeriesDescription", "SeriesDate", "StudyDate"]
        )
    except Exception:  # noqa: BLE001 - the series was read already; a header we cannot reread only loses a label
        return "", ""
    return str(ds.get("SeriesDescription", "") or "")[:64], str(
        ds.get("SeriesDate", "") or ds.get("StudyDate", "") or ""
    )


def build_review_cache(
    job_folder: Path,
    inputs: Path,
    rtstruct_path: Path,
    *,
    series_uid: str,
    reference: Path | None = None,
    author: str = "model",
) -> Path:
    """Write ``job_folder/review`` (all or nothing: built in a temp folder, then renamed). Returns its path."""
    from datetime import UTC, datetime

    final = job_folder / REVIEW_DIR
    if (final / GEOMETRY_FILE).is_file():
        return final
    tmp = job_folder / f".{REVIEW_DIR}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        ct = load_series(inputs, series_uid=series_uid, min_slices=1)
        assert ct.info is not None  # load_series always sets it
        rs = pydicom.dcmread(rtstruct_path)
        glands = glands_of(rs)
        names = [g.name for g in glands]
        masks = read_rtstruct_masks(rtstruct_path, ct, names)
        labels = label_map(masks, glands, ct.shape_zyx)
        description, date = _series_header(ct)
        write_atomic(
            tmp / CT_FILE,
            nifti_bytes(np.clip(ct.array_zyx, -32768, 32767).astype(np.int16), ct.spacing_mm_zyx, ct.origin_lps),
        )
        has_reference = False
        if reference is not None and reference.is_file():
            ref_masks = read_rtstruct_masks(reference, ct, names, require_all=False)
            write_atomic(
                tmp / REFERENCE_FILE,
                nifti_bytes(label_map(ref_masks, glands, ct.shape_zyx), ct.spacing_mm_zyx, ct.origin_lps),
            )
            has_reference = True
        info = ct.info
        z_mm = list(info.slice_z_mm) or [ct.origin_lps[2] + k * ct.spacing_mm_zyx[0] for k in range(ct.shape_zyx[0])]
        geometry = ReviewGeometry(
            shape_zyx=ct.shape_zyx,
            spacing_mm_zyx=ct.spacing_mm_zyx,
            origin_lps=ct.origin_lps,
            series_instance_uid=info.series_instance_uid,
            study_instance_uid=info.study_instance_uid,
            frame_of_reference_uid=info.frame_of_reference_uid,
            sop_class_uid=info.sop_class_uid,
            slice_sop_instance_uids=list(info.slice_sop_instance_uids),
            slice_z_mm=[float(z) for z in z_mm],
            series_description=description,
            series_date=date,
            glands=glands,
            has_reference=has_reference,
        )
        rev0 = tmp / REVISIONS_DIR / "0"
        rev0.mkdir(parents=True)
        write_atomic(rev0 / MASKS_FILE, nifti_bytes(labels, ct.spacing_mm_zyx, ct.origin_lps))
        revision = Revision(
            number=0,
            base=None,
            created_at=datetime.now(UTC),
            author=author,
            sop_instance_uid=str(rs.SOPInstanceUID),
            volume_cc=volume_cc(labels, glands, ct.spacing_mm_zyx),
        )
        write_atomic(rev0 / REVISION_FILE, revision.model_dump_json(indent=2).encode())
        # geometry last: its presence marks a complete cache
        write_atomic(tmp / GEOMETRY_FILE, geometry.model_dump_json(indent=2).encode())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def try_build_review_cache(job_folder: Path, job_id: str, **kwargs) -> bool:
    """:func:`build_review_cache`, logging (job id and exception type, never a message) instead of raising."""
    try:
        build_review_cache(job_folder, **kwargs)
        return True
    except Exception as exc:  # noqa: BLE001 - the result is delivered anyway; only the viewer lacks data
        log.error("job %s: review cache not built (%s)", job_id, type(exc).__name__)
        return False
