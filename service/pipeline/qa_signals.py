"""QA signals: small pure functions, each computing one family of per-gland measurements from arrays.

Used by the QA report (``service.pipeline.qa``) at serving time and by ``training.calibrate_qa`` on validation
patients, so that the quality model is fitted on exactly the numbers the service computes. Families:

- **probability structure** (``probability_structure``): entropy and margin in a band around the mask boundary,
  the fraction of uncertain voxels, probability mass outside the kept component;
- **perturbation disagreement** (``member_disagreement``): Dice and volume spread between the predictions of the
  test-time perturbation members (``service.pipeline.qa_perturb``);
- **plausibility** (``body_landmarks``, ``gland_geometry``): volume, superior-inferior extent, centroid relative
  to the body, HU inside the gland; compared with the training population in ``qa_calibration``;
- **input sanity** (``blanked_slices``, ``soft_tissue_peak_hu``, ``body_cut_by_fov``).

All arrays are canonical ``(z, y, x)`` (index increases along +LPS), spacings in mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from service.pipeline.postprocess import bounding_box

if TYPE_CHECKING:
    from service.pipeline.gland_boxes import BoxedMap

UNCERTAIN_LOW = 0.2  # gland probability above which a voxel counts as uncertain (below UNCERTAIN_HIGH)
UNCERTAIN_HIGH = 0.8
PROBABILITY_KEYS = ("band_entropy", "band_margin", "uncertain_fraction", "outside_mass_fraction", "mean_probability")
_STRUCT_6 = ndimage.generate_binary_structure(3, 1)
_EPS = 1e-6


def band_in_box(mask_zyx: np.ndarray, width_vox: int = 2) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """``boundary_band`` inside the mask's bounding box grown by ``width_vox``: ``(box, band in the box)``; None
    for an empty mask. The band never reaches outside that box, so this is the whole band, computed on the box."""
    mask = np.asarray(mask_zyx, dtype=bool)
    box = bounding_box(mask, margin=width_vox)
    if box is None:
        return None
    sub = mask[box]
    grown = ndimage.binary_dilation(sub, _STRUCT_6, iterations=width_vox)
    shrunk = ndimage.binary_erosion(sub, _STRUCT_6, iterations=width_vox, border_value=0)
    return box, grown & ~shrunk


def boundary_band(mask_zyx: np.ndarray, width_vox: int = 2) -> np.ndarray:
    """Voxels within ``width_vox`` (6-connected steps) of the mask boundary, inside or outside."""
    mask = np.asarray(mask_zyx, dtype=bool)
    out = np.zeros_like(mask)
    found = band_in_box(mask, width_vox)
    if found is not None:
        out[found[0]] = found[1]
    return out


def normalized_entropy(probs_zyxc: np.ndarray) -> np.ndarray:
    """Per-voxel Shannon entropy of the class probabilities divided by log(C): 0 = certain, 1 = uniform."""
    p = np.clip(np.asarray(probs_zyxc, dtype=np.float32), _EPS, 1.0)
    return (-(p * np.log(p)).sum(axis=-1) / math.log(p.shape[-1])).astype(np.float32)


def probability_structure(
    probs_zyxc: np.ndarray,
    channel: int,
    mask_zyx: np.ndarray,
    band_vox: int = 2,
    low: float = UNCERTAIN_LOW,
    high: float = UNCERTAIN_HIGH,
) -> dict[str, float]:
    """Probability-structure signals of gland ``channel`` with final mask ``mask_zyx`` (same grid).

    - ``band_entropy``: mean normalised entropy in the boundary band (``boundary_band``);
    - ``band_margin``: mean ``|p_gland - max(p_other)|`` in the band (1 = sharp boundary);
    - ``uncertain_fraction``: voxels with ``low < p_gland < high`` over the mask's voxel count;
    - ``outside_mass_fraction``: gland probability mass outside the final mask (p > 0.5 only, so the boundary's
      soft tail does not count) over the mass inside it: a second blob the clean-up threw away, or a spread-out
      prediction;
    - ``mean_probability``: mean gland probability inside the mask.
    Empty mask: every value NaN except ``uncertain_fraction`` and ``outside_mass_fraction`` (NaN too).

    The arrays may be any box of the CT grid that holds every voxel with ``p_gland > low`` and the mask grown by
    ``band_vox`` (``gland_boxes.gland_probabilities(min_threshold=UNCERTAIN_LOW)``): the values are then those
    of the whole grid.
    """
    mask = np.asarray(mask_zyx, dtype=bool)
    nan = float("nan")
    found = band_in_box(mask, band_vox)
    if found is None:
        return dict.fromkeys(PROBABILITY_KEYS, nan)
    p = np.asarray(probs_zyxc[..., channel], dtype=np.float32)
    box, band = found
    near = np.asarray(probs_zyxc[box], dtype=np.float32)[band]  # (voxels in the band, C)
    others = np.delete(near, channel, axis=-1).max(axis=-1)
    inside_mass = float(p[mask].sum(dtype=np.float64))
    outside = (~mask) & (p > 0.5)
    return {
        "band_entropy": float(normalized_entropy(near).mean(dtype=np.float64)),
        "band_margin": float(np.abs(near[:, channel] - others).mean(dtype=np.float64)),
        "uncertain_fraction": float(((p > low) & (p < high)).sum() / mask.sum()),
        "outside_mass_fraction": float(p[outside].sum(dtype=np.float64) / max(inside_mass, _EPS)),
        "mean_probability": float(p[mask].mean(dtype=np.float64)),
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def member_disagreement(member_masks: Sequence[np.ndarray], consensus_mask: np.ndarray) -> dict[str, float]:
    """Spread between test-time perturbation members' masks of one gland (same grid as ``consensus_mask``).

    - ``member_dice_mean`` / ``member_dice_min``: Dice of each member's mask with the consensus (the mask of the
      averaged probabilities); an empty-vs-empty member counts as 1;
    - ``member_volume_cv``: SD / mean of the member volumes (voxel counts);
    - ``n_members``. With fewer than two members every spread value is NaN.
    """
    cons = np.asarray(consensus_mask, dtype=bool)
    n = len(member_masks)
    if n < 2:
        nan = float("nan")
        return {"member_dice_mean": nan, "member_dice_min": nan, "member_volume_cv": nan, "n_members": float(n)}
    dices = []
    for m in member_masks:
        d = _dice(np.asarray(m, dtype=bool), cons)
        dices.append(1.0 if math.isnan(d) else d)
    vols = np.array([int(np.count_nonzero(m)) for m in member_masks], dtype=np.float64)
    cv = float(vols.std() / vols.mean()) if vols.mean() > 0 else 0.0
    return {
        "member_dice_mean": float(np.mean(dices)),
        "member_dice_min": float(np.min(dices)),
        "member_volume_cv": cv,
        "n_members": float(n),
    }


def member_disagreement_map(member_labels: Sequence[np.ndarray]) -> np.ndarray:
    """Per-voxel disagreement of the members' label maps: ``1 - (votes for the most voted label) / members``,
    scaled so that an even split between two labels is 1 (for two labels: ``2 * min(f, 1 - f)``)."""
    stack = np.stack([np.asarray(m) for m in member_labels])
    n = stack.shape[0]
    if n < 2:
        return np.zeros(stack.shape[1:], dtype=np.float32)
    top = np.zeros(stack.shape[1:], dtype=np.int32)
    for lab in np.unique(stack):
        top = np.maximum(top, (stack == lab).sum(axis=0))
    return (2.0 * (1.0 - top / n)).clip(0.0, 1.0).astype(np.float32)


def uncertain_slices(
    uncertainty: BoxedMap, mask_zyx: np.ndarray, top: int = 3, band_vox: int = 2
) -> list[tuple[int, float]]:
    """The axial slices (canonical z index) where the uncertainty near the gland is largest, with the summed
    uncertainty in the gland's boundary band (and inside the gland) on that slice; at most ``top``, largest first,
    zero sums left out. ``uncertainty``: the map on the mask's grid (``gland_boxes.BoxedMap``)."""
    mask = np.asarray(mask_zyx, dtype=bool)
    found = band_in_box(mask, band_vox)
    if found is None:
        return []
    box, band = found
    band |= mask[box]
    per_slice = np.where(band, uncertainty.crop(box), 0.0).sum(axis=(1, 2))
    order = np.argsort(-per_slice, kind="stable")[:top]
    z0 = box[0].start
    return [(int(k) + z0, float(per_slice[k])) for k in order if per_slice[k] > 0]


