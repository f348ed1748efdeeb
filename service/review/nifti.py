"""NIfTI files of the canonical LPS grid, as the viewer and the retraining reader (``training.data.nifti``) read
them.

``array_zyx[k, j, i]`` (``service.pipeline.volume``: i -> +x left, j -> +y posterior, k -> +z superior) is written
in RAS+ voxel order: data[i', j', k] with i' = nx-1-i (toward the patient's right) and j' = ny-1-j (anterior), and
a diagonal affine (spacing on the diagonal). A browser viewer such as NiiVue reorients every volume to RAS
internally; writing RAS already makes its drawing bitmap (x fastest, then y, then z) the file's own voxel order,
so a drawing saved in the browser maps back to the grid without resampling.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from service.errors import ErrorCode, InputError

AFFINE_TOLERANCE_MM = 1e-3


def ras_affine(shape_zyx: tuple[int, int, int], spacing_mm_zyx, origin_lps) -> np.ndarray:
    """The 4x4 RAS affine of the RAS-ordered voxel grid of a canonical LPS volume."""
    nz, ny, nx = shape_zyx
    sz, sy, sx = (float(v) for v in spacing_mm_zyx)
    ox, oy, oz = (float(v) for v in origin_lps)
    affine = np.diag([sx, sy, sz, 1.0])
    # voxel i' = 0 is LPS column nx-1: RAS x = -(ox + (nx-1) sx); same for rows
    affine[:3, 3] = [-(ox + (nx - 1) * sx), -(oy + (ny - 1) * sy), oz]
    return affine


def zyx_to_ras(array_zyx: np.ndarray) -> np.ndarray:
    """The (x, y, z) RAS-ordered array, Fortran-contiguous: NIfTI stores x fastest, so writing it is one copy."""
    return np.ascontiguousarray(array_zyx[:, ::-1, ::-1]).T


def ras_to_zyx(data_ras: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(data_ras[::-1, ::-1, :].transpose(2, 1, 0))


def nifti_bytes(array_zyx: np.ndarray, spacing_mm_zyx, origin_lps, *, compresslevel: int = 1) -> bytes:
    """A gzipped NIfTI-1 file (qform and sform code 1, scanner anatomical) of ``array_zyx``."""
    header = nifti_header_bytes(array_zyx.shape, spacing_mm_zyx, origin_lps, array_zyx.dtype)
    return gzip.compress(header + zyx_to_ras(array_zyx).tobytes(order="F"), compresslevel=compresslevel, mtime=0)


def nifti_header_bytes(shape_zyx, spacing_mm_zyx, origin_lps, dtype) -> bytes:
    """The header (and empty extension block) of ``nifti_bytes``'s file: what precedes the voxel data."""
    affine = ras_affine(tuple(shape_zyx), spacing_mm_zyx, origin_lps)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(int(n) for n in shape_zyx[::-1]))
    hdr.set_data_dtype(np.dtype(dtype))
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm")
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\0\0\0\0"


def write_nifti_slices(
    path: Path, slices_zyx, shape_zyx, spacing_mm_zyx, origin_lps, dtype, *, compresslevel: int = 1
) -> None:
    """Write the same gzipped NIfTI-1 file as ``nifti_bytes`` from an iterable of axial slices (``array_zyx[k]``
    for k = 0, 1, ...), without holding the volume: RAS order stores x fastest, then y, then z, i.e. each slice
    flipped in both axes, one after the other."""
    n = 0
    with Path(path).open("wb") as fh, gzip.GzipFile("", "wb", compresslevel, fh, mtime=0) as gz:
        gz.write(nifti_header_bytes(shape_zyx, spacing_mm_zyx, origin_lps, dtype))
        for sl in slices_zyx:
            if sl.shape != tuple(shape_zyx[1:]):
                raise ValueError(f"slice {n}: shape {sl.shape} != {tuple(shape_zyx[1:])}")
            gz.write(np.ascontiguousarray(np.asarray(sl, dtype=dtype)[::-1, ::-1]).tobytes())
            n += 1
    if n != shape_zyx[0]:
        raise ValueError(f"{n} slices written for a grid of {shape_zyx[0]}")


def read_label_nifti(data: bytes, shape_zyx, spacing_mm_zyx, origin_lps, *, name: str) -> np.ndarray:
    """A label map uploaded by a client, checked against the CT grid, as a uint8 ``array_zyx``.

    Accepts ``.nii`` or ``.nii.gz`` bytes in any axis-aligned orientation (reoriented to RAS+ with nibabel's
    ``as_closest_canonical``); refuses (InputError BAD_UPLOAD, naming ``name``) unreadable data, another shape or
    affine than the CT's, and values that are not whole numbers 0-255.
    """
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        img = nib.Nifti1Image.from_bytes(data)
        img = nib.as_closest_canonical(img)
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for garbage
        raise InputError(ErrorCode.BAD_UPLOAD, f"{name}: not a readable NIfTI file ({type(exc).__name__})") from None
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    want_shape = tuple(int(v) for v in shape_zyx[::-1])
    if tuple(arr.shape) != want_shape:
        raise InputError(ErrorCode.BAD_UPLOAD, f"{name}: shape {arr.shape} differs from the CT grid {want_shape}")
    want = ras_affine(tuple(shape_zyx), spacing_mm_zyx, origin_lps)
    if not np.allclose(img.affine, want, atol=AFFINE_TOLERANCE_MM):
        raise InputError(ErrorCode.BAD_UPLOAD, f"{name}: its affine differs from the CT's (not on the CT grid)")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 255) or np.any(np.mod(arr, 1) != 0):
        raise InputError(ErrorCode.BAD_UPLOAD, f"{name}: label values must be whole numbers 0-255")
    return ras_to_zyx(np.asarray(arr).astype(np.uint8))


def read_nifti_zyx(path: Path) -> np.ndarray:
    """The array of a NIfTI file written by :func:`nifti_bytes`, in canonical zyx order."""
    img = nib.Nifti1Image.from_bytes(gzip.decompress(Path(path).read_bytes()))
    return ras_to_zyx(np.asanyarray(img.dataobj))
