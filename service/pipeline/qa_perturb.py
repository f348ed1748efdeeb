"""Test-time perturbation members for the QA: the same network on slightly moved or scaled inputs.

The contours never change: the segmentation uses the plan's own prediction (the volume, plus its left-right mirror
when ``plan.tta_lr_flip``), exactly as ``infer.predict_probabilities``. The QA adds *extra members*, each one more
network pass over the body's bounding box on the model grid:

- ``shift:dz,dy,dx``: the input moved by whole model voxels (e.g. ``shift:1,1,1`` = 2.5, 4, 4 mm with the shipped
  plan), the output moved back (a U-Net with four poolings is not shift-invariant at that scale);
- ``scale:f``: the input zoomed by ``f`` about the box centre (trilinear), the probabilities zoomed back by 1/f.

Members are the plan's passes (identity, mirror) plus the extras; their per-voxel labels (the plan's weighted
argmax) give the disagreement signals and map. The extras only run on the glands' region (``glands_region``: the
box of each gland's largest component in the plan's labels, grown by ``REGION_MARGIN_MM`` of context on every
side, within the body box); outside it each extra member's labels are the plan's, and the uncertainty map is
zero there (it describes the contours, not stray low probabilities elsewhere). Cost: one network pass over that
region per extra member, a fraction of a whole pass (``python -m bench.qa_members_cost``). Which extras run is
part of the bundle's QA calibration (``qa_calibration.json`` ``perturbations``), because the fitted quality model
depends on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from service.pipeline.infer import PredictFn, _predict_box, body_box, mirror_channel_order
from service.pipeline.plan import Plan
from service.pipeline.postprocess import weighted_argmax
from service.pipeline.preprocess import normalize_hu
from service.pipeline.qa_signals import member_disagreement_map, normalized_entropy

DEFAULT_PERTURBATIONS: tuple[str, ...] = ("shift:1,1,1", "scale:0.9")
REGION_MARGIN_MM = (20.0, 48.0, 48.0)  # context (z, y, x) around the glands' region for the extra members
UNCERTAINTY_FLOOR = 0.01  # the uncertainty map is written as 0 where it cannot exceed this (far from the glands)


def parse_perturbation(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"shift:1,0,-1"`` -> ``("shift", (1, 0, -1))``; ``"scale:0.9"`` -> ``("scale", (0.9,))``. ValueError else."""
    kind, _, args = spec.partition(":")
    try:
        values = tuple(float(v) for v in args.split(",")) if args else ()
    except ValueError:
        raise ValueError(f"perturbation {spec!r}: numbers expected after ':'") from None
    if kind == "shift" and len(values) == 3 and all(v == int(v) and abs(v) <= 8 for v in values):
        return kind, values
    if kind == "scale" and len(values) == 1 and 0.5 <= values[0] <= 2.0 and values[0] != 1.0:
        return kind, values
    raise ValueError(f"perturbation {spec!r}: expected 'shift:dz,dy,dx' (whole voxels, |d| <= 8) or 'scale:f'")


def _shift(arr: np.ndarray, d: Sequence[int], fill: float | np.ndarray) -> np.ndarray:
    """``out[i + d] = arr[i]`` on the first three axes; what moves in is ``fill``."""
    out = np.empty_like(arr)
    out[...] = fill
    src, dst = [], []
    for n, di in zip(arr.shape[:3], d, strict=True):
        di = int(di)
        src.append(slice(max(-di, 0), n - max(di, 0)))
        dst.append(slice(max(di, 0), n - max(-di, 0)))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def _zoom_about_centre(arr_zyx: np.ndarray, f: float, cval: float, centre: Sequence[float] | None = None) -> np.ndarray:
    """Output voxel ``o`` samples the input at ``c + (o - c) / f`` (c = ``centre``, default the array's centre):
    ``f > 1`` magnifies."""
    c = (np.asarray(arr_zyx.shape, dtype=np.float64) - 1.0) / 2.0 if centre is None else np.asarray(centre, float)
    return ndimage.affine_transform(
        arr_zyx, np.full(3, 1.0 / f), offset=c - c / f, order=1, mode="constant", cval=cval, prefilter=False
    )


def _member(
    predict: PredictFn, crop: np.ndarray, plan: Plan, spec: str, air: float, centre: Sequence[float] | None = None
) -> np.ndarray:
    """One extra member's probabilities on ``crop``; a ``scale`` zooms about ``centre`` (crop voxels; default the
    crop's centre)."""
    kind, values = parse_perturbation(spec)
    if kind == "shift":
        d = [int(v) for v in values]
        probs = _predict_box(predict, np.ascontiguousarray(_shift(crop, d, air)), plan)
        bg = np.zeros(probs.shape[-1], dtype=np.float32)
        bg[0] = 1.0
        return _shift(probs, [-v for v in d], bg)
    f = values[0]
    probs = _predict_box(predict, np.ascontiguousarray(_zoom_about_centre(crop, f, air, centre)), plan)
    out = np.empty_like(probs)
    for c in range(1, probs.shape[-1]):
        out[..., c] = _zoom_about_centre(probs[..., c], 1.0 / f, 0.0, centre)
    out[..., 0] = np.clip(1.0 - out[..., 1:].sum(axis=-1), 0.0, 1.0)
    return out