@dataclass(frozen=True)
class BodyLandmarks:
    """The body (HU > threshold, largest 26-connected component) in a slab of axial slices."""

    midline_x_mm: float  # median LPS x of the body voxels
    centre_y_mm: float  # median LPS y
    width_x_mm: float  # median over slices of the body's left-right extent
    depth_y_mm: float  # median over slices of the body's anterior-posterior extent


def body_landmarks(
    hu_zyx: np.ndarray,
    spacing_mm_zyx: Sequence[float],
    origin_lps: Sequence[float],
    z_range: tuple[int, int],
    threshold_hu: float = -500.0,
) -> BodyLandmarks | None:
    """Body landmarks in axial slices ``z_range`` (inclusive); None if no body voxel there."""
    slab = np.asarray(hu_zyx[z_range[0] : z_range[1] + 1]) > threshold_hu
    labelled, n = ndimage.label(slab, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return None
    body = labelled == int(np.argmax(np.bincount(labelled[labelled > 0])[1:])) + 1
    _, jj, ii = np.nonzero(body)
    widths, depths = [], []
    for sl in body:
        xs = np.flatnonzero(sl.any(axis=0))
        ys = np.flatnonzero(sl.any(axis=1))
        if xs.size:
            widths.append((xs[-1] - xs[0] + 1) * spacing_mm_zyx[2])
            depths.append((ys[-1] - ys[0] + 1) * spacing_mm_zyx[1])
    return BodyLandmarks(
        midline_x_mm=float(origin_lps[0] + np.median(ii) * spacing_mm_zyx[2]),
        centre_y_mm=float(origin_lps[1] + np.median(jj) * spacing_mm_zyx[1]),
        width_x_mm=float(np.median(widths)),
        depth_y_mm=float(np.median(depths)),
    )


def gland_geometry(
    hu_zyx: np.ndarray,
    mask_zyx: np.ndarray,
    spacing_mm_zyx: Sequence[float],
    origin_lps: Sequence[float],
    body: BodyLandmarks | None,
) -> dict[str, float]:
    """Plausibility measurements of one gland: ``volume_cc``, ``si_extent_mm``, ``mean_hu``, ``sd_hu`` (HU
    inside the mask eroded by one voxel where that leaves anything, to keep partial-volume edges out), and with
    body landmarks ``centroid_x_rel`` (|x - midline| / body width: 0 at the midline, ~0.5 at the skin) and
    ``centroid_y_rel`` ((y - body centre y) / body depth, + = posterior). NaN where not computable."""
    mask = np.asarray(mask_zyx, dtype=bool)
    nan = float("nan")
    out = dict.fromkeys(
        ("volume_cc", "si_extent_mm", "mean_hu", "sd_hu", "centroid_x_rel", "centroid_y_rel", "head_width_mm"), nan
    )
    out["volume_cc"] = float(mask.sum()) * math.prod(spacing_mm_zyx) / 1000.0
    if not mask.any():
        return out
    box = bounding_box(mask, margin=1)  # the erosion and the centroid only need the mask's box
    assert box is not None
    sub = mask[box]
    lo = np.array([sl.start for sl in box], dtype=np.float64)
    ks = np.flatnonzero(sub.any(axis=(1, 2)))
    out["si_extent_mm"] = float((ks[-1] - ks[0] + 1) * spacing_mm_zyx[0])
    core = ndimage.binary_erosion(sub, _STRUCT_6, border_value=0)
    vals = np.asarray(hu_zyx[box], dtype=np.float64)[core if core.sum() >= 10 else sub]
    out["mean_hu"], out["sd_hu"] = float(vals.mean()), float(vals.std())
    if body is not None:
        kji = np.argwhere(sub).mean(axis=0) + lo
        cx = origin_lps[0] + kji[2] * spacing_mm_zyx[2]
        cy = origin_lps[1] + kji[1] * spacing_mm_zyx[1]
        out["centroid_x_rel"] = float(abs(cx - body.midline_x_mm) / max(body.width_x_mm, _EPS))
        out["centroid_y_rel"] = float((cy - body.centre_y_mm) / max(body.depth_y_mm, _EPS))
        out["head_width_mm"] = float(body.width_x_mm)
    return out


def blanked_slices(
    hu_zyx: np.ndarray,
    spacing_mm_zyx: Sequence[float],
    *,
    body_threshold_hu: float = -500.0,
    blank_hu: float = -995.0,
    min_fraction: float = 0.25,
    min_body_area_mm2: float = 2000.0,
) -> list[tuple[int, float]]:
    """Axial slices whose body outline encloses a large region at (or below) air HU: ``(z index, fraction)``.

    Per slice: the body (HU > ``body_threshold_hu``) with its holes filled; ``fraction`` is the part of it at
    ``<= blank_hu``. Real air inside the head (airway, sinuses) is a few per cent of the cross-section and never
    flat at -1000; OpenKBP has slices set to -1000 inside the skin outline (e.g. 80 % of the cross-section). Slices
    whose filled body is smaller than ``min_body_area_mm2`` are skipped (the skull vertex, the shoulders' edge)."""
    hu = np.asarray(hu_zyx)
    px_mm2 = float(spacing_mm_zyx[1]) * float(spacing_mm_zyx[2])
    out = []
    for k0 in range(0, hu.shape[0], _SLAB):
        slab = hu[k0 : k0 + _SLAB]
        filled = _fill_holes_per_slice(slab > body_threshold_hu)
        areas = filled.sum(axis=(1, 2))
        blank = ((slab <= blank_hu) & filled).sum(axis=(1, 2))
        for i, (area, n_blank) in enumerate(zip(areas.tolist(), blank.tolist(), strict=True)):
            if area * px_mm2 < min_body_area_mm2:
                continue
            frac = float(n_blank / area)
            if frac >= min_fraction:
                out.append((k0 + i, frac))
    return out


_SLAB = 32  # axial slices labelled at once (bounds the int32 label array)
_CROSS_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_CROSS_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _fill_holes_per_slice(mask_zyx: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` of every axial slice (4-connected background), for a stack at once: one
    labelling of the background with no connection between slices; what does not reach the slice border is a
    hole. Same result as the per-slice calls (tested), a fraction of their time on a 512 x 512 stack."""
    background, n = ndimage.label(~mask_zyx, structure=_CROSS_IN_PLANE)
    on_border = np.zeros(n + 1, dtype=bool)
    for edge in (background[:, 0, :], background[:, -1, :], background[:, :, 0], background[:, :, -1]):
        on_border[edge] = True
    on_border[0] = True  # label 0 = the mask itself
    return mask_zyx | ~on_border[background]


def soft_tissue_peak_hu(hu_zyx: np.ndarray, body_threshold_hu: float = -500.0) -> float | None:
    """The mode of the body's HU histogram in [-200, 200] HU (1 HU bins, lightly smoothed): soft tissue and
    muscle sit at about 20-60 HU on a calibrated scanner. None if the body has no voxel in that range."""
    vals = np.asarray(hu_zyx)
    vals = vals[(vals > body_threshold_hu) & (vals >= -200) & (vals <= 200)]
    if vals.size < 100:
        return None
    hist, edges = np.histogram(vals, bins=400, range=(-200, 200))
    smooth = np.convolve(hist, np.ones(9) / 9.0, mode="same")
    return float(edges[int(np.argmax(smooth))] + 0.5)


def darkest_percentile_hu(hu_zyx: np.ndarray, percentile: float = 1.0) -> float:
    """The ``percentile``-th percentile of the HU values (of every 4th row and column of every slice: a sixteenth
    of the voxels is plenty for a percentile and takes a sixteenth of the time): air (about -1000) or padding
    below it on a calibrated CT; near 0 when the rescale intercept was not applied (stored values instead of HU)."""
    return float(np.percentile(np.asarray(hu_zyx)[:, ::4, ::4], percentile))


def body_cut_by_fov(hu_zyx: np.ndarray, z_range: tuple[int, int], body_threshold_hu: float = -500.0) -> list[str]:
    """Sides (``right``/``left``/``anterior``) where the body touches the in-plane edge of the
    field of view on the slices ``z_range``: the reconstruction circle cut the patient there."""
    slab = np.asarray(hu_zyx[z_range[0] : z_range[1] + 1]) > body_threshold_hu
    if not slab.any():
        return []
    sides = []
    # a few touching pixels are a mask or a head rest; a tenth of the edge's length is a cut patient. The
    # posterior edge is left out: the couch lies there.
    ny, nx = slab.shape[1:]
    for name, edge, length in (
        ("right", slab[:, :, 0], ny),
        ("left", slab[:, :, -1], ny),
        ("anterior", slab[:, 0, :], nx),
    ):
        if edge.sum(axis=1).max() > 0.1 * length:
            sides.append(name)
    return sides
