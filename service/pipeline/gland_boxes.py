"""Stages 3b and 4 on each gland's support only: probabilities back onto the CT grid and the clean-up of
``postprocess``, computed inside a box around the voxels that *can* be labelled as that gland.

Why a box is exact, not an approximation. On the CT grid a voxel gets gland ``c`` only if
``p_c > w * p_0`` with ``p_c`` the largest gland probability (``weighted_argmax``). As
``p_0 >= 1 - sum(glands) >= 1 - n * p_c`` (``n`` glands), that needs ``p_c > w / (1 + w * n)``. Trilinear
interpolation is a convex combination of the 8 model-grid neighbours, so at least one of them must exceed the same
threshold. The box is therefore the CT voxels whose model-grid neighbours touch the model-grid bounding box of
``p_c > threshold`` (a small relative slack for rounding), grown by ``MARGIN`` voxels. Inside it the resampling
gives exactly the whole grid's values (``linear_resample_box``) and the argmax, the largest component and the hole
filling see the same voxels, so the masks are identical to the whole-grid path (tested on the sample patients).

For a 512 x 512 x 154 CT this replaces three whole-grid float32 channels (480 MB) and a whole-grid argmax by two
boxes of a few hundred thousand voxels.

The QA reads the same boxes: its probability signals only look at voxels where the gland's probability exceeds
``qa_signals.UNCERTAIN_LOW`` (0.2) or next to the mask, so the boxes are built with ``min(w / (1 + n w), 0.2)``
(``gland_probabilities(min_threshold=...)``) and every QA signal equals its whole-grid value (tested). Maps that
are near zero away from the glands (the QA's uncertainty) come back as a ``BoxedMap``: exact inside the box of
the model-grid voxels above a floor, zero outside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.pipeline.plan import Plan
from service.pipeline.postprocess import BACKGROUND, GlandMask, clean_mask, weighted_argmax
from service.pipeline.preprocess import linear_resample_box

MARGIN = 2  # CT voxels around the exact support box (clean_mask's own 1-voxel margin fits inside)
_SLACK = 1e-3  # relative slack on the threshold, for float32 rounding in the interpolation


def support_threshold(background_weight: float, n_glands: int) -> float:
    """A gland probability at or below this can never win ``weighted_argmax`` (see the module docstring)."""
    return background_weight / (1.0 + background_weight * n_glands)


def back_scale(plan: Plan, ct_spacing_mm_zyx: Sequence[float]) -> list[float]:
    """CT voxel ``k`` samples model-grid coordinate ``k * scale`` (the map of ``resample_back``)."""
    return [sc / sm for sm, sc in zip(plan.spacing_mm_zyx, ct_spacing_mm_zyx, strict=True)]


def gland_box(
    p_model_zyx: np.ndarray, scale: Sequence[float], ct_shape_zyx: Sequence[int], threshold: float
) -> tuple[slice, slice, slice] | None:
    """CT-grid box holding every voxel whose interpolated probability can exceed ``threshold``; None if none can."""
    hot = p_model_zyx > threshold * (1.0 - _SLACK)
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(hot.any(axis=others))
        if idx.size == 0:
            return None
        lo, hi, n_in, n_ct = int(idx[0]), int(idx[-1]), hot.shape[axis], int(ct_shape_zyx[axis])
        # a CT voxel at model coordinate u uses floor(u) and floor(u) + 1: it needs lo - 1 <= u < hi + 1
        k_lo = math.floor((lo - 1) / scale[axis]) - MARGIN
        k_hi = n_ct if hi >= n_in - 1 else math.ceil((hi + 1) / scale[axis]) + 1 + MARGIN
        box.append(slice(max(k_lo, 0), min(k_hi, n_ct)))
    return box[0], box[1], box[2]


def probabilities_in_box(
    probs_model_zyxc: np.ndarray,
    scale: Sequence[float],
    ct_shape_zyx: Sequence[int],
    box: Sequence[slice] | None = None,
) -> np.ndarray:
    """Per-class probabilities on the CT grid (float32, ``(z, y, x, C)``), inside ``box`` (default: everywhere).

    Only the gland channels are interpolated; the background is their complement, clipped to [0, 1].
    """
    n_classes = probs_model_zyxc.shape[-1]
    fg = [linear_resample_box(probs_model_zyxc[..., c], scale, ct_shape_zyx, box) for c in range(1, n_classes)]
    out = np.empty((*fg[0].shape, n_classes), dtype=np.float32)
    for c, channel in enumerate(fg, start=1):
        out[..., c] = channel
    del fg
    out[..., 0] = 1.0 - np.sum(out[..., 1:], axis=-1)
    np.clip(out[..., 0], 0.0, 1.0, out=out[..., 0])
    return out


@dataclass(frozen=True)
class GlandProbabilities:
    """One gland's probabilities on the CT grid inside its box (``None``: no voxel can be that gland)."""

    name: str
    channel: int
    box: tuple[slice, slice, slice] | None
    probs_zyxc: np.ndarray | None  # float32 (z, y, x, C) inside ``box``, every channel


