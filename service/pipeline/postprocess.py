"""Stage 4: turn class probabilities on the CT grid into one clean binary mask per gland.

Steps, per gland channel ``c >= 1`` of ``probs_zyxc``:

1. **argmax** over the channels (ties go to the lower channel, i.e. to background first), the background
   probability first multiplied by the plan's ``background_weight`` (1: plain argmax; below 1 favours the glands);
2. **largest connected component** of the voxels labelled ``c``, with **26-connectivity** (voxels touching by a
   face, an edge or a corner are connected). Reason: CT slices are usually 2-3 mm apart against ~1 mm pixels, so a
   thin or oblique part of a gland (the deep lobe, the duct region) often continues on the next slice only
   diagonally; 6-connectivity would cut it off and throw it away. ``components_before`` is counted with the same
   26-connectivity;
3. **fill holes in 3D** (enclosed background cavities), with the background taken as 6-connected, the
   complementary digital topology of a 26-connected foreground;
4. **fill holes in every axial slice** (2D), with the background taken as 4-connected. This fills every background
   region not 4-connected to the slice border, a superset of the holes under 8-connectivity, so afterwards no
   axial slice has a hole under either definition. The RTSTRUCT writer relies on this: one outer contour per
   in-slice component, no inner contours.

Filling only adds voxels enclosed by the component, so the result is still one 26-connected component.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BACKGROUND = "background"
_STRUCT_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class GlandMask:
    """One cleaned gland on the CT grid (canonical LPS order, same shape as the CT)."""

    name: str
    mask_zyx: np.ndarray  # bool
    components_before: int  # 26-connected components of the argmax label before clean-up
    mean_probability: float  # mean probability of this class inside the final mask; 0.0 if empty
    # fraction of the argmax voxels of this class that lie in the kept (largest) component; 1.0 if none
    largest_component_fraction: float = 1.0

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask_zyx.any())


def bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` voxels and clipped to the array; None if empty.

    The first axis is reduced over the whole array, the others only over the slab it found."""
    idx = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if idx.size == 0:
        return None
    first = slice(int(idx[0]), int(idx[-1]) + 1)
    slab = mask[first]
    spans = [(first.start, first.stop - 1)]
    for axis in range(1, mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(slab.any(axis=others))
        spans.append((int(idx[0]), int(idx[-1])))
    return tuple(
        slice(max(lo - margin, 0), min(hi + 1 + margin, n)) for (lo, hi), n in zip(spans, mask.shape, strict=True)
    )


def mask_indices(mask: np.ndarray) -> np.ndarray:
    """``np.argwhere(mask)`` (same rows, same order), scanning only the mask's bounding box."""
    box = bounding_box(mask, margin=0)
    if box is None:
        return np.empty((0, mask.ndim), dtype=np.intp)
    return np.argwhere(mask[box]) + np.array([s.start for s in box], dtype=np.intp)


def fill_holes_axial(mask_zyx: np.ndarray) -> np.ndarray:
    """Fill the holes of every axial slice (background 4-connected to the slice border is kept)."""
    out = mask_zyx.copy()
    for k in np.flatnonzero(mask_zyx.any(axis=(1, 2))):
        out[k] = ndimage.binary_fill_holes(mask_zyx[k])
    return out


def clean_mask(label_mask_zyx: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Largest 26-connected component, then 3D and per-axial-slice hole filling.

    Returns ``(mask, components_before, largest_component_fraction)``. Works inside the bounding box of the
    input for speed; the returned mask has the input's shape.
    """
    out = np.zeros(label_mask_zyx.shape, dtype=bool)
    box = bounding_box(label_mask_zyx)
    if box is None:
        return out, 0, 1.0
    sub = label_mask_zyx[box]
    labelled, n = ndimage.label(sub, structure=_STRUCT_26)
    sizes = np.bincount(labelled[labelled > 0], minlength=n + 1)[1:]
    keep = int(np.argmax(sizes)) + 1
    largest = labelled == keep
    # fill only around the kept component: stray voxels elsewhere can make ``box`` the whole grid
    inner = bounding_box(largest) or (slice(None),) * largest.ndim
    filled = ndimage.binary_fill_holes(largest[inner])  # 3D cavities, background 6-connected (default structure)
    largest[inner] = fill_holes_axial(filled)
    out[box] = largest
    return out, int(n), float(sizes[keep - 1] / sizes.sum())


def weighted_argmax(probs_zyxc: np.ndarray, background_weight: float = 1.0) -> np.ndarray:
    """Per-voxel label: the most probable gland where its probability beats ``background_weight`` x the
    background's, else 0. With weight 1 this is ``np.argmax`` (ties to the lower channel)."""
    best = np.argmax(probs_zyxc[..., 1:], axis=-1)
    best_p = np.take_along_axis(probs_zyxc[..., 1:], best[..., None], axis=-1)[..., 0]
    return np.where(best_p > background_weight * probs_zyxc[..., 0], best + 1, 0)


def postprocess(probs_zyxc: np.ndarray, labels: Sequence[str], background_weight: float = 1.0) -> dict[str, GlandMask]:
    """Argmax, largest 26-connected component and hole filling for each gland channel.

    ``probs_zyxc`` are class probabilities on the CT grid, channel ``c`` is ``labels[c]`` and ``labels[0]`` must be
    ``"background"``. Returns ``{gland name: GlandMask}`` in label order (background excluded). A gland with no
    voxel after argmax gets an empty mask, ``components_before == 0`` and ``mean_probability == 0.0``.
    """
    labels = list(labels)
    if probs_zyxc.ndim != 4:
        raise ValueError(f"probabilities must be (z, y, x, c), got shape {probs_zyxc.shape}")
    if probs_zyxc.shape[-1] != len(labels):
        raise ValueError(f"{probs_zyxc.shape[-1]} probability channels but {len(labels)} labels {labels}")
    if not labels or labels[0] != BACKGROUND:
        raise ValueError(f"labels[0] must be {BACKGROUND!r}, got {labels}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels {labels}")
    argmax = weighted_argmax(probs_zyxc, background_weight)
    result: dict[str, GlandMask] = {}
    for c, name in enumerate(labels[1:], start=1):
        mask, n_before, fraction = clean_mask(argmax == c)
        mean_prob = float(probs_zyxc[..., c][mask].mean(dtype=np.float64)) if mask.any() else 0.0
        result[name] = GlandMask(name, mask, n_before, mean_prob, fraction)
    return result
