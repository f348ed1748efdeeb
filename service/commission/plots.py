"""PNG figures of the commissioning report: Bland-Altman plots and per-patient overlays (matplotlib object API with
the Agg canvas, no pyplot state)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from service.pipeline.volume import Volume

GLAND_COLORS = {"Parotid_L": "tab:blue", "Parotid_R": "tab:orange"}
WINDOW_HU = (-160.0, 240.0)  # soft-tissue window (level 40, width 400)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def bland_altman_png(rows: list[dict], auto_key: str, ref_key: str, quantity: str, unit: str) -> bytes | None:
    """Difference (automatic - reference) against the mean of both, per gland, with the mean difference and the
    95 % limits of agreement (mean +- 1.96 SD) of all glands; None when no row has both values."""
    pts = [(r["gland"], r[auto_key], r[ref_key]) for r in rows if np.isfinite(r.get(auto_key, np.nan))]
    pts = [p for p in pts if np.isfinite(p[2])]
    if not pts:
        return None
    fig = Figure(figsize=(6.4, 4.2), constrained_layout=True)
    ax = fig.add_subplot()
    for gland, color in GLAND_COLORS.items():
        a = np.array([p[1] for p in pts if p[0] == gland], dtype=float)
        r = np.array([p[2] for p in pts if p[0] == gland], dtype=float)
        if a.size:
            ax.scatter((a + r) / 2, a - r, s=20, color=color, label=gland, alpha=0.85)
    diff = np.array([p[1] - p[2] for p in pts], dtype=float)
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    ax.axhline(mean, color="k", lw=1, label=f"mean {mean:+.2f} {unit}")
    for s in (-1.96, 1.96):
        ax.axhline(mean + s * sd, color="k", lw=1, ls="--")
    ax.set_title(f"Bland-Altman: {quantity} (limits of agreement {mean - 1.96 * sd:+.2f} / {mean + 1.96 * sd:+.2f})")
    ax.set_xlabel(f"mean of automatic and reference ({unit})")
    ax.set_ylabel(f"automatic - reference ({unit})")
    ax.legend(fontsize=8)
    return _png(fig)


def worst_slice(auto: np.ndarray, ref: np.ndarray) -> int:
    """The axial slice (canonical z index) where automatic and reference contours disagree on the most voxels."""
    disagree = np.logical_xor(auto, ref).sum(axis=(1, 2))
    if not disagree.any():
        return int(np.argmax(ref.sum(axis=(1, 2))))
    return int(np.argmax(disagree))


def overlay_png(ct: Volume, auto: np.ndarray, ref: np.ndarray, title: str) -> tuple[bytes, int]:
    """The CT slice where ``auto`` and ``ref`` differ most, cropped around both, reference in green and automatic
    in red (radiological display: patient's right on the image's left, anterior up); returns (PNG, z index)."""
    k = worst_slice(auto, ref)
    both = auto[k] | ref[k]
    ys, xs = np.nonzero(both) if both.any() else np.nonzero(np.ones_like(both))
    pad = 12
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, both.shape[0])
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, both.shape[1])
    _, sy, sx = ct.spacing_mm_zyx
    fig = Figure(figsize=(4.2, 4.2), constrained_layout=True)
    ax = fig.add_subplot()
    img = ct.array_zyx[k, y0:y1, x0:x1]
    ax.imshow(img, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=sy / sx, interpolation="nearest")
    for mask, color in ((ref, "lime"), (auto, "red")):
        m = mask[k, y0:y1, x0:x1]
        if m.any() and not m.all():
            ax.contour(m.astype(float), levels=[0.5], colors=color, linewidths=1.5)
    z_mm = ct.origin_lps[2] + k * ct.spacing_mm_zyx[0]
    ax.set_title(f"{title}\nslice {k} (z {z_mm:.1f} mm): reference green, automatic red", fontsize=8)
    ax.set_axis_off()
    return _png(fig), k
