"""Per-gland metrics and cohort summaries of an evaluation against reference contours (and a plan dose).

Shared by ``training.evaluate`` and ``parotid-seg evaluate`` so both report the same quantities, defined in
``service.pipeline.metrics`` (overlap, both HD95 definitions, surface Dice) and
``service.pipeline.metrics_regional`` (thirds, anterior border, dose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SIZE_BANDS_CC = (("< 20 cc", 0.0, 20.0), ("20-35 cc", 20.0, 35.0), (">= 35 cc", 35.0, math.inf))
SURFACE_TOLERANCES_MM = (2.0, 3.0)
ANTERIOR_FLAG_MM = 8.0
DOSE_FLAG_GY = 2.0
HD95_DEFINITION = (
    "hd95_mm: max of the two directed 95th percentiles of surface distances (as MONAI); hd95_pooled_mm: 95th "
    "percentile of both directions pooled (as medpy, plastimatch)"
)
# per-gland columns, in CSV order (dose columns only where a dose is available)
ROW_FIELDS = (
    "dice",
    "iou",
    "hd95_mm",
    "hd95_pooled_mm",
    "msd_mm",
    "surface_dice_2mm",
    "surface_dice_3mm",
    "pred_cc",
    "ref_cc",
    "volume_diff_cc",
    "volume_error_pct",
    "missed_medial",
    "missed_middle",
    "missed_lateral",
    "anterior_shortfall_mm",
)
DOSE_FIELDS = ("mean_dose_pred_gy", "mean_dose_ref_gy", "mean_dose_diff_gy", "d50_pred_gy", "d50_ref_gy", "d50_diff_gy")


def gland_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing_mm_zyx: Sequence[float], gland: str, dose: np.ndarray | None = None
) -> dict[str, float]:
    """Every per-gland metric of an automatic contour against its reference (both on the same grid)."""
    from service.pipeline import metrics as M
    from service.pipeline import metrics_regional as R

    pred_cc, ref_cc = M.volume_cc(pred, spacing_mm_zyx), M.volume_cc(ref, spacing_mm_zyx)
    row = {"dice": M.dice(pred, ref), "iou": M.iou(pred, ref)}
    row.update(M.surface_report_mm(pred, ref, spacing_mm_zyx, SURFACE_TOLERANCES_MM))
    row.update(
        pred_cc=pred_cc,
        ref_cc=ref_cc,
        volume_diff_cc=pred_cc - ref_cc,
        volume_error_pct=100.0 * (pred_cc - ref_cc) / ref_cc if ref_cc > 0 else math.nan,
    )
    row.update({f"missed_{k}": v for k, v in R.missed_by_third(pred, ref, gland).items()})
    row["anterior_shortfall_mm"] = R.anterior_shortfall_mm(pred, ref, spacing_mm_zyx)
    if dose is not None:
        mp, dp = R.dose_in_mask(dose, pred)
        mr, dr = R.dose_in_mask(dose, ref)
        row.update(mean_dose_pred_gy=mp, mean_dose_ref_gy=mr, mean_dose_diff_gy=mp - mr, d50_pred_gy=dp, d50_ref_gy=dr)
        row["d50_diff_gy"] = dp - dr
    return row


def _num(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows if key in r], dtype=float)


def _median(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def _stats(v: np.ndarray) -> dict:
    f = v[np.isfinite(v)]
    if not f.size:
        return {"n": 0}
    return {"n": int(f.size), "median": float(np.median(f)), "mean": float(f.mean()), "min": float(f.min()),
            "max": float(f.max())}  # fmt: skip


def gland_extras(rows: list[dict]) -> dict:
    """Additions to one gland's summary: medians of both HD95s, surface Dice and the mean-dose difference."""
    out = {
        "hd95_pooled_mm_median": _median(_num(rows, "hd95_pooled_mm")),
        "surface_dice_2mm_median": _median(_num(rows, "surface_dice_2mm")),
        "surface_dice_3mm_median": _median(_num(rows, "surface_dice_3mm")),
        "volume_error_pct_median": _median(_num(rows, "volume_error_pct")),
        "anterior_shortfall_mm_median": _median(_num(rows, "anterior_shortfall_mm")),
    }
    diff = _num(rows, "mean_dose_diff_gy")
    if diff.size:
        out["mean_dose_abs_diff_gy_median"] = _median(np.abs(diff))
    return out


def cohort_summary(rows: list[dict]) -> dict:
    """Both glands pooled (only glands with a reference): size bias, regional misses, anterior border, dose."""
    from scipy import stats

    rows = [r for r in rows if r.get("reference_present", True) and r.get("ref_cc", 0) > 0]
    ref, pred, err = _num(rows, "ref_cc"), _num(rows, "pred_cc"), _num(rows, "volume_error_pct")
    out: dict = {"n_glands": len(rows), "hd95_definition": HD95_DEFINITION}
    bands = {}
    for name, lo, hi in SIZE_BANDS_CC:
        sel = (ref >= lo) & (ref < hi)
        bands[name] = _stats(err[sel])
    out["volume_error_pct_by_reference_size"] = bands
    if len(rows) >= 3 and np.ptp(ref) > 0 and np.ptp(err) > 0:
        res = stats.spearmanr(ref, err)
        out["spearman_ref_volume_vs_volume_error"] = {
            "rho": float(res.statistic),
            "p": float(res.pvalue),
            "n": len(rows),
        }
    else:
        out["spearman_ref_volume_vs_volume_error"] = {"rho": None, "p": None, "n": len(rows)}
    out["volume_sd_cc"] = {
        "pred": float(np.std(pred, ddof=1)) if len(rows) > 1 else None,
        "ref": float(np.std(ref, ddof=1)) if len(rows) > 1 else None,
    }
    out["missed_fraction_by_third"] = {t: _stats(_num(rows, f"missed_{t}")) for t in ("medial", "middle", "lateral")}
    ant = _num(rows, "anterior_shortfall_mm")
    out["anterior_shortfall_mm"] = {
        **_stats(ant),
        f"n_at_least_{ANTERIOR_FLAG_MM:g}mm": int(np.count_nonzero(ant[np.isfinite(ant)] >= ANTERIOR_FLAG_MM)),
    }
    diff = _num(rows, "mean_dose_diff_gy")
    if diff.size:
        absd = np.abs(diff)
        out["mean_dose"] = {
            "abs_diff_gy": _stats(absd),
            f"n_over_{DOSE_FLAG_GY:g}gy": int(np.count_nonzero(absd[np.isfinite(absd)] > DOSE_FLAG_GY)),
            "ref_mean_dose_gy": _stats(_num(rows, "mean_dose_ref_gy")),
            "d50_abs_diff_gy": _stats(np.abs(_num(rows, "d50_diff_gy"))),
        }
    return out