def gland_probabilities(
    probs_model_zyxc: np.ndarray,
    plan: Plan,
    ct_spacing_mm_zyx: Sequence[float],
    ct_shape_zyx: Sequence[int],
    min_threshold: float = 1.0,
) -> list[GlandProbabilities]:
    """Stage 3b: each gland's probabilities back on the CT grid, inside its box only.

    The box holds every voxel whose gland probability can exceed ``min(support_threshold, min_threshold)``: the
    default is the support of the masks; the QA passes ``UNCERTAIN_LOW`` so that its signals see every voxel
    they count."""
    labels = list(plan.labels)
    if not labels or labels[0] != BACKGROUND:
        raise ValueError(f"labels[0] must be {BACKGROUND!r}, got {labels}")
    if probs_model_zyxc.ndim != 4 or probs_model_zyxc.shape[-1] != len(labels):
        raise ValueError(f"probabilities of shape {probs_model_zyxc.shape} for labels {labels}")
    shape = tuple(int(n) for n in ct_shape_zyx)
    scale = back_scale(plan, ct_spacing_mm_zyx)
    threshold = min(support_threshold(plan.background_weight, len(labels) - 1), float(min_threshold))
    out = []
    for c, name in enumerate(labels[1:], start=1):
        box = gland_box(probs_model_zyxc[..., c], scale, shape, threshold)
        probs = None if box is None else probabilities_in_box(probs_model_zyxc, scale, shape, box)
        out.append(GlandProbabilities(name, c, box, probs))
    return out


def whole_grid(probs_ct_zyxc: np.ndarray, labels: Sequence[str]) -> list[GlandProbabilities]:
    """Probabilities already on the whole CT grid, as one box (the whole grid) per gland."""
    box = tuple(slice(0, int(n)) for n in probs_ct_zyxc.shape[:3])
    return [GlandProbabilities(name, c, box, probs_ct_zyxc) for c, name in enumerate(labels) if c > 0]  # type: ignore[arg-type]


def clean_glands(
    boxed: list[GlandProbabilities], background_weight: float, ct_shape_zyx: Sequence[int]
) -> dict[str, GlandMask]:
    """Stage 4 in each box: weighted argmax, largest component, hole filling (``postprocess``'s steps)."""
    shape = tuple(int(n) for n in ct_shape_zyx)
    result: dict[str, GlandMask] = {}
    for g in boxed:
        mask = np.zeros(shape, dtype=bool)
        if g.box is None or g.probs_zyxc is None:
            result[g.name] = GlandMask(g.name, mask, 0, 0.0, 1.0)
            continue
        sub, n_before, fraction = clean_mask(weighted_argmax(g.probs_zyxc, background_weight) == g.channel)
        mean_prob = float(g.probs_zyxc[..., g.channel][sub].mean(dtype=np.float64)) if sub.any() else 0.0
        mask[g.box] = sub
        result[g.name] = GlandMask(g.name, mask, n_before, mean_prob, fraction)
    return result


def postprocess_on_ct_grid(
    probs_model_zyxc: np.ndarray, plan: Plan, ct_spacing_mm_zyx: Sequence[float], ct_shape_zyx: Sequence[int]
) -> dict[str, GlandMask]:
    """``postprocess(probabilities_to_ct_grid(...))`` computed in each gland's box: the same ``GlandMask``es."""
    boxed = gland_probabilities(probs_model_zyxc, plan, ct_spacing_mm_zyx, ct_shape_zyx)
    return clean_glands(boxed, plan.background_weight, ct_shape_zyx)


@dataclass(frozen=True)
class BoxedMap:
    """A float32 map on the CT grid that is stored only inside ``box`` and is zero outside it."""

    shape_zyx: tuple[int, int, int]
    box: tuple[slice, slice, slice] | None  # None: zero everywhere
    values: np.ndarray | None  # float32 inside ``box``

    @classmethod
    def whole(cls, array_zyx: np.ndarray) -> BoxedMap:
        arr = np.asarray(array_zyx, dtype=np.float32)
        shape = (int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2]))
        return cls(shape, (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2])), arr)

    def crop(self, region: Sequence[slice]) -> np.ndarray:
        """The map inside ``region`` (slices with explicit bounds within the grid), zero where outside ``box``."""
        ranges = [sl.indices(n)[:2] for sl, n in zip(region, self.shape_zyx, strict=True)]
        out = np.zeros([hi - lo for lo, hi in ranges], dtype=np.float32)
        if self.box is None or self.values is None:
            return out
        src, dst = [], []
        for (lo, hi), b in zip(ranges, self.box, strict=True):
            a, z = max(lo, b.start), min(hi, b.stop)
            if a >= z:
                return out
            src.append(slice(a - b.start, z - b.start))
            dst.append(slice(a - lo, z - lo))
        out[tuple(dst)] = self.values[tuple(src)]
        return out

    def full(self) -> np.ndarray:
        """The whole grid (float32): for writers that need it (the NIfTI output)."""
        return self.crop(tuple(slice(0, n) for n in self.shape_zyx))

    def at_least(self, level: float) -> np.ndarray:
        """Boolean whole-grid mask of ``map >= level`` (``level`` > 0: nothing outside the box qualifies)."""
        out = np.zeros(self.shape_zyx, dtype=bool)
        if self.box is not None and self.values is not None:
            out[self.box] = self.values >= level
        return out


def map_to_ct_grid(
    map_model_zyx: np.ndarray,
    plan: Plan,
    ct_spacing_mm_zyx: Sequence[float],
    ct_shape_zyx: Sequence[int],
    floor: float,
) -> BoxedMap:
    """``resample_back`` of a non-negative model-grid map, computed only where it can exceed ``floor``: inside
    the box the whole grid's values, outside it zero instead of values <= ``floor``."""
    shape = (int(ct_shape_zyx[0]), int(ct_shape_zyx[1]), int(ct_shape_zyx[2]))
    scale = back_scale(plan, ct_spacing_mm_zyx)
    box = gland_box(np.asarray(map_model_zyx), scale, shape, floor)
    if box is None:
        return BoxedMap(shape, None, None)
    return BoxedMap(shape, box, linear_resample_box(np.asarray(map_model_zyx), scale, shape, box))
