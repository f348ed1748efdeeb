"""Collect every QA signal of one segmentation into plain dicts of floats (per gland, and for the input).

One function shared by serving (``service.pipeline.qa``) and calibration (``training.calibrate_qa``), so that the
quality model is fitted on exactly the numbers the service computes. The names of the keys are the signal names
used in ``qa_calibration.json`` and in the QA JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from service.pipeline.gland_boxes import GlandProbabilities
from service.pipeline.postprocess import GlandMask, weighted_argmax
from service.pipeline.qa_perturb import MemberPrediction
from service.pipeline.qa_signals import (
    PROBABILITY_KEYS,
    blanked_slices,
    body_cut_by_fov,
    body_landmarks,
    darkest_percentile_hu,
    gland_geometry,
    member_disagreement,
    probability_structure,
    soft_tissue_peak_hu,
)


def gland_z_range(masks: Sequence[np.ndarray], nz: int) -> tuple[int, int] | None:
    """The axial slices spanned by the union of ``masks``; None if all are empty."""
    any_k = np.zeros(nz, dtype=bool)
    for m in masks:
        any_k |= np.asarray(m, dtype=bool).any(axis=(1, 2))
    ks = np.flatnonzero(any_k)
    return None if ks.size == 0 else (int(ks[0]), int(ks[-1]))


def collect_input_signals(
    hu_zyx: np.ndarray, spacing_mm_zyx: Sequence[float], z_range: tuple[int, int] | None, body_threshold_hu: float
) -> dict[str, object]:
    """Input sanity: blanked slices (all, and those within 2 slices of the glands), the soft-tissue HU peak, the
    body cut by the in-plane field of view on the gland slices."""
    blanked = blanked_slices(hu_zyx, spacing_mm_zyx, body_threshold_hu=body_threshold_hu)
    near: list[int] = []
    cut: list[str] = []
    if z_range is not None:
        near = [k for k, _ in blanked if z_range[0] - 2 <= k <= z_range[1] + 2]
        cut = body_cut_by_fov(hu_zyx, z_range, body_threshold_hu)
    return {
        "blanked_slices": [k for k, _ in blanked],
        "blanked_slices_near_glands": near,
        "max_blanked_fraction": max((f for _, f in blanked), default=0.0),
        "soft_tissue_peak_hu": soft_tissue_peak_hu(hu_zyx, body_threshold_hu),
        "darkest_p1_hu": darkest_percentile_hu(hu_zyx),
        "body_cut_sides": cut,
    }


def collect_gland_signals(
    hu_zyx: np.ndarray,
    spacing_mm_zyx: Sequence[float],
    origin_lps: Sequence[float],
    glands: Mapping[str, GlandMask],
    gland_probs: Sequence[GlandProbabilities],
    members: MemberPrediction | None,
    background_weight: float,
    pairs: Sequence[tuple[str, str]],
    body_threshold_hu: float = -500.0,
) -> dict[str, dict[str, float]]:
    """Per gland ``{signal name: value}`` (NaN where not computable): probability structure on the CT grid (in
    each gland's box: ``gland_boxes.gland_probabilities(min_threshold=UNCERTAIN_LOW)``), perturbation
    disagreement on the model grid, plausibility measurements (with the body landmarks of the glands' slab) and,
    for a gland in ``pairs``, ``log_lr_ratio`` = log(this volume / the partner's)."""
    boxed = {gp.name: gp for gp in gland_probs}
    z_range = gland_z_range([g.mask_zyx for g in glands.values()], int(np.asarray(hu_zyx).shape[0]))
    body = None if z_range is None else body_landmarks(hu_zyx, spacing_mm_zyx, origin_lps, z_range, body_threshold_hu)
    consensus = None if members is None else weighted_argmax(members.probs_zyxc, background_weight)
    out: dict[str, dict[str, float]] = {}
    for name, g in glands.items():
        gp = boxed[name]
        c = gp.channel
        s: dict[str, float] = {}
        if gp.box is None or gp.probs_zyxc is None:  # no voxel can be this gland: the mask is empty
            s.update(dict.fromkeys(PROBABILITY_KEYS, float("nan")))
        else:
            s.update(probability_structure(gp.probs_zyxc, c, g.mask_zyx[gp.box]))
        s.update(gland_geometry(hu_zyx, g.mask_zyx, spacing_mm_zyx, origin_lps, body))
        s["components_before"] = float(g.components_before)
        s["largest_component_fraction"] = float(g.largest_component_fraction)
        if members is not None and consensus is not None:
            s.update(member_disagreement([lab == c for lab in members.member_labels], consensus == c))
        else:
            s.update(member_disagreement([], np.zeros((1, 1, 1), dtype=bool)))
        out[name] = s
    for left, right in pairs:
        if left in out and right in out:
            vl, vr = out[left]["volume_cc"], out[right]["volume_cc"]
            ratio = math.log(vl / vr) if vl > 0 and vr > 0 else float("nan")
            out[left]["log_lr_ratio"] = ratio
            out[right]["log_lr_ratio"] = -ratio if math.isfinite(ratio) else ratio
    return out
