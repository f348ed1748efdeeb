"""Physical plausibility of a CT series' grid, checked on the headers (issue 16): values that DICOM allows but no
head-and-neck CT has. They made jobs fail late (MemoryError on a 1e6 mm pixel grid), run for minutes (20 mm pixels
resampled to the model grid) or write contours whose coordinates a 16-character DS cannot hold (positions 1e15 mm
from the origin). Refused with ``IMPLAUSIBLE_GEOMETRY`` naming the attribute, the value and the accepted range.

Bounds (generous for any CT scanner; a head-and-neck CT has 0.3-1.5 mm pixels and 0.5-5 mm slices, and research
data sets resampled to coarse grids, such as OpenKBP's 128 x 128 grids, have 3.5-5.5 mm pixels):

- (0028,0030) Pixel Spacing: 0.05 to 10 mm;
- slice spacing (from (0020,0032) Image Position (Patient)): 0.05 to 20 mm (a single slice has none);
- field of view: at most 1000 mm in-plane and 3000 mm along z;
- every grid corner within 100,000 mm (100 m) of the patient coordinate origin, so that every coordinate written to
  the RTSTRUCT keeps 0.001 mm in 16 DS characters.
"""

from __future__ import annotations

from pathlib import Path

from service.errors import ErrorCode, InputError

PIXEL_SPACING_MM = (0.05, 10.0)
SLICE_SPACING_MM = (0.05, 20.0)
MAX_FOV_INPLANE_MM = 1000.0
MAX_FOV_Z_MM = 3000.0
MAX_ABS_COORDINATE_MM = 1.0e5


def _refuse(where: Path, what: str) -> InputError:
    return InputError(ErrorCode.IMPLAUSIBLE_GEOMETRY, f"{where}: {what}; refused as physically implausible for a CT")


def check_plausible(
    where: Path,
    shape_zyx: tuple[int, int, int],
    spacing_mm_zyx: tuple[float, float, float],
    origin_lps: tuple[float, float, float],
    z_range_mm: tuple[float, float],
) -> None:
    nz, ny, nx = shape_zyx
    sz, sy, sx = spacing_mm_zyx
    lo, hi = PIXEL_SPACING_MM
    for s in (sy, sx):
        if not lo <= s <= hi:
            raise _refuse(where, f"(0028,0030) Pixel Spacing {s:g} mm is outside {lo:g}-{hi:g} mm")
    lo, hi = SLICE_SPACING_MM
    if nz > 1 and not lo <= sz <= hi:
        raise _refuse(
            where, f"slice spacing {sz:g} mm (from (0020,0032) Image Position (Patient)) is outside {lo:g}-{hi:g} mm"
        )
    fov_y, fov_x, fov_z = ny * sy, nx * sx, nz * sz
    if max(fov_y, fov_x) > MAX_FOV_INPLANE_MM or fov_z > MAX_FOV_Z_MM:
        raise _refuse(
            where,
            f"field of view {fov_z:g} x {fov_y:g} x {fov_x:g} mm (z, y, x) exceeds {MAX_FOV_Z_MM:g} mm along z or "
            f"{MAX_FOV_INPLANE_MM:g} mm in-plane",
        )
    corners = [abs(origin_lps[0]), abs(origin_lps[1]), abs(origin_lps[0]) + fov_x, abs(origin_lps[1]) + fov_y]
    corners += [abs(z_range_mm[0]), abs(z_range_mm[1])]
    if max(corners) > MAX_ABS_COORDINATE_MM:
        raise _refuse(
            where,
            f"(0020,0032) Image Position (Patient) puts the grid {max(corners):.6g} mm from the origin (more than "
            f"{MAX_ABS_COORDINATE_MM:g} mm: coordinates would not fit a 16-character DS)",
        )
