"""Stage 7: one preview PNG so a physicist can judge the contours at a glance.

One row per non-empty gland: axial, coronal and sagittal slices through that gland's centroid, with every gland's
outline drawn over a soft-tissue window (W 400 / L 40 HU). Display conventions:

- radiological: axial and coronal show the patient's right on the viewer's left; sagittal shows anterior on the
  left; superior is up in coronal and sagittal. Every panel is labelled with R/L, A/P, S/I markers;
- true aspect ratio: images are placed on axes in mm (LPS coordinates, ticks in mm) with equal aspect;
- outlines follow voxel edges (the mask is upsampled nearest-neighbour before contouring at 0.5);
- the legend gives each gland's name, colour and volume; an empty gland is listed as EMPTY; names and colours are
  the structure template's (:mod:`service.pipeline.structures`), the same as in the RTSTRUCT.

Uses matplotlib's object API with the Agg canvas (no pyplot global state, safe in worker threads). The PNG is
written to a temporary name in the target directory and renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import ndimage

from service.fileio import atomic_write
from service.pipeline.metrics import volume_cc
from service.pipeline.postprocess import bounding_box, mask_indices
from service.pipeline.structures import StructureTemplate, hex_color
from service.pipeline.volume import Volume

WINDOW_HU = (40.0 - 200.0, 40.0 + 200.0)  # W 400 / L 40
_UPSAMPLE = 4
_MARGIN_MM = 15.0
_Z_MARGIN_MM = 40.0


def _crop_box(ct: Volume, masks: dict[str, np.ndarray]) -> tuple[slice, slice, slice]:
    """Index box (z, y, x): the glands plus margins, widened in-plane to the body (HU > -500) on the gland slices."""
    shape = ct.shape_zyx
    sz, sy, sx = ct.spacing_mm_zyx
    union = np.zeros(shape, dtype=bool)
    for m in masks.values():
        union |= m
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2])
    k, j, i = (np.flatnonzero(union.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    lo = [k[0], j[0], i[0]]
    hi = [k[-1], j[-1], i[-1]]
    body = (np.asarray(ct.array_zyx[k[0] : k[-1] + 1]) > -500.0).any(axis=0)
    labelled, n = ndimage.label(body)
    if n:
        largest = labelled == int(np.argmax(np.bincount(labelled.ravel())[1:])) + 1
        bj, bi = np.flatnonzero(largest.any(axis=1)), np.flatnonzero(largest.any(axis=0))
        lo[1], hi[1] = min(lo[1], bj[0]), max(hi[1], bj[-1])
        lo[2], hi[2] = min(lo[2], bi[0]), max(hi[2], bi[-1])
    margins = (round(_Z_MARGIN_MM / sz), round(_MARGIN_MM / sy), round(_MARGIN_MM / sx))
    return tuple(  # type: ignore[return-value]
        slice(max(int(a) - m, 0), min(int(b) + 1 + m, s)) for a, b, m, s in zip(lo, hi, margins, shape, strict=True)
    )


def _edges_mm(origin: float, spacing: float, sl: slice) -> tuple[float, float]:
    """Outer voxel-edge coordinates (mm) of the index range ``sl``."""
    return origin + (sl.start - 0.5) * spacing, origin + (sl.stop - 0.5) * spacing


def _centres_up(origin: float, spacing: float, sl: slice) -> np.ndarray:
    """Centres of the nearest-upsampled sub-pixels of the index range ``sl``."""
    n = (sl.stop - sl.start) * _UPSAMPLE
    return origin + (sl.start - 0.5) * spacing + (np.arange(n) + 0.5) * spacing / _UPSAMPLE


def _label(ax: Axes, left: str, right: str, top: str, bottom: str) -> None:
    style: dict[str, Any] = {
        "color": "yellow",
        "fontsize": 11,
        "fontweight": "bold",
        "transform": ax.transAxes,
        "bbox": {"facecolor": "black", "alpha": 0.6, "pad": 1.5, "edgecolor": "none"},
    }
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def _panel(
    ax: Axes,
    image: np.ndarray,
    h_range: tuple[float, float],
    v_range: tuple[float, float],
    h_up: np.ndarray,
    v_up: np.ndarray,
    outlines: list[tuple[np.ndarray, str]],
    v_down: bool,
) -> None:
    """Draw ``image`` (rows = vertical axis) and outlines; ``v_down``: row 0 at the top (axial), else bottom."""
    v_lo, v_hi = v_range
    extent = (h_range[0], h_range[1], v_hi, v_lo) if v_down else (h_range[0], h_range[1], v_lo, v_hi)
    ax.imshow(
        image,
        cmap="gray",
        vmin=WINDOW_HU[0],
        vmax=WINDOW_HU[1],
        extent=extent,
        origin="upper" if v_down else "lower",
        interpolation="nearest",
        aspect="equal",
    )
    for mask2d, color in outlines:
        # contour only around the outline (1 voxel of margin): the same lines, far less work
        box = bounding_box(mask2d)
        if box is not None:
            rows, cols = box
            up = np.repeat(np.repeat(mask2d[box].astype(np.float32), _UPSAMPLE, axis=0), _UPSAMPLE, axis=1)
            h = h_up[cols.start * _UPSAMPLE : cols.stop * _UPSAMPLE]
            v = v_up[rows.start * _UPSAMPLE : rows.stop * _UPSAMPLE]
            ax.contour(h, v, up, levels=[0.5], colors=[color], linewidths=1.3)
    ax.set_xlim(h_range)
    ax.set_ylim((v_hi, v_lo) if v_down else (v_lo, v_hi))
    ax.tick_params(labelsize=7)


def _draw_row(
    axes: list[Axes],
    ct: Volume,
    masks: dict[str, np.ndarray],
    colors: dict[str, str],
    centre_kji: tuple[int, int, int],
    box: tuple[slice, slice, slice],
    row_name: str,
) -> None:
    ck, cj, ci = centre_kji
    bz, by, bx = box
    sz, sy, sx = ct.spacing_mm_zyx
    ox, oy, oz = ct.origin_lps
    hu = np.asarray(ct.array_zyx)
    x_rng, y_rng, z_rng = _edges_mm(ox, sx, bx), _edges_mm(oy, sy, by), _edges_mm(oz, sz, bz)
    x_up, y_up, z_up = _centres_up(ox, sx, bx), _centres_up(oy, sy, by), _centres_up(oz, sz, bz)
    x_c, y_c, z_c = ox + ci * sx, oy + cj * sy, oz + ck * sz

    ax = axes[0]
    _panel(
        ax,
        hu[ck, by, bx],
        x_rng,
        y_rng,
        x_up,
        y_up,
        [(m[ck, by, bx], colors[n]) for n, m in masks.items()],
        v_down=True,
    )
    _label(ax, "R", "L", "A", "P")
    ax.set_title(f"{row_name}: axial z = {z_c:.1f} mm", fontsize=9)
    ax.set_xlabel("x (mm)", fontsize=7)
    ax.set_ylabel("y (mm)", fontsize=7)

    ax = axes[1]
    _panel(
        ax,
        hu[bz, cj, bx],
        x_rng,
        z_rng,
        x_up,
        z_up,
        [(m[bz, cj, bx], colors[n]) for n, m in masks.items()],
        v_down=False,
    )
    _label(ax, "R", "L", "S", "I")
    ax.set_title(f"coronal y = {y_c:.1f} mm", fontsize=9)
    ax.set_xlabel("x (mm)", fontsize=7)
    ax.set_ylabel("z (mm)", fontsize=7)

    ax = axes[2]
    _panel(
        ax,
        hu[bz, by, ci],
        y_rng,
        z_rng,
        y_up,
        z_up,
        [(m[bz, by, ci], colors[n]) for n, m in masks.items()],
        v_down=False,
    )
    _label(ax, "A", "P", "S", "I")
    ax.set_title(f"sagittal x = {x_c:.1f} mm", fontsize=9)
    ax.set_xlabel("y (mm)", fontsize=7)
    ax.set_ylabel("z (mm)", fontsize=7)


UNCERTAIN_LEVEL = 0.5
UNCERTAIN_COLOUR = "yellow"


def write_preview(
    ct: Volume,
    masks: dict[str, np.ndarray],
    path: Path,
    *,
    title: str = "",
    colors: Mapping[str, Sequence[int]] | None = None,
    uncertain_band_zyx: np.ndarray | None = None,
) -> None:
    """Write the preview PNG of ``masks`` (ROI name -> bool mask on the CT grid) over ``ct`` (HU) to ``path``.

    ``title`` should name the model, its version and the QA status (``QAReport.summary_line()``). ``colors``
    (ROI name -> RGB 0-255) are the structure template's, the same as the RTSTRUCT's (3006,002A) ROI Display
    Color; names without one get the template's defaults. ``uncertain_band_zyx`` (boolean, on the CT grid: where
    the QA's uncertainty map is at least ``UNCERTAIN_LEVEL``) is outlined in yellow: where the reviewer should
    look first.
    """
    path = Path(path)
    masks = {n: np.asarray(m, dtype=bool) for n, m in masks.items()}
    for name, m in masks.items():
        if m.shape != ct.shape_zyx:
            raise ValueError(f"{name}: mask shape {m.shape} != CT grid {ct.shape_zyx}")
    given = {n: (int(c[0]), int(c[1]), int(c[2])) for n, c in (colors or {}).items()}
    rgb = StructureTemplate(colors=given).colors_for(list(masks))
    hex_colors = {n: hex_color(c) for n, c in rgb.items()}
    box = _crop_box(ct, masks)
    rows: list[tuple[str, tuple[int, int, int]]] = []
    for name, m in masks.items():
        if m.any():
            c = np.rint(mask_indices(m).mean(axis=0)).astype(int)
            rows.append((f"{name} centroid", (int(c[0]), int(c[1]), int(c[2]))))
    if not rows:
        rows.append(("grid centre (no gland)", tuple(s // 2 for s in ct.shape_zyx)))  # type: ignore[arg-type]

    # a fixed layout (margins in inches): a layout engine would draw the whole figure twice to measure it
    height = 4.6 * len(rows) + 1.0
    fig = Figure(figsize=(13.5, height), dpi=100, facecolor="white")
    FigureCanvasAgg(fig)
    grid = {"left": 0.05, "right": 0.99, "bottom": 0.45 / height, "top": 1.0 - 1.0 / height, "wspace": 0.25}
    axes = fig.subplots(len(rows), 3, squeeze=False, gridspec_kw={**grid, "hspace": 0.7 / 4.6})
    drawn, drawn_colours = dict(masks), dict(hex_colors)
    band = None
    if uncertain_band_zyx is not None and uncertain_band_zyx.shape == ct.shape_zyx:
        band = np.asarray(uncertain_band_zyx, dtype=bool)
        drawn["uncertain band"], drawn_colours["uncertain band"] = band, UNCERTAIN_COLOUR
    for (row_name, centre), row_axes in zip(rows, axes, strict=True):
        _draw_row(list(row_axes), ct, drawn, drawn_colours, centre, box, row_name)

    handles = []
    for name, m in masks.items():
        label = f"{name}: {volume_cc(m, ct.spacing_mm_zyx):.1f} cc" if m.any() else f"{name}: EMPTY (no contour)"
        handles.append(Line2D([], [], color=hex_colors[name], linewidth=2.5, label=label))
    if band is not None:
        handles.append(
            Line2D([], [], color=UNCERTAIN_COLOUR, linewidth=2.5, label=f"uncertainty >= {UNCERTAIN_LEVEL:g} (QA)")
        )
    if handles:
        fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.99, 1.0), fontsize=10, frameon=True)
    heading = title or "automatic parotid contours"
    fig.suptitle(
        f"{heading}\nsoft-tissue window W400/L40 · radiological view · research use, review every contour",
        fontsize=11,
        x=0.01,
        y=1.0 - 0.08 / height,
        ha="left",
        va="top",
    )

    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
