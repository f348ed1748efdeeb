"""Overlap, surface-distance and volume metrics between binary masks on one grid (numpy/scipy only).

Shared by the service's QA (stage 6) and training's evaluation, so it imports nothing from the service.
All masks are boolean arrays of the same shape, axes ``(z, y, x)``; ``spacing_mm_zyx`` is the voxel size along
those axes in mm.

Conventions (documented because the literature varies):

- **Empty masks.** ``dice``/``iou``: both empty -> NaN (undefined: nothing to agree on), one empty -> 0.0.
  Surface distances: if either mask is empty both returned arrays are empty and ``hd95_mm`` /
  ``mean_surface_distance_mm`` are NaN (an unbounded distance is not a number we can report).
- **Surface** of a mask: its voxels with at least one 6-neighbour outside the mask; voxels on the array border
  count as surface (outside the array is background). Distances are Euclidean, in mm, between voxel centres.
- **HD95**: ``max(P95(d(A->B)), P95(d(B->A)))``, the larger of the two directed 95th percentiles (as MONAI's
  ``compute_hausdorff_distance(percentile=95)``; medpy's ``hd95`` pools both directions instead).
- **Mean surface distance**: the average symmetric surface distance, the mean of the pooled distances of both
  directions, ``(sum d(A->B) + sum d(B->A)) / (|S_A| + |S_B|)`` (Heimann et al., IEEE TMI 2009).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

_STRUCT_6 = ndimage.generate_binary_structure(3, 1)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _check_spacing(spacing_mm_zyx: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing_mm_zyx)
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {ndim} positive finite numbers, got {spacing_mm_zyx}")
    return spacing


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient ``2|A∩B| / (|A|+|B|)``; NaN if both are empty, 0.0 if one is."""
    a, b = _check_pair(a, b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|A∩B| / |A∪B|``; NaN if both are empty, 0.0 if one is."""
    a, b = _check_pair(a, b)
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return float("nan")
    return int(np.logical_and(a, b).sum()) / union


def volume_cc(mask: np.ndarray, spacing_mm_zyx: Sequence[float]) -> float:
    """Volume of a mask in cm³ (voxel count times voxel volume); 0.0 for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    spacing = _check_spacing(spacing_mm_zyx, mask.ndim)
    return int(mask.sum()) * math.prod(spacing) / 1000.0


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one 6-neighbour outside it (array border counts as outside)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_STRUCT_6, border_value=0)


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` grown by one voxel (clipped): surfaces and distances are exact inside it."""
    both = a | b
    box = []
    for axis in range(both.ndim):
        others = tuple(x for x in range(both.ndim) if x != axis)
        idx = np.flatnonzero(both.any(axis=others))
        box.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, both.shape[axis])))
    return tuple(box)


def surface_distances_mm(
    a: np.ndarray, b: np.ndarray, spacing_mm_zyx: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(d(A->B), d(B->A))`` in mm.

    ``d(A->B)[n]`` is the distance from the n-th surface voxel of A to the nearest surface voxel of B (one value
    per surface voxel, C order). If either mask is empty both arrays are empty.
    """
    a, b = _check_pair(a, b)
    spacing = _check_spacing(spacing_mm_zyx, a.ndim)
    if not a.any() or not b.any():
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.float64)
    # Crop to the union's bounding box (+1 voxel): every surface voxel lies inside it, so the distance transform
    # of the crop is exact, and surface voxels at the crop border are only those at the array border.
    box = _union_box(a, b)
    a, b = a[box], b[box]
    sa, sb = surface_mask(a), surface_mask(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return np.asarray(dist_to_b[sa], dtype=np.float64), np.asarray(dist_to_a[sb], dtype=np.float64)


def _hd95(d_ab: np.ndarray, d_ba: np.ndarray) -> float:
    if d_ab.size == 0 or d_ba.size == 0:
        return float("nan")
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def _assd(d_ab: np.ndarray, d_ba: np.ndarray) -> float:
    if d_ab.size == 0 or d_ba.size == 0:
        return float("nan")
    return float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size))


def hd95_mm(a: np.ndarray, b: np.ndarray, spacing_mm_zyx: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (max of the directed P95s); NaN if either is empty."""
    return _hd95(*surface_distances_mm(a, b, spacing_mm_zyx))


def mean_surface_distance_mm(a: np.ndarray, b: np.ndarray, spacing_mm_zyx: Sequence[float]) -> float:
    """Average symmetric surface distance in mm (mean of both directions pooled); NaN if either is empty."""
    return _assd(*surface_distances_mm(a, b, spacing_mm_zyx))


def surface_metrics_mm(a: np.ndarray, b: np.ndarray, spacing_mm_zyx: Sequence[float]) -> tuple[float, float]:
    """``(hd95_mm, mean_surface_distance_mm)`` from one pair of distance transforms."""
    d_ab, d_ba = surface_distances_mm(a, b, spacing_mm_zyx)
    return _hd95(d_ab, d_ba), _assd(d_ab, d_ba)


def hd95_pooled_mm(d_ab: np.ndarray, d_ba: np.ndarray) -> float:
    """The pooled HD95: the 95th percentile of both directions' surface distances together (medpy's ``hd95``,
    plastimatch's "Percent (0.95) Hausdorff distance (boundary)"); NaN if either mask is empty. Never larger than
    :func:`hd95_mm`'s max of the directed 95th percentiles."""
    if d_ab.size == 0 or d_ba.size == 0:
        return float("nan")
    return float(np.percentile(np.concatenate([d_ab, d_ba]), 95))


def surface_dice(d_ab: np.ndarray, d_ba: np.ndarray, tolerance_mm: float) -> float:
    """Surface Dice at a tolerance (Nikolov et al., J Med Internet Res 2021): the fraction of both surfaces lying
    within ``tolerance_mm`` of the other, ``(#{d(A->B) <= t} + #{d(B->A) <= t}) / (|S_A| + |S_B|)``, counting surface
    voxels (not surface-element areas); NaN if either mask is empty."""
    if d_ab.size == 0 or d_ba.size == 0:
        return float("nan")
    within = int(np.count_nonzero(d_ab <= tolerance_mm)) + int(np.count_nonzero(d_ba <= tolerance_mm))
    return within / (d_ab.size + d_ba.size)


def surface_report_mm(
    a: np.ndarray, b: np.ndarray, spacing_mm_zyx: Sequence[float], tolerances_mm: Sequence[float] = (2.0, 3.0)
) -> dict[str, float]:
    """HD95 (both definitions), mean surface distance and surface Dice at each tolerance, from one pair of
    distance transforms: keys ``hd95_mm`` (max of directed P95s), ``hd95_pooled_mm``, ``msd_mm``,
    ``surface_dice_<t>mm``."""
    d_ab, d_ba = surface_distances_mm(a, b, spacing_mm_zyx)
    out = {"hd95_mm": _hd95(d_ab, d_ba), "hd95_pooled_mm": hd95_pooled_mm(d_ab, d_ba), "msd_mm": _assd(d_ab, d_ba)}
    for t in tolerances_mm:
        out[f"surface_dice_{t:g}mm"] = surface_dice(d_ab, d_ba, float(t))
    return out
