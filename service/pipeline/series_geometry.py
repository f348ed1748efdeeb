"""Validate the geometry of one CT series from its headers and plan the canonical grid.

Reads, per slice: (0020,0032) Image Position (Patient), (0020,0037) Image Orientation (Patient),
(0028,0030) Pixel Spacing, (0028,0010) Rows, (0028,0011) Columns, (0020,0052) Frame of Reference UID and
(0018,1120) Gantry/Detector Tilt; for a single slice only, (0018,0088) Spacing Between Slices or
(0018,0050) Slice Thickness. Slices are ordered by Image Position projected on the slice normal (row cosine x
column cosine), never by Instance Number or file name, and the slice spacing comes from those positions.

Tolerances (documented contract):
- orientation: every direction cosine within ``ORIENTATION_TOL`` (1e-3) of 0 or +-1; at 1e-3 the worst position
  error across a 500 mm field is 0.5 mm. Sagittal and coronal (axis-aligned, non-axial) series are refused too;
  axial images whose rows run along y (transposed) are accepted.
- gantry tilt / table drift: each slice position may leave the line along the normal by ``INPLANE_TOL_MM``
  (0.05 mm); (0018,1120) Gantry/Detector Tilt must be 0 (within 1e-3 degrees).
- duplicates: two slices closer than ``DUPLICATE_TOL_MM`` (0.01 mm) along the normal.
- spacing: every gap between neighbours, and every slice's distance from the regular grid through the first and
  last slice, within max(1% of the median gap, 0.05 mm) (``spacing_tolerance_mm``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from service.errors import ErrorCode, InputError
from service.pipeline.series_plausible import check_plausible
from service.pipeline.series_scan import CtFile, tag_label

ORIENTATION_TOL = 1e-3
INPLANE_TOL_MM = 0.05
DUPLICATE_TOL_MM = 0.01
SPACING_REL_TOL = 0.01
SPACING_ABS_TOL_MM = 0.05
ATTR_TOL = 1e-4  # equality of Pixel Spacing (mm) and orientation cosines between slices


def spacing_tolerance_mm(spacing_mm: float) -> float:
    return max(SPACING_REL_TOL * spacing_mm, SPACING_ABS_TOL_MM)


@dataclass(frozen=True)
class GridLayout:
    """Where each file's pixels go: canonical slice order, flips and the resulting grid."""

    order: tuple[int, ...]  # indices into the series' files, by increasing z (superior)
    shape_zyx: tuple[int, int, int]
    spacing_mm_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    transpose: bool  # image rows run along x: transpose (row, col) -> (y, x) first
    flip_y: bool  # then reverse axis 0 so that index increases along +y (posterior)
    flip_x: bool  # and axis 1 so that index increases along +x (patient's left)
    slice_z_mm: tuple[float, ...] = ()  # stored (0020,0032) z of each canonical slice

    def to_canonical(self, image_rc: np.ndarray) -> np.ndarray:
        """One slice's pixel array (rows, columns) as a (y, x) view in canonical order."""
        img = image_rc.T if self.transpose else image_rc
        if self.flip_y:
            img = img[::-1, :]
        if self.flip_x:
            img = img[:, ::-1]
        return img


def read_numbers(ds: Dataset, keyword: str, count: int, path: Path) -> tuple[float, ...]:
    """The numeric value(s) of ``keyword``; MISSING_ATTRIBUTE naming tag and file if absent or malformed."""
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{path}: missing {tag_label(keyword)}")
    raw = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        values = tuple(float(v) for v in raw)
    except (TypeError, ValueError) as exc:
        raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{path}: invalid {tag_label(keyword)} value {value!r}") from exc
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(
            ErrorCode.MISSING_ATTRIBUTE, f"{path}: {tag_label(keyword)} must hold {count} numbers, not {value!r}"
        )
    return values


def _positive_int(ds: Dataset, keyword: str, path: Path) -> int:
    value = read_numbers(ds, keyword, 1, path)[0]
    if value < 1 or value != int(value):
        raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{path}: invalid {tag_label(keyword)} {value}")
    return int(value)


@dataclass(frozen=True)
class _SliceGeom:
    path: Path
    position: np.ndarray
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, ...]
    rows: int
    cols: int
    frame_uid: str


