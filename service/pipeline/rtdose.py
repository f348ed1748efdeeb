"""Read a DICOM RTDOSE onto a CT's canonical grid (for dose-impact metrics: mean dose, D50 to a contour).

The dose grid is placed in patient coordinates from (0020,0032) Image Position (Patient), (0020,0037) Image
Orientation (Patient), (0028,0030) Pixel Spacing and (3004,000C) Grid Frame Offset Vector (offsets along the
slice normal; relative to the first frame when the first offset is 0, else absolute positions along the normal,
PS3.3 C.8.8.3.2), scaled by (3004,000E) Dose Grid Scaling, and sampled at every CT voxel centre by trilinear
interpolation (``scipy.ndimage.map_coordinates``, order 1); CT voxels outside the dose grid get 0 Gy (the dose
grid covers everything the plan irradiates).

Refused with ``InputError(BAD_DOSE)`` naming the file and attribute: unreadable, not RT Dose Storage, units
other than GY, a Frame of Reference other than the CT's, a missing or inconsistent geometry attribute, or
offsets that are not strictly monotonic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import RTDoseStorage
from scipy import ndimage

from service.errors import ErrorCode, InputError
from service.pipeline.inflate import check_deflated_path
from service.pipeline.volume import Volume


def _bad(path: Path, message: str) -> InputError:
    return InputError(ErrorCode.BAD_DOSE, f"{path}: {message}")


def _floats(ds: pydicom.Dataset, path: Path, keyword: str, n: int | None = None) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise _bad(path, f"{keyword} is missing")
    try:
        arr = np.array(
            [float(v) for v in (value if isinstance(value, list | pydicom.multival.MultiValue) else [value])]
        )
    except (TypeError, ValueError):
        raise _bad(path, f"{keyword} {value!r} is not numeric") from None
    if (n is not None and arr.size != n) or not np.all(np.isfinite(arr)):
        raise _bad(path, f"{keyword} {value!r}: expected {n or 'finite'} finite numbers")
    return arr


def read_rtdose_on_grid(path: Path, ct: Volume) -> np.ndarray:
    """The RTDOSE at ``path`` in Gy on ``ct``'s canonical (z, y, x) grid, float32."""
    path = Path(path)
    check_deflated_path(path)  # INFLATED_TOO_LARGE before pydicom inflates it whole
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for garbage input
        raise _bad(path, f"not a readable DICOM file ({type(exc).__name__})") from None
    if str(ds.get("SOPClassUID", "")) != RTDoseStorage:
        raise _bad(path, f"SOPClassUID {ds.get('SOPClassUID')} is not RT Dose Storage ({RTDoseStorage})")
    units = str(ds.get("DoseUnits", "")).upper()
    if units != "GY":
        raise _bad(path, f"DoseUnits {units or 'missing'!r}: only GY (absolute dose) can be compared in Gy")
    ct_frame = ct.info.frame_of_reference_uid if ct.info is not None else ""
    if ct_frame and str(ds.get("FrameOfReferenceUID", "")) != ct_frame:
        raise _bad(path, f"FrameOfReferenceUID {ds.get('FrameOfReferenceUID')!r} is not the CT's {ct_frame!r}")
    ipp = _floats(ds, path, "ImagePositionPatient", 3)
    iop = _floats(ds, path, "ImageOrientationPatient", 6)
    row_sp, col_sp = _floats(ds, path, "PixelSpacing", 2)
    scaling = float(_floats(ds, path, "DoseGridScaling", 1)[0])
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # pixel decoding errors come in many types
        raise _bad(path, f"PixelData cannot be decoded ({type(exc).__name__})") from None
    if pixels.ndim == 2:
        pixels = pixels[None]
    offsets = _floats(ds, path, "GridFrameOffsetVector", pixels.shape[0])
    f_row, f_col = iop[:3], iop[3:]
    normal = np.cross(f_row, f_col)
    if not (np.isclose(np.linalg.norm(f_row), 1, atol=1e-3) and np.isclose(np.linalg.norm(f_col), 1, atol=1e-3)):
        raise _bad(path, f"ImageOrientationPatient {list(iop)} is not two unit vectors")
    if offsets[0] != 0:  # absolute positions along the normal
        offsets = offsets - float(ipp @ normal)
    steps = np.diff(offsets)
    if steps.size and not (np.all(steps > 0) or np.all(steps < 0)):
        raise _bad(path, "GridFrameOffsetVector is not strictly monotonic")
    # every CT voxel centre in LPS mm -> continuous (frame, row, column) indices of the dose grid
    nz, ny, nx = ct.shape_zyx
    kji = np.stack(np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij"), axis=-1)
    rel = ct.index_to_lps(kji.reshape(-1, 3)) - ipp
    col = rel @ f_row / col_sp
    row = rel @ f_col / row_sp
    along = rel @ normal
    if offsets.size == 1:
        frame = np.where(np.abs(along - offsets[0]) < 1e-3, 0.0, -10.0)
    else:
        order = np.argsort(offsets)
        frame = np.interp(along, offsets[order], order.astype(float), left=-10.0, right=-10.0)
    dose = ndimage.map_coordinates(pixels, [frame, row, col], order=1, mode="constant", cval=0.0)
    return (dose * scaling).reshape(nz, ny, nx).astype(np.float32)
