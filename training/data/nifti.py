"""Reader for NIfTI image/mask pairs (the layout of the original study's exported data).

Layout, one folder per case (the folder name is the case id; ``.nii`` or ``.nii.gz``)::

    split_dir/<case>/image.nii.gz       CT in Hounsfield units (scl_slope / scl_inter applied), 3-D
    split_dir/<case>/Parotid_L.nii.gz   binary mask (0/1) of the left parotid  } either may be absent:
    split_dir/<case>/Parotid_R.nii.gz   binary mask (0/1) of the right parotid } that gland is not contoured
  or
    split_dir/<case>/label.nii.gz       label map: 0 background, 1 Parotid_R, 2 Parotid_L (the plan's label order)

Left and right are the patient's. NIfTI world coordinates are RAS+ (nibabel's convention: +x toward the
patient's right, +y anterior, +z superior); DICOM's and the canonical order's are LPS.

Orientation: the image is reoriented with nibabel (``as_closest_canonical``: RAS+ axes, voxel axes i, j, k
increasing toward the patient's right, anterior and superior), then i and j are flipped (toward left and
posterior: LPS) and the axes transposed to (z, y, x), the canonical order of ``service.pipeline.volume``. The
spacing comes from the affine's column lengths, rounded to 1e-5 mm. Only axis-aligned affines (rotations by
multiples of 90 degrees and flips) are accepted.

Refused with ``InputError(BAD_TRAINING_DATA)`` naming the file (and, in :func:`iter_split` with a report,
skipped with that reason): a missing image, no mask at all, both separate masks and a label map, an unreadable
file, an image that is not 3-D, non-finite values, an image that does not look like HU (first percentile above
-500 HU: no air, e.g. stored without the rescale intercept), an oblique or sheared affine, a mask whose shape
or affine differs from the image's, a mask with values other than 0/1 (a label map: other than 0/1/2), and a
case with no parotid voxels at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from service.errors import ErrorCode, InputError
from training.data.case import CaseData, SkipReport

GLANDS = ("Parotid_L", "Parotid_R")
LABEL_MAP = {1: "Parotid_R", 2: "Parotid_L"}
SUFFIXES = (".nii.gz", ".nii")
# largest off-axis direction cosine accepted as axis-aligned (~0.06 degrees); float32 affines round to ~1e-7
OBLIQUE_TOLERANCE = 1e-3
AFFINE_TOLERANCE_MM = 1e-3
MIN_AIR_PERCENTILE_HU = -500.0
SPACING_DECIMALS = 5


def _bad(message: str) -> InputError:
    return InputError(ErrorCode.BAD_TRAINING_DATA, message)


def _find(case_dir: Path, stem: str) -> Path | None:
    found = [case_dir / f"{stem}{s}" for s in SUFFIXES if (case_dir / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise _bad(f"{found[0]} and {found[1]}: both present, keep one")
    return found[0] if found else None


def _load(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for garbage input
        raise _bad(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise _bad(f"{path}: not a NIfTI image ({type(img).__name__})")
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise _bad(f"{path}: expected a 3-D image, shape is {img.shape}")
    return img


def check_axis_aligned(path: Path, affine: np.ndarray) -> None:
    """Refuse affines whose voxel axes are not (up to sign and order) the world axes."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(lin, axis=0)
    if not np.all(np.isfinite(lin)) or np.any(norms <= 0):
        raise _bad(f"{path}: the affine has a zero or non-finite voxel axis:\n{np.round(affine, 4)}")
    cosines = np.abs(lin / norms)
    big = cosines.max(axis=0)
    off = cosines.sum(axis=0) - big
    if np.any(off > OBLIQUE_TOLERANCE) or sorted(np.argmax(cosines, axis=0).tolist()) != [0, 1, 2]:
        raise _bad(
            f"{path}: oblique or sheared affine (voxel axes not along the patient axes; largest off-axis direction "
            f"cosine {off.max():.4g}); resample it onto an axis-aligned grid first"
        )


