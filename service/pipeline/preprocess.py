"""Apply the plan: resampling and intensity normalisation, imported by serving *and* training.

Grids: a canonical volume (see ``volume.py``) with spacing ``s_in`` is resampled onto a grid with the plan's
spacing ``s_out`` that shares the position of voxel (0, 0, 0) and covers the input's extent. Output voxel ``k``
samples input coordinate ``k * s_out / s_in`` (trilinear, edge values repeated). ``resample_back`` is the inverse
map used to bring network probabilities back onto the CT grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from service.pipeline.plan import Plan
from service.pipeline.volume import Volume


def target_shape(shape_zyx: Sequence[int], spacing_in: Sequence[float], spacing_out: Sequence[float]) -> tuple:
    """Number of output voxels per axis whose centres lie inside the input's extent."""
    return tuple(
        int(np.floor((n - 1) * si / so + 1e-6)) + 1
        for n, si, so in zip(shape_zyx, spacing_in, spacing_out, strict=True)
    )


def _linear_along(array: np.ndarray, axis: int, scale: float, n_out: int) -> np.ndarray:
    """Linear interpolation along one axis: output index k samples input coordinate ``k * scale`` (edges clamped)."""
    n_in = array.shape[axis]
    coords = np.clip(np.arange(n_out, dtype=np.float64) * scale, 0.0, n_in - 1)
    i0 = np.floor(coords).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * array.ndim
    shape[axis] = n_out
    w = (coords - i0).astype(np.float32).reshape(shape)
    a0 = np.take(array, i0, axis=axis)
    return a0 + (np.take(array, i1, axis=axis) - a0) * w


def _resample(array: np.ndarray, scale: Sequence[float], out_shape: Sequence[int], order: int) -> np.ndarray:
    """Resample with a diagonal (axis-aligned scaling) map. Trilinear interpolation is separable, so ``order=1``
    runs as three 1-D passes (the shrinking axes first), several times faster than ``ndimage.affine_transform``
    and equal to it up to float32 rounding (tested)."""
    if all(abs(s - 1.0) < 1e-9 for s in scale) and tuple(out_shape) == array.shape:
        return array.copy()
    if order == 1:
        out = np.asarray(array, dtype=np.float32)
        for axis in sorted(range(out.ndim), key=lambda a: out_shape[a] / out.shape[a]):
            out = _linear_along(out, axis, float(scale[axis]), int(out_shape[axis]))
        return out
    return ndimage.affine_transform(
        array,
        np.asarray(scale, dtype=np.float64),
        offset=0.0,
        output_shape=tuple(int(n) for n in out_shape),
        order=order,
        mode="nearest",
        prefilter=False,
    )


def resample_to_spacing(
    array_zyx: np.ndarray, spacing_in: Sequence[float], spacing_out: Sequence[float], order: int = 1
) -> np.ndarray:
    """Resample a canonical array from ``spacing_in`` to ``spacing_out`` (mm, z-y-x), origin kept."""
    out_shape = target_shape(array_zyx.shape, spacing_in, spacing_out)
    scale = [so / si for si, so in zip(spacing_in, spacing_out, strict=True)]
    return _resample(array_zyx, scale, out_shape, order)


def resample_back(
    array_zyx: np.ndarray,
    spacing_model: Sequence[float],
    spacing_ct: Sequence[float],
    ct_shape_zyx: Sequence[int],
    order: int = 1,
) -> np.ndarray:
    """Inverse of ``resample_to_spacing``: from the model grid onto the CT grid of shape ``ct_shape_zyx``."""
    scale = [sc / sm for sm, sc in zip(spacing_model, spacing_ct, strict=True)]
    return _resample(array_zyx, scale, ct_shape_zyx, order)


def normalize_hu(hu: np.ndarray, plan: Plan) -> np.ndarray:
    """Clip to the plan's HU window and scale to roughly [-1, 1] (float32)."""
    lo, hi = plan.hu_clip
    out = np.clip(hu.astype(np.float32), lo, hi)
    out -= np.float32(plan.hu_center)
    out /= np.float32(plan.hu_scale)
    return out


def preprocess_volume(ct: Volume, plan: Plan) -> np.ndarray:
    """Canonical HU volume -> normalised float32 array on the plan's grid (the network's input, no channel)."""
    resampled = resample_to_spacing(
        ct.array_zyx.astype(np.float32, copy=False), ct.spacing_mm_zyx, plan.spacing_mm_zyx, order=1
    )
    return normalize_hu(resampled, plan)


def resample_labels_to_spacing(
    label_zyx: np.ndarray, spacing_in: Sequence[float], spacing_out: Sequence[float]
) -> np.ndarray:
    """Resample a binary mask onto the model grid by linear interpolation and a 0.5 threshold."""
    frac = resample_to_spacing(label_zyx.astype(np.float32), spacing_in, spacing_out, order=1)
    return frac >= 0.5