@dataclass
class MemberPrediction:
    """The plan's probabilities (what the contours are made from) and the QA's uncertainty, on the model grid."""

    probs_zyxc: np.ndarray  # identical to ``infer.predict_probabilities``
    member_names: list[str]
    member_labels: list[np.ndarray]  # per member, the weighted-argmax label map (model grid, int8)
    uncertainty_zyx: np.ndarray  # float32 in [0, 1]: max(normalised entropy, member disagreement)
    region: tuple[slice, ...] | None = None  # where the extra members ran (model grid); None: nowhere


def glands_region(labels_zyx: np.ndarray, n_classes: int, spacing_mm_zyx: Sequence[float]) -> tuple[slice, ...] | None:
    """The extra members' region in ``labels_zyx``'s grid (the plan's weighted-argmax labels): the box of each
    gland's largest 26-connected component (the one the contours keep), grown by ``REGION_MARGIN_MM``; None when
    no gland has a voxel."""
    lo = np.full(3, np.iinfo(np.int64).max)
    hi = np.full(3, -1)
    for c in range(1, n_classes):
        comps, n = ndimage.label(labels_zyx == c, structure=np.ones((3, 3, 3), bool))
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel())
        sizes[0] = 0
        box = ndimage.find_objects(comps)[int(np.argmax(sizes)) - 1]
        lo = np.minimum(lo, [sl.start for sl in box])
        hi = np.maximum(hi, [sl.stop for sl in box])
    if hi[0] < 0:
        return None
    margin = [int(np.ceil(m / s)) for m, s in zip(REGION_MARGIN_MM, spacing_mm_zyx, strict=True)]
    bounds = zip(lo, hi, margin, labels_zyx.shape, strict=True)
    return tuple(slice(max(int(a) - m, 0), min(int(b) + m, n)) for a, b, m, n in bounds)


def predict_with_members(
    predict: PredictFn, x_zyx: np.ndarray, plan: Plan, extra: Sequence[str] = DEFAULT_PERTURBATIONS
) -> MemberPrediction:
    """``predict_probabilities`` plus one pass per ``extra`` perturbation (see the module docstring)."""
    for spec in extra:
        parse_perturbation(spec)
    box = body_box(x_zyx, plan)
    air = float(normalize_hu(np.array([-1000.0]), plan)[0])
    crop = np.ascontiguousarray(x_zyx[box])
    passes = {"identity": _predict_box(predict, crop, plan)}
    if plan.tta_lr_flip:
        mirrored = _predict_box(predict, np.ascontiguousarray(crop[:, :, ::-1]), plan)[:, :, ::-1]
        passes["lr_flip"] = mirrored[..., mirror_channel_order(plan.labels)]
        mean = 0.5 * (passes["identity"] + passes["lr_flip"])
    else:
        mean = passes["identity"]
    labels_box = {name: weighted_argmax(p, plan.background_weight) for name, p in passes.items()}
    consensus = weighted_argmax(mean, plan.background_weight)
    region = glands_region(consensus, len(plan.labels), plan.spacing_mm_zyx)
    for spec in extra:
        lab = consensus.copy()  # outside the glands' region the member agrees with the plan's prediction
        if region is not None:  # a scale member zooms about the body box's centre, as over the whole box
            sub = np.ascontiguousarray(crop[region])
            centre = [(n - 1) / 2.0 - r.start for n, r in zip(crop.shape, region, strict=True)]
            lab[region] = weighted_argmax(_member(predict, sub, plan, spec, air, centre), plan.background_weight)
        labels_box[spec] = lab
    out = np.zeros((*x_zyx.shape, len(plan.labels)), dtype=np.float32)
    out[..., 0] = 1.0
    out[box] = mean
    labels_full = []
    for lab_box in labels_box.values():
        lab = np.zeros(x_zyx.shape, dtype=np.int8)
        lab[box] = lab_box
        labels_full.append(lab)
    unc_box = normalized_entropy(mean)
    if len(labels_full) > 1:
        unc_box = np.maximum(unc_box, member_disagreement_map([lab[box] for lab in labels_full]))
    unc = np.zeros(x_zyx.shape, dtype=np.float32)
    inner = None  # the region in the model grid's coordinates (it was found in the body box's)
    if region is None:
        unc[box] = unc_box
    else:  # the map is about the contours: zero away from the glands' region
        inner = tuple(slice(b.start + r.start, b.start + r.stop) for b, r in zip(box, region, strict=True))
        unc[inner] = unc_box[region]
    return MemberPrediction(out, list(labels_box), labels_full, unc, inner)
