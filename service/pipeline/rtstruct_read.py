"""Read an RTSTRUCT and rasterize its ROIs onto a CT's canonical grid (the QA reference and training labels).

Rasterization: a voxel belongs to the ROI when its centre is inside the contours of its slice under the even-odd
rule across all contours of that ROI on the slice (:func:`service.pipeline.contours.polygons_to_mask`), which
reads keyhole contours, holes written as separate (exclusive-OR) contours and islands alike.

Attributes read: (0008,0016) SOP Class UID; (3006,0020) Structure Set ROI Sequence > (3006,0022) ROI Number,
(3006,0026) ROI Name, (3006,0024) Referenced Frame of Reference UID; (3006,0010) Referenced Frame of Reference
Sequence > (0020,0052) Frame of Reference UID; (3006,0039) ROI Contour Sequence > (3006,0084) Referenced ROI
Number, (3006,0040) Contour Sequence > (3006,0042) Contour Geometric Type, (3006,0050) Contour Data.

Refused with ``InputError(BAD_REFERENCE)`` naming the file: not a readable DICOM file, not an RT Structure Set,
and, for each requested ROI: missing or matched by several ROIs, a Frame of Reference other than the CT's, point
or open contours, and contours that do not lie on this CT's axial slices (non-axial, or at a z with no CT slice
within 0.1 slice spacing: the reference was drawn on another CT). Asked for all ROIs, the reader skips (and logs)
the ROIs it cannot rasterize instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage

from service.errors import ErrorCode, InputError
from service.pipeline.contours import polygons_to_mask
from service.pipeline.inflate import check_deflated_path
from service.pipeline.volume import Volume

log = logging.getLogger(__name__)

DEFAULT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Parotid_L": (
        "Parotid_L",
        "L Parotid",
        "LeftParotid",
        "Left Parotid",
        "Parotid Left",
        "Parotid_Left",
        "Parotid Lt",
        "PAROTID_LT",
        "Lt Parotid",
        "Lt_Parotid",
        "L_Parotid",
        "ParotidL",
        "Parotid (L)",
        "Parotid Gland L",
        "Parotid_Gland_L",
        "Left Parotid Gland",
    ),
    "Parotid_R": (
        "Parotid_R",
        "R Parotid",
        "RightParotid",
        "Right Parotid",
        "Parotid Right",
        "Parotid_Right",
        "Parotid Rt",
        "PAROTID_RT",
        "Rt Parotid",
        "Rt_Parotid",
        "R_Parotid",
        "ParotidR",
        "Parotid (R)",
        "Parotid Gland R",
        "Parotid_Gland_R",
        "Right Parotid Gland",
    ),
}

_CLOSED_TYPES = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")
_TAG_CONTOUR_DATA = 0x30060050


def _normalize(name: str) -> str:
    """Case-, space-, underscore- and punctuation-insensitive form of an ROI name."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def match_roi_name(name: str, synonyms: Mapping[str, Sequence[str]]) -> str | None:
    """The canonical key of ``synonyms`` whose key or synonym equals ``name`` ignoring case/spaces/underscores."""
    wanted = _normalize(name)
    if not wanted:
        return None
    for key, names in synonyms.items():
        if wanted == _normalize(key) or any(wanted == _normalize(s) for s in names):
            return key
    return None


def _bad(path: Path, message: str) -> InputError:
    return InputError(ErrorCode.BAD_REFERENCE, f"{path}: {message}")


def _contour_points(item: Dataset) -> np.ndarray:
    """(3006,0050) Contour Data as an (n, 3) float array, parsed from the raw bytes when possible (fast)."""
    raw = item.get_item(_TAG_CONTOUR_DATA)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        text = raw.value.decode("ascii", errors="replace").strip(" \x00")
        values = np.array(text.split("\\"), dtype=np.float64) if text else np.zeros(0)
    else:
        values = np.asarray([float(v) for v in (item.get("ContourData") or [])], dtype=np.float64)
    if values.size % 3 or not np.isfinite(values).all():
        raise ValueError("(3006,0050) Contour Data is not a list of finite (x, y, z) triplets")
    return values.reshape(-1, 3)