def to_canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Voxel array in canonical LPS (z, y, x) order and its spacing (mm, z-y-x). Values as stored (scaled)."""
    ras = nib.as_closest_canonical(img)
    data = np.asanyarray(ras.dataobj)
    zooms = np.linalg.norm(np.asarray(ras.affine)[:3, :3], axis=0)
    # RAS+ voxel axes (i: toward right, j: anterior, k: superior) -> LPS (flip i and j) -> (k, j, i)
    lps = data[::-1, ::-1, :]
    array_zyx = np.ascontiguousarray(np.transpose(lps, (2, 1, 0)))
    # NIfTI keeps the affine in float32 (2.7 mm reads back as 2.7000000477): round to 1e-5 mm so a spacing
    # written as 2.7 resamples exactly like 2.7 from the other readers
    sz, sy, sx = (round(float(zooms[a]), SPACING_DECIMALS) for a in (2, 1, 0))
    return array_zyx, (sz, sy, sx)


def _check_same_grid(mask_path: Path, mask: nib.Nifti1Image, image_path: Path, image: nib.Nifti1Image) -> None:
    if tuple(mask.shape) != tuple(image.shape):
        raise _bad(f"{mask_path}: shape {tuple(mask.shape)} differs from {image_path.name} shape {tuple(image.shape)}")
    if not np.allclose(mask.affine, image.affine, atol=AFFINE_TOLERANCE_MM, rtol=0):
        raise _bad(
            f"{mask_path}: affine differs from {image_path.name}'s (different grid):\n{np.round(mask.affine, 4)}\n"
            f"vs\n{np.round(image.affine, 4)}"
        )


def _mask_values(path: Path, array: np.ndarray, allowed: tuple[int, ...]) -> np.ndarray:
    """The mask as integers, refusing values outside ``allowed``."""
    if not np.all(np.isfinite(array)):
        raise _bad(f"{path}: non-finite values in a mask")
    values = np.unique(array)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise _bad(f"{path}: not a label mask: values {shown} (allowed: {', '.join(map(str, allowed))})")
    return array.astype(np.uint8)


def read_case(case_dir: Path) -> CaseData:
    """One case folder -> CaseData in canonical LPS order; InputError(BAD_TRAINING_DATA) says why it is unusable."""
    image_path = _find(case_dir, "image")
    if image_path is None:
        raise _bad(f"{case_dir}: no image.nii.gz (or image.nii)")
    label_path = _find(case_dir, "label")
    gland_paths = {g: p for g in GLANDS if (p := _find(case_dir, g)) is not None}
    if label_path is None and not gland_paths:
        raise _bad(f"{case_dir}: no mask (Parotid_L.nii.gz / Parotid_R.nii.gz, or label.nii.gz)")
    if label_path is not None and gland_paths:
        raise _bad(f"{case_dir}: both label.nii.gz and per-gland masks; keep one layout")

    image = _load(image_path)
    check_axis_aligned(image_path, image.affine)
    hu_zyx, spacing = to_canonical(image)
    hu_zyx = hu_zyx.astype(np.float32)
    if not np.all(np.isfinite(hu_zyx)):
        raise _bad(f"{image_path}: non-finite voxel values")
    p1 = float(np.percentile(hu_zyx, 1))
    if p1 > MIN_AIR_PERCENTILE_HU:
        raise _bad(
            f"{image_path}: does not look like CT in Hounsfield units (1st percentile {p1:.0f}, air should be near "
            "-1000): store HU (apply the rescale slope and intercept)"
        )

    masks: dict[str, np.ndarray] = {}
    if label_path is not None:
        label = _load(label_path)
        _check_same_grid(label_path, label, image_path, image)
        lab_zyx = _mask_values(label_path, to_canonical(label)[0], (0, 1, 2))
        for value, gland in LABEL_MAP.items():
            m = lab_zyx == value
            if m.any():
                masks[gland] = m
    else:
        for gland, path in gland_paths.items():
            mask = _load(path)
            _check_same_grid(path, mask, image_path, image)
            m = _mask_values(path, to_canonical(mask)[0], (0, 1)).astype(bool)
            if m.any():
                masks[gland] = m
    if not masks:
        raise _bad(f"{case_dir}: the masks hold no parotid voxels")
    return CaseData(case_dir.name, hu_zyx, spacing, masks)


def iter_split(split_dir: Path, report: SkipReport | None = None) -> Iterator[CaseData]:
    """Yield every usable case folder of ``split_dir``, recording skipped ones (and why) in ``report``.

    Without a ``report`` the first unusable case raises.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise _bad(f"{split_dir}: not a folder of NIfTI case folders")
    cases = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not cases:
        raise _bad(f"{split_dir}: no case folders (expected {split_dir}/<case>/image.nii.gz and masks)")
    for case_dir in cases:
        try:
            case = read_case(case_dir)
        except InputError as exc:
            if report is None:
                raise
            report.skipped[case_dir.name] = exc.message
            continue
        yield case