def _read_slice(f: CtFile) -> _SliceGeom:
    ds, path = f.ds, f.path
    spacing = read_numbers(ds, "PixelSpacing", 2, path)
    if min(spacing) <= 0:
        raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{path}: invalid {tag_label('PixelSpacing')} {spacing}")
    frame_uid = str(ds.get("FrameOfReferenceUID", "") or "").strip()
    if not frame_uid:
        raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{path}: missing {tag_label('FrameOfReferenceUID')}")
    if ds.get("GantryDetectorTilt") not in (None, ""):
        tilt = read_numbers(ds, "GantryDetectorTilt", 1, path)[0]
        if abs(tilt) > 1e-3:
            raise InputError(
                ErrorCode.GANTRY_TILT, f"{path}: {tag_label('GantryDetectorTilt')} is {tilt} degrees (must be 0)"
            )
    return _SliceGeom(
        path=path,
        position=np.array(read_numbers(ds, "ImagePositionPatient", 3, path)),
        orientation=read_numbers(ds, "ImageOrientationPatient", 6, path),
        pixel_spacing=spacing,
        rows=_positive_int(ds, "Rows", path),
        cols=_positive_int(ds, "Columns", path),
        frame_uid=frame_uid,
    )


def _check_consistent(slices: Sequence[_SliceGeom]) -> None:
    ref = slices[0]
    for s in slices[1:]:
        problems = []
        if (s.rows, s.cols) != (ref.rows, ref.cols):
            problems.append(f"{tag_label('Rows')}/{tag_label('Columns')} {s.rows}x{s.cols} vs {ref.rows}x{ref.cols}")
        if max(abs(a - b) for a, b in zip(s.pixel_spacing, ref.pixel_spacing, strict=True)) > ATTR_TOL:
            problems.append(f"{tag_label('PixelSpacing')} {list(s.pixel_spacing)} vs {list(ref.pixel_spacing)}")
        if max(abs(a - b) for a, b in zip(s.orientation, ref.orientation, strict=True)) > ATTR_TOL:
            problems.append(f"{tag_label('ImageOrientationPatient')} {list(s.orientation)} vs {list(ref.orientation)}")
        if s.frame_uid != ref.frame_uid:
            problems.append(f"{tag_label('FrameOfReferenceUID')} differs")
        if problems:
            raise InputError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"{s.path} does not match {ref.path} of the same series: " + "; ".join(problems),
            )