def _select_rois(
    path: Path,
    rois: list[tuple[int, str, str]],
    roi_names: Sequence[str] | None,
    synonyms: Mapping[str, Sequence[str]],
    require_all: bool = True,
) -> dict[str, tuple[int, str]]:
    """Requested name -> (ROI number, frame UID). Exact (normalized) name first, then synonyms."""
    if roi_names is None:
        chosen: dict[str, tuple[int, str]] = {}
        for number, name, frame in rois:
            if name in chosen:
                log.warning("duplicate ROI name in reference: %s (ROI %d ignored)", name, number)
                continue
            chosen[name] = (number, frame)
        return chosen
    available = ", ".join(repr(name) for _, name, _ in rois) or "none"
    selected: dict[str, tuple[int, str]] = {}
    for requested in roi_names:
        exact = [r for r in rois if _normalize(r[1]) == _normalize(requested)]
        key = match_roi_name(requested, synonyms)
        candidates = exact or ([r for r in rois if match_roi_name(r[1], synonyms) == key] if key else [])
        if not candidates and not require_all:
            log.warning("ROI %r not in reference %s", requested, path.name)
            continue
        if not candidates:
            raise _bad(
                path, f"ROI {requested!r} not found in (3006,0020) Structure Set ROI Sequence (ROIs: {available})"
            )
        if len(candidates) > 1:
            names = ", ".join(repr(r[1]) for r in candidates)
            raise _bad(path, f"ROI {requested!r} is ambiguous: {names} all match")
        selected[requested] = (candidates[0][0], candidates[0][2])
    return selected


