"""New RTSTRUCT instances derived from the delivered one: a corrected revision, and the APPROVED copy.

A revision is the original dataset with new contours for the edited structures, so everything else stays as the
planning system first saw it: the patient/study modules, (3006,0010) ReferencedFrameOfReferenceSequence (the same
CT images), the series, every (3006,0022) ROINumber and (3006,002A) ROIDisplayColor. What changes (PS3.3 C.8.8.5,
C.12.1): a new (0008,0018) SOPInstanceUID, (0008,0012/0013) InstanceCreationDate/Time, (3006,0008/0009)
StructureSetDate/Time, (0020,0013) InstanceNumber = revision + 1, (3006,0002) StructureSetLabel, and for each
edited ROI (3006,0036) ROIGenerationAlgorithm SEMIAUTOMATIC (an algorithm's result edited by a person) with its
(3006,0040) ContourSequence redrawn by the writer's own voxel-edge contour code. Untouched ROIs keep AUTOMATIC.

The APPROVED copy (only when the operator enables approval marking) sets the Approval module, PS3.3 C.8.8.16:
(300E,0002) ApprovalStatus APPROVED, (300E,0008) ReviewerName, (300E,0004) ReviewDate, (300E,0005) ReviewTime,
again under a new SOP Instance UID (the unapproved instance it copies is kept).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from service.fileio import atomic_write
from service.pipeline.rtstruct import _contour_sequence, _slice_z_mm
from service.pipeline.volume import SeriesInfo, Volume
from service.review.models import ReviewGeometry


def geometry_volume(geometry: ReviewGeometry) -> Volume:
    """A Volume with the CT's grid and UIDs (no pixel values: the contour writer needs only the grid)."""
    info = SeriesInfo(
        series_instance_uid=geometry.series_instance_uid,
        study_instance_uid=geometry.study_instance_uid,
        frame_of_reference_uid=geometry.frame_of_reference_uid,
        sop_class_uid=geometry.sop_class_uid,
        slice_sop_instance_uids=tuple(geometry.slice_sop_instance_uids),
        slice_z_mm=tuple(geometry.slice_z_mm),
    )
    grid = np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint8), geometry.shape_zyx)
    return Volume(grid, geometry.spacing_mm_zyx, geometry.origin_lps, info)


def _new_instance(ds: Dataset, now: dt.datetime) -> Dataset:
    out = copy.deepcopy(ds)
    uid = generate_uid()
    out.SOPInstanceUID = uid
    out.file_meta.MediaStorageSOPInstanceUID = uid
    out.InstanceCreationDate, out.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    return out


def build_revision(
    original: Dataset,
    geometry: ReviewGeometry,
    masks: Mapping[str, np.ndarray],
    edited: set[str],
    number: int,
    *,
    now: dt.datetime | None = None,
) -> Dataset:
    """Revision ``number`` of ``original``: ROIs named in ``edited`` get the contours of ``masks[name]``."""
    now = now or dt.datetime.now()
    ds = _new_instance(original, now)
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    ds.InstanceNumber = number + 1
    ds.StructureSetLabel = f"Parotid rev {number}"[:16]
    ds.StructureSetDescription = (
        f"Revision {number}: {', '.join(sorted(edited))} corrected in the parotid-seg review workstation; "
        "not approved unless ApprovalStatus says so"
    )[:1024]
    ct = geometry_volume(geometry)
    z_mm = _slice_z_mm(ct)
    by_number = {int(c.ReferencedROINumber): c for c in ds.ROIContourSequence}
    for roi in ds.StructureSetROISequence:
        name = str(roi.ROIName)
        if name not in edited:
            continue
        roi.ROIGenerationAlgorithm = "SEMIAUTOMATIC"
        roi.ROIGenerationDescription = f"edited in review, revision {number}"[:64]
        contour = by_number[int(roi.ROINumber)]
        items = _contour_sequence(ct, np.asarray(masks[name], dtype=bool), z_mm)
        if items:
            contour.ContourSequence = DicomSequence(items)
        elif "ContourSequence" in contour:
            del contour.ContourSequence
    return ds


def build_approved(ds: Dataset, reviewer: str, *, now: dt.datetime | None = None) -> Dataset:
    """The APPROVED copy of ``ds`` under a new SOP Instance UID (Approval module, PS3.3 C.8.8.16)."""
    now = now or dt.datetime.now()
    out = _new_instance(ds, now)
    out.ApprovalStatus = "APPROVED"
    out.ReviewerName = reviewer[:64]
    out.ReviewDate, out.ReviewTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    return out


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write ``ds`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_write(path, mode=0o644, durable=True) as fh:
        ds.save_as(fh, enforce_file_format=True)
