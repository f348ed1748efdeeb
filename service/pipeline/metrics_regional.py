"""Where a parotid contour errs and what it does to the dose: region and dose metrics on one grid (numpy only).

Masks and dose are arrays in the canonical order of ``service.pipeline.volume`` (z: inferior->superior,
y: anterior->posterior, x: patient's right->left), ``spacing_mm_zyx`` the voxel size along those axes.

- **Missed reference by third**: the reference gland's left-right extent (from the left edge of its leftmost voxel
  to the right edge of its rightmost one) is cut into three equal-width thirds; each reference voxel belongs to the
  third holding its centre. Per third: the fraction of its reference voxels the prediction does not cover.
  *Medial* is the third towards the midline: larger x for ``Parotid_R`` (on the patient's right, small x), smaller
  x for ``Parotid_L``.
- **Anterior border shortfall**: how far the prediction's most anterior voxel lies behind the reference's most
  anterior voxel, in mm along y (positive: the prediction stops short of the anterior border; negative: it extends
  beyond it); NaN when either is empty.
- **Mean dose / D50** to a contour: the mean and the median of the dose over the mask's voxels (D50 = the dose that
  half the contour's volume receives at least), in the dose's unit (Gy); NaN for an empty mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

THIRDS = ("medial", "middle", "lateral")


def _medial_is_larger_x(gland: str) -> bool:
    if gland.endswith("_R"):
        return True
    if gland.endswith("_L"):
        return False
    raise ValueError(f"{gland!r}: the side (…_L or …_R) is needed to know where the midline is")


def missed_by_third(pred: np.ndarray, ref: np.ndarray, gland: str) -> dict[str, float]:
    """Fraction of the reference missed by the prediction in its medial, middle and lateral thirds (see above)."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {ref.shape}")
    if not ref.any():
        return {t: math.nan for t in THIRDS}
    x = np.nonzero(ref)[2].astype(np.float64)
    lo, hi = x.min() - 0.5, x.max() + 0.5
    third = np.minimum(((x - lo) / (hi - lo) * 3).astype(int), 2)  # 0: smallest x
    if _medial_is_larger_x(gland):
        third = 2 - third
    missed = ~pred[ref]
    return {name: float(missed[third == i].mean()) if np.any(third == i) else math.nan for i, name in enumerate(THIRDS)}


def anterior_shortfall_mm(pred: np.ndarray, ref: np.ndarray, spacing_mm_zyx: Sequence[float]) -> float:
    """Distance in mm (along y) by which the prediction's anterior border lies behind the reference's."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if not pred.any() or not ref.any():
        return math.nan
    y_pred = int(np.flatnonzero(pred.any(axis=(0, 2)))[0])
    y_ref = int(np.flatnonzero(ref.any(axis=(0, 2)))[0])
    return (y_pred - y_ref) * float(spacing_mm_zyx[1])


def dose_in_mask(dose: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``(mean dose, D50)`` over the mask's voxels; NaN, NaN for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if dose.shape != mask.shape:
        raise ValueError(f"dose grid {dose.shape} differs from the mask's {mask.shape}")
    values = np.asarray(dose, dtype=np.float64)[mask]
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(np.median(values))