def _axis_directions(ref: _SliceGeom) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction as exact unit axes, after checking they are axis-aligned and axial."""
    row = np.array(ref.orientation[:3])
    col = np.array(ref.orientation[3:])
    iop = tag_label("ImageOrientationPatient")
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise InputError(
            ErrorCode.INCONSISTENT_GEOMETRY,
            f"{ref.path}: {iop} {list(ref.orientation)} is not two orthogonal unit vectors",
        )
    units = []
    for v in (row, col):
        axis = int(np.argmax(np.abs(v)))
        unit = np.zeros(3)
        unit[axis] = np.sign(v[axis])
        if np.max(np.abs(v - unit)) > ORIENTATION_TOL:
            raise InputError(
                ErrorCode.OBLIQUE_ORIENTATION,
                f"{ref.path}: {iop} {list(ref.orientation)} is oblique (cosines must be within {ORIENTATION_TOL} "
                "of the patient axes); reformat the series to axial slices",
            )
        units.append(unit)
    normal = np.cross(units[0], units[1])
    if abs(normal[2]) < 0.5:
        plane = "sagittal" if abs(normal[0]) > 0.5 else "coronal"
        raise InputError(
            ErrorCode.OBLIQUE_ORIENTATION,
            f"{ref.path}: {iop} {list(ref.orientation)} describes {plane} slices; only axial series are supported",
        )
    return units[0], units[1]


def _slice_spacing(slices: Sequence[_SliceGeom], order: Sequence[int], z: np.ndarray, single: CtFile) -> float:
    """Slice spacing from the sorted positions ``z`` (mm along +z); refuse duplicates, gaps and drift."""
    if len(z) == 1:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = single.ds.get(keyword)
            if value not in (None, "") and float(value) > 0:
                return float(value)
        return 1.0
    gaps = np.diff(z)
    ipp = tag_label("ImagePositionPatient")
    for n, gap in enumerate(gaps):
        if gap < DUPLICATE_TOL_MM:
            a, b = slices[order[n]].path, slices[order[n + 1]].path
            raise InputError(
                ErrorCode.DUPLICATE_POSITION,
                f"{a} and {b} have the same {ipp} along the slice normal (z={z[n]:.3f} mm)",
            )
    median = float(np.median(gaps))
    tol = spacing_tolerance_mm(median)
    for n, gap in enumerate(gaps):
        if abs(gap - median) > tol:
            a, b = slices[order[n]].path, slices[order[n + 1]].path
            what = "a gap (missing slices?)" if gap > median else "slices closer"
            raise InputError(
                ErrorCode.NONUNIFORM_SPACING,
                f"{what} between {a} (z={z[n]:.3f}) and {b} (z={z[n + 1]:.3f}): {gap:.3f} mm apart by {ipp}, "
                f"typical spacing {median:.3f} mm, tolerance {tol:.3f} mm",
            )
    spacing = float((z[-1] - z[0]) / (len(z) - 1))
    drift = np.abs(z - (z[0] + spacing * np.arange(len(z))))
    worst = int(np.argmax(drift))
    if drift[worst] > tol:
        raise InputError(
            ErrorCode.NONUNIFORM_SPACING,
            f"{slices[order[worst]].path}: {ipp} is {drift[worst]:.3f} mm off the regular {spacing:.4f} mm grid "
            f"(tolerance {tol:.3f} mm)",
        )
    return spacing


def plan_grid(files: Sequence[CtFile]) -> GridLayout:
    """Check the series' geometry and work out the canonical grid (see module docstring for tolerances)."""
    slices = [_read_slice(f) for f in files]
    _check_consistent(slices)
    ref = slices[0]
    row_dir, col_dir = _axis_directions(ref)
    normal = np.cross(row_dir, col_dir)  # +-z for an axial series
    positions = np.stack([s.position for s in slices])
    along = positions @ normal
    order = [int(i) for i in np.argsort(along * normal[2], kind="stable")]  # increasing z
    z = positions[order, 2]
    inplane = positions - np.outer(along, normal)
    offsets = np.linalg.norm(inplane - inplane[order[0]], axis=1)
    worst = int(np.argmax(offsets))
    if offsets[worst] > INPLANE_TOL_MM:
        raise InputError(
            ErrorCode.GANTRY_TILT,
            f"{slices[worst].path}: {tag_label('ImagePositionPatient')} is {offsets[worst]:.3f} mm off the line "
            f"along the slice normal through {slices[order[0]].path} (gantry tilt or table shift; tolerance "
            f"{INPLANE_TOL_MM} mm)",
        )
    spacing_z = _slice_spacing(slices, order, z, files[0])

    row_spacing, col_spacing = ref.pixel_spacing  # between rows (along col_dir), between columns (along row_dir)
    transpose = abs(row_dir[0]) < 0.5  # columns advance along y
    if transpose:
        spacing_y, spacing_x = col_spacing, row_spacing
        flip_y, flip_x = row_dir[1] < 0, col_dir[0] < 0
        ny, nx = ref.cols, ref.rows
    else:
        spacing_y, spacing_x = row_spacing, col_spacing
        flip_y, flip_x = col_dir[1] < 0, row_dir[0] < 0
        ny, nx = ref.rows, ref.cols
    # Pixel (r, c) of a slice lies at P + c * col_spacing * row_dir + r * row_spacing * col_dir (PS3.3 C.7.6.2.1.1)
    corner = positions[order[0]]
    extent = (ref.cols - 1) * col_spacing * row_dir + (ref.rows - 1) * row_spacing * col_dir
    origin = corner + np.minimum(extent, 0.0)
    check_plausible(
        files[order[0]].path,
        (len(slices), ny, nx),
        (spacing_z, float(spacing_y), float(spacing_x)),
        (float(origin[0]), float(origin[1]), float(corner[2])),
        (float(z[0]), float(z[-1])),
    )
    return GridLayout(
        order=tuple(order),
        shape_zyx=(len(slices), ny, nx),
        spacing_mm_zyx=(spacing_z, float(spacing_y), float(spacing_x)),
        origin_lps=(float(origin[0]), float(origin[1]), float(corner[2])),
        transpose=bool(transpose),
        flip_y=bool(flip_y),
        flip_x=bool(flip_x),
        slice_z_mm=tuple(float(v) for v in z),
    )
