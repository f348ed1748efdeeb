"""Stage 3, inference: network probabilities for a preprocessed volume, and back onto the CT grid.

The network is fully convolutional. A volume that fits the plan's ``inference_window_zyx`` (after padding to a
multiple of ``size_divisor``) is predicted in one pass; a larger one by sliding windows with the plan's overlap,
blended with separable tent weights so that window borders never dominate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from service.pipeline.plan import Plan
from service.pipeline.preprocess import normalize_hu, resample_back

PredictFn = Callable[[np.ndarray], np.ndarray]  # (1, z, y, x, 1) float32 -> (1, z, y, x, C) probabilities


def _round_up(n: int, d: int) -> int:
    return int(-(-n // d) * d)


def _starts(n: int, win: int, step: int) -> list[int]:
    if n <= win:
        return [0]
    starts = list(range(0, n - win, step)) + [n - win]
    return sorted(set(starts))


def _tent(n: int) -> np.ndarray:
    x = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.maximum(1.0 - np.abs(2.0 * x - 1.0), 1e-3).astype(np.float32)


def body_box(x_zyx: np.ndarray, plan: Plan, margin: int = 8) -> tuple[slice, slice, slice]:
    """Bounding box (with a margin) of the voxels above -225 HU: the patient, not the air around it."""
    thr = float(normalize_hu(np.array([-225.0]), plan)[0])
    idx = np.argwhere(x_zyx > thr)
    if idx.size == 0:
        return (slice(0, x_zyx.shape[0]), slice(0, x_zyx.shape[1]), slice(0, x_zyx.shape[2]))
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, x_zyx.shape)
    return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))


def predict_probabilities(predict: PredictFn, x_zyx: np.ndarray, plan: Plan) -> np.ndarray:
    """Softmax probabilities (z, y, x, C) for a normalised model-grid volume ``x_zyx``.

    Only the body's bounding box is passed to the network; everything outside it is background (p = 1).
    """
    box = body_box(x_zyx, plan)
    out = np.zeros((*x_zyx.shape, len(plan.labels)), dtype=np.float32)
    out[..., 0] = 1.0
    crop = np.ascontiguousarray(x_zyx[box])
    probs = _predict_box(predict, crop, plan)
    if plan.tta_lr_flip:
        mirrored = _predict_box(predict, np.ascontiguousarray(crop[:, :, ::-1]), plan)[:, :, ::-1]
        probs = 0.5 * (probs + mirrored[..., mirror_channel_order(plan.labels)])
    out[box] = probs
    return out


def mirror_channel_order(labels: tuple[str, ...]) -> list[int]:
    """Channel permutation that swaps left and right structures (``*_L`` <-> ``*_R``) after a mirror in x."""

    def partner(name: str) -> str:
        if name.endswith("_L"):
            return name[:-2] + "_R"
        if name.endswith("_R"):
            return name[:-2] + "_L"
        return name

    return [labels.index(partner(n)) if partner(n) in labels else i for i, n in enumerate(labels)]


def _predict_box(predict: PredictFn, x_zyx: np.ndarray, plan: Plan) -> np.ndarray:
    n_classes = len(plan.labels)
    d = plan.size_divisor
    air = float(normalize_hu(np.array([-1000.0]), plan)[0])
    win = [min(_round_up(n, d), w) for n, w in zip(x_zyx.shape, plan.inference_window_zyx, strict=True)]
    padded_shape = [max(_round_up(n, d), w) for n, w in zip(x_zyx.shape, win, strict=True)]
    xp = np.full(padded_shape, air, dtype=np.float32)
    xp[: x_zyx.shape[0], : x_zyx.shape[1], : x_zyx.shape[2]] = x_zyx
    steps = [max(int(w * (1.0 - plan.overlap)) // d * d, d) for w in win]
    starts = [_starts(n, w, s) for n, w, s in zip(padded_shape, win, steps, strict=True)]
    if all(len(s) == 1 for s in starts):
        probs = predict(xp[None, ..., None])[0]
        return np.asarray(probs[: x_zyx.shape[0], : x_zyx.shape[1], : x_zyx.shape[2]], dtype=np.float32)
    acc = np.zeros((*padded_shape, n_classes), dtype=np.float32)
    wsum = np.zeros(padded_shape, dtype=np.float32)
    weight = _tent(win[0])[:, None, None] * _tent(win[1])[None, :, None] * _tent(win[2])[None, None, :]
    for z0 in starts[0]:
        for y0 in starts[1]:
            for x0 in starts[2]:
                sl = (slice(z0, z0 + win[0]), slice(y0, y0 + win[1]), slice(x0, x0 + win[2]))
                p = np.asarray(predict(xp[sl][None, ..., None])[0], dtype=np.float32)
                acc[sl] += p * weight[..., None]
                wsum[sl] += weight
    acc /= wsum[..., None]
    return acc[: x_zyx.shape[0], : x_zyx.shape[1], : x_zyx.shape[2]]


def probabilities_to_ct_grid(
    probs_model_zyxc: np.ndarray,
    plan: Plan,
    ct_spacing_mm_zyx: tuple[float, float, float],
    ct_shape_zyx: tuple[int, int, int],
) -> np.ndarray:
    """Resample per-class probabilities (trilinear) from the model grid back onto the CT grid.

    Linear interpolation keeps the channels summing to one, so only the foreground channels are resampled and
    the background is their complement.
    """
    fg = [
        resample_back(probs_model_zyxc[..., c], plan.spacing_mm_zyx, ct_spacing_mm_zyx, ct_shape_zyx)
        for c in range(1, probs_model_zyxc.shape[-1])
    ]
    out = np.empty((*fg[0].shape, len(fg) + 1), dtype=np.float32)
    for c, channel in enumerate(fg, start=1):
        out[..., c] = channel
    out[..., 0] = 1.0 - np.sum(out[..., 1:], axis=-1)
    np.clip(out[..., 0], 0.0, 1.0, out=out[..., 0])
    return out