def read_rtstruct_masks(
    path: Path,
    ct: Volume,
    roi_names: Sequence[str] | None = None,
    *,
    synonyms: Mapping[str, Sequence[str]] = DEFAULT_SYNONYMS,
    require_all: bool = True,
) -> dict[str, np.ndarray]:
    """Rasterize ROIs of the RTSTRUCT at ``path`` onto ``ct``'s canonical zyx grid: name -> bool array.

    ``roi_names``: the names to return (keys of the result); each is found by exact name or through
    ``synonyms`` (:func:`match_roi_name`). Any problem with a requested ROI raises ``InputError(BAD_REFERENCE)``;
    with ``require_all=False`` a requested ROI that is absent is left out of the result instead (logged).
    ``roi_names=None`` returns every ROI that can be rasterized on this CT under its own name and skips (logs)
    the others (another Frame of Reference, point or open contours, contours off this CT's slices); it raises
    when no ROI references the CT's Frame of Reference. An ROI without contours gives an all-False mask.
    """
    path = Path(path)
    check_deflated_path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for garbage input
        raise _bad(path, f"not a readable DICOM file ({type(exc).__name__})") from None
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != RTStructureSetStorage:
        raise _bad(
            path,
            f"not an RTSTRUCT: (0008,0016) SOP Class UID is {sop_class or 'missing'!r}, "
            f"expected {RTStructureSetStorage} (RT Structure Set Storage)",
        )
    frames_top = [str(f.get("FrameOfReferenceUID", "")) for f in ds.get("ReferencedFrameOfReferenceSequence", [])]
    rois: list[tuple[int, str, str]] = []
    try:
        for item in ds.get("StructureSetROISequence", []):
            frame = str(item.get("ReferencedFrameOfReferenceUID", "")) or (
                frames_top[0] if len(frames_top) == 1 else ""
            )
            rois.append((int(item.get("ROINumber", -1)), str(item.get("ROIName", "")), frame))
        contours_by_number: dict[int, list[Dataset]] = {}
        for item in ds.get("ROIContourSequence", []):
            contours_by_number.setdefault(int(item.get("ReferencedROINumber", -1)), []).extend(
                item.get("ContourSequence", [])
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise _bad(path, f"malformed (3006,0020) / (3006,0039) ROI sequences ({exc})") from None
    strict = roi_names is not None
    selected = _select_rois(path, rois, roi_names, synonyms, require_all)

    ct_frame = ct.info.frame_of_reference_uid if ct.info is not None else None
    if ct_frame is not None:
        if not strict and rois and all(frame != ct_frame for _, _, frame in rois):
            frames = ", ".join(sorted({repr(frame or "none") for _, _, frame in rois}))
            raise _bad(
                path,
                f"no ROI references the CT's Frame of Reference {ct_frame!r} ((0020,0052)); "
                f"the ROIs reference {frames} in (3006,0024) Referenced Frame of Reference UID",
            )
        for name, (_, frame) in list(selected.items()):
            if frame != ct_frame:
                error = _bad(
                    path,
                    f"ROI {name!r} references Frame of Reference {frame or 'none'!r} in (3006,0024) "
                    f"Referenced Frame of Reference UID, the CT's (0020,0052) is {ct_frame!r}",
                )
                if strict:
                    raise error
                log.warning("reference ROI skipped: %s", error.message)
                del selected[name]

    masks: dict[str, np.ndarray] = {}
    for name, (number, _) in selected.items():
        try:
            masks[name] = _rasterize_roi(path, name, contours_by_number.get(number, []), ct)
        except InputError as error:
            if strict:
                raise
            log.warning("reference ROI skipped: %s", error.message)
    return masks


def _slice_z_mm(ct: Volume) -> np.ndarray:
    nz = ct.shape_zyx[0]
    if ct.info is not None and len(ct.info.slice_z_mm) == nz:
        return np.asarray(ct.info.slice_z_mm, dtype=np.float64)
    return ct.origin_lps[2] + np.arange(nz) * ct.spacing_mm_zyx[0]


def _rasterize_roi(path: Path, name: str, contours: list[Dataset], ct: Volume) -> np.ndarray:
    nz, ny, nx = ct.shape_zyx
    sz, sy, sx = ct.spacing_mm_zyx
    ox, oy, _ = ct.origin_lps
    z_mm = _slice_z_mm(ct)
    tol_mm = 0.1 * abs(sz) if nz > 1 else 0.01
    by_slice: dict[int, list[np.ndarray]] = {}
    for item in contours:
        kind = str(item.get("ContourGeometricType", ""))
        if kind not in _CLOSED_TYPES:
            raise _bad(
                path,
                f"ROI {name!r} has a (3006,0042) Contour Geometric Type {kind!r} contour; "
                f"only closed planar contours can be rasterized",
            )
        try:
            pts = _contour_points(item)
        except ValueError as exc:
            raise _bad(path, f"ROI {name!r}: {exc}") from None
        if len(pts) < 3:
            continue
        z = pts[:, 2]
        if np.ptp(z) > tol_mm:
            raise _bad(path, f"ROI {name!r} has a non-axial contour (z from {z.min():.2f} to {z.max():.2f} mm)")
        k = int(np.argmin(np.abs(z_mm - z.mean())))
        if abs(z_mm[k] - z.mean()) > tol_mm:
            raise _bad(
                path,
                f"ROI {name!r} has a contour at z = {z.mean():.2f} mm, which is not on a slice of the "
                f"CT (slices {z_mm.min():.2f}..{z_mm.max():.2f} mm every {abs(sz):.3g} mm): "
                f"the reference must be drawn on this CT series",
            )
        rc = np.stack([(pts[:, 1] - oy) / sy, (pts[:, 0] - ox) / sx], axis=1)
        by_slice.setdefault(k, []).append(rc)
    mask = np.zeros((nz, ny, nx), dtype=bool)
    for k, polys in by_slice.items():
        mask[k] = polygons_to_mask(polys, (ny, nx))
    return mask
