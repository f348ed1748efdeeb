"""Stage 1: load and validate one CT series into a canonical :class:`~service.pipeline.volume.Volume`.

Two passes: every header is read once without pixel data (``stop_before_pixels``) to find, group and validate
the series, then each slice of the chosen series is read with its pixels and decoded once. Every rejection is an
:class:`~service.errors.InputError` with a stable code whose message names the file and the DICOM attribute.
See ``series_scan`` (discovery, series choice), ``series_geometry`` (ordering, geometry, tolerances) and
``series_pixels`` (decoding, Hounsfield units).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.errors import ErrorCode, InputError
from service.pipeline.budget import BUDGET_ENV, estimated_bytes, memory_budget_bytes, model_grid_shape
from service.pipeline.dicom_modules import copy_module_attributes
from service.pipeline.series_geometry import GridLayout, plan_grid
from service.pipeline.series_pixels import PixelFormat, check_pixel_format, read_hu_slice
from service.pipeline.series_scan import CtFile, scan_inputs, select_series, tag_label
from service.pipeline.volume import SeriesInfo, Volume

log = logging.getLogger(__name__)


def _text(f: CtFile, keyword: str) -> str:
    value = f.ds.get(keyword)
    return "" if value is None else str(value).strip()


def _check_identity(files: Sequence[CtFile]) -> None:
    """(0008,0018) SOP Instance UID unique and present; (0010,0020) Patient ID and (0020,000D) Study Instance UID
    present (study) and the same on every slice. Values are not echoed: they may identify the patient."""
    seen: dict[str, Path] = {}
    for f in files:
        sop = _text(f, "SOPInstanceUID")
        if not sop:
            raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{f.path}: missing {tag_label('SOPInstanceUID')}")
        if sop in seen:
            raise InputError(
                ErrorCode.DUPLICATE_POSITION,
                f"{seen[sop]} and {f.path} are the same image ({tag_label('SOPInstanceUID')} {sop}); "
                "pass each slice once",
            )
        seen[sop] = f.path
    if not _text(files[0], "StudyInstanceUID"):
        raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{files[0].path}: missing {tag_label('StudyInstanceUID')}")
    for keyword in ("PatientID", "StudyInstanceUID"):
        ref = _text(files[0], keyword)
        for f in files[1:]:
            if _text(f, keyword) != ref:
                raise InputError(
                    ErrorCode.INCONSISTENT_SERIES,
                    f"{f.path} and {files[0].path} share a series UID but differ in {tag_label(keyword)}",
                )


def check_series_headers(
    inputs: Path | Sequence[Path],
    *,
    series_uid: str | None = None,
    min_slices: int = 1,
    model_spacing_mm_zyx: Sequence[float] | None = None,
    memory_budget: int | None = None,
) -> tuple[str, list[CtFile], GridLayout, list[PixelFormat]]:
    """Every check ``load_series`` makes before decoding pixels (headers only): find and choose the series,
    count, identity, geometry, size and pixel format. Shared with the API's synchronous upload check.

    Size: the memory the pipeline needs for the CT grid and, when ``model_spacing_mm_zyx`` (the plan's spacing)
    is given, the model grid must fit ``memory_budget`` bytes (default ``budget.memory_budget_bytes()``)."""
    scan = scan_inputs(inputs if isinstance(inputs, str | os.PathLike) else list(inputs))
    uid, files = select_series(scan, series_uid)
    if len(files) < min_slices:
        raise InputError(
            ErrorCode.TOO_FEW_SLICES,
            f"CT series {uid} (e.g. {files[0].path}) has {len(files)} slice(s); at least {min_slices} are needed",
        )
    _check_identity(files)
    layout = plan_grid(files)
    check_memory(uid, files[0].path, layout, model_spacing_mm_zyx, memory_budget)
    formats = [check_pixel_format(f) for f in files]
    return uid, files, layout, formats


def check_memory(
    uid: str,
    example: Path,
    layout: GridLayout,
    model_spacing_mm_zyx: Sequence[float] | None,
    memory_budget: int | None,
) -> None:
    """``TOO_LARGE`` when the CT grid (and the model grid) need more memory than the budget (see ``budget``)."""
    budget = memory_budget_bytes() if memory_budget is None else memory_budget
    n_ct = int(np.prod(layout.shape_zyx, dtype=np.int64))
    n_model = 0
    if model_spacing_mm_zyx is not None:
        n_model = int(np.prod(model_grid_shape(layout.shape_zyx, layout.spacing_mm_zyx, model_spacing_mm_zyx)))
    need = estimated_bytes(n_ct, n_model)
    if need > budget:
        nz, ny, nx = layout.shape_zyx
        model = f" and {n_model} voxels on the model grid" if n_model else ""
        raise InputError(
            ErrorCode.TOO_LARGE,
            f"CT series {uid} (e.g. {example}) has {nz} x {ny} x {nx} = {n_ct} voxels{model}: about "
            f"{need // 2**20} MiB to process, more than the memory budget of {budget // 2**20} MiB "
            f"({BUDGET_ENV})",
        )


def load_series(
    inputs: Path | Sequence[Path],
    *,
    series_uid: str | None = None,
    min_slices: int = 1,
    model_spacing_mm_zyx: Sequence[float] | None = None,
    memory_budget: int | None = None,
) -> Volume:
    """Load one CT series (CT Image Storage, 1.2.840.10008.5.1.4.1.1.2) as float32 HU in canonical LPS order.

    ``inputs`` is a folder (searched recursively) or a list of files and/or folders. Files that are not DICOM and
    DICOM objects that are not images (RTSTRUCT, RTPLAN, SR, ...) are ignored. ``series_uid`` picks one of several
    CT series by (0020,000E) Series Instance UID. Slices are ordered by (0020,0032) Image Position (Patient) along
    the normal of (0020,0037) Image Orientation (Patient); rows, columns and slices are flipped (or transposed)
    into the canonical order of ``volume.py`` whatever the patient position (HFS, FFS, HFP, FFP, ...). HU come
    from (0028,1053) Rescale Slope and (0028,1052) Rescale Intercept.

    Raises InputError with codes EMPTY_INPUT, NO_CT_SERIES, NOT_CT, MULTIPLE_SERIES, SERIES_NOT_FOUND,
    MULTIFRAME_NOT_SUPPORTED, TOO_FEW_SLICES, MISSING_ATTRIBUTE, INCONSISTENT_SERIES, INCONSISTENT_GEOMETRY,
    OBLIQUE_ORIENTATION, GANTRY_TILT, DUPLICATE_POSITION, NONUNIFORM_SPACING, TOO_LARGE, CORRUPT_FILE,
    UNSUPPORTED_TRANSFER_SYNTAX, PIXEL_DATA_ERROR or INVALID_ATTRIBUTE.
    """
    uid, files, layout, formats = check_series_headers(
        inputs,
        series_uid=series_uid,
        min_slices=min_slices,
        model_spacing_mm_zyx=model_spacing_mm_zyx,
        memory_budget=memory_budget,
    )
    array_zyx = np.empty(layout.shape_zyx, dtype=np.float32)
    rows, cols = int(files[0].ds.Rows), int(files[0].ds.Columns)
    for k, idx in enumerate(layout.order):
        hu = read_hu_slice(files[idx].path, formats[idx], rows, cols)
        array_zyx[k] = layout.to_canonical(hu)
    ordered = [files[i] for i in layout.order]
    first = ordered[0]
    attrs = copy_module_attributes(first.ds)  # patient, study, frame of reference + Specific Character Set
    info = SeriesInfo(
        series_instance_uid=uid,
        study_instance_uid=_text(first, "StudyInstanceUID"),
        frame_of_reference_uid=_text(first, "FrameOfReferenceUID"),
        sop_class_uid=_text(first, "SOPClassUID"),
        slice_sop_instance_uids=tuple(_text(f, "SOPInstanceUID") for f in ordered),
        patient_position=_text(first, "PatientPosition"),
        slice_z_mm=layout.slice_z_mm,
        patient_study_attrs=attrs,
        source_files=tuple(str(f.path) for f in ordered),
    )
    log.info(
        "loaded CT series: %d slices, shape %s, spacing %s mm, transfer syntax %s",
        len(files),
        layout.shape_zyx,
        tuple(round(s, 4) for s in layout.spacing_mm_zyx),
        formats[0].transfer_syntax,
    )
    return Volume(array_zyx, layout.spacing_mm_zyx, layout.origin_lps, info)
