"""The commissioning summary: per-gland medians, strata, the acceptance verdict against tolerances, CSV and JSON.

Tolerances (a JSON object; ``--tolerances FILE`` replaces the defaults key by key; ``null`` switches a criterion
off). Each ``median_*`` criterion is applied to each gland's median over the patients:

- ``min_patients``: at least this many patients evaluated (default 20; see docs/commissioning.md)
- ``max_failed_patients``: at most this many patients the tool could not process (default 0)
- ``median_dice_min`` (0.80), ``median_surface_dice_2mm_min`` (0.80), ``median_hd95_mm_max`` (off)
- ``median_abs_mean_dose_diff_gy_max`` (2.0 Gy): |mean dose to the automatic - to the reference contour|; needs an
  RTDOSE per patient, otherwise the criterion is "not evaluated" and the verdict "incomplete".

Verdict: ``pass`` when every criterion that is on passes, ``fail`` when one fails, ``incomplete`` when none
fails but one could not be evaluated.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from service.errors import ErrorCode, InputError
from service.fileio import default_file_mode, write_atomic
from service.pipeline.metrics_report import DOSE_FIELDS, HD95_DEFINITION, ROW_FIELDS, SIZE_BANDS_CC, cohort_summary

DEFAULT_TOLERANCES: dict[str, float | None] = {
    "min_patients": 20,
    "max_failed_patients": 0,
    "median_dice_min": 0.80,
    "median_surface_dice_2mm_min": 0.80,
    "median_hd95_mm_max": None,
    "median_abs_mean_dose_diff_gy_max": 2.0,
}
# median criterion -> (row key, compare with abs(), lower bound?)
_MEDIAN_CRITERIA = {
    "median_dice_min": ("dice", False, True),
    "median_surface_dice_2mm_min": ("surface_dice_2mm", False, True),
    "median_hd95_mm_max": ("hd95_mm", False, False),
    "median_abs_mean_dose_diff_gy_max": ("mean_dose_diff_gy", True, False),
}
THICKNESS_BANDS_MM = (
    ("<= 2 mm", 0.0, 2.0 + 1e-6),
    ("2-3 mm", 2.0 + 1e-6, 3.0 + 1e-6),
    ("> 3 mm", 3.0 + 1e-6, math.inf),
)
DENSITY_BANDS_HU = (("< -30 HU (fatty)", -math.inf, -30.0), ("-30 to 10 HU", -30.0, 10.0), (">= 10 HU", 10.0, math.inf))
CSV_FIELDS = ("patient", "gland", *ROW_FIELDS, "slice_thickness_mm", "ref_mean_hu")


def load_tolerances(path: Path | None) -> dict[str, float | None]:
    """The defaults, updated from ``path``; InputError(BAD_TOLERANCES) naming the file and key when unusable."""
    tol = dict(DEFAULT_TOLERANCES)
    if path is None:
        return tol
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(ErrorCode.BAD_TOLERANCES, f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(ErrorCode.BAD_TOLERANCES, f"{path}: expected a JSON object of criteria")
    unknown = sorted(set(data) - set(tol))
    if unknown:
        raise InputError(ErrorCode.BAD_TOLERANCES, f"{path}: unknown criteria {unknown}; known: {sorted(tol)}")
    for key, value in data.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise InputError(ErrorCode.BAD_TOLERANCES, f"{path}: {key} must be a number >= 0 or null, got {value!r}")
        tol[key] = value
    return tol


def _median(rows: list[dict], key: str, use_abs: bool = False) -> float | None:
    v = np.array([r[key] for r in rows if key in r], dtype=float)
    v = v[np.isfinite(v)]
    if use_abs:
        v = np.abs(v)
    return float(np.median(v)) if v.size else None


def verdict(rows: list[dict], n_patients: int, n_failed: int, tol: dict) -> dict:
    checks = []

    def check(name: str, what: str, value: float | None, limit: float, lower: bool) -> None:
        if value is None:
            checks.append({"criterion": name, "what": what, "limit": limit, "value": None, "result": "not evaluated"})
            return
        ok = value >= limit if lower else value <= limit
        checks.append(
            {"criterion": name, "what": what, "limit": limit, "value": value, "result": "pass" if ok else "fail"}
        )

    if tol.get("min_patients") is not None:
        check("min_patients", "patients evaluated", float(n_patients), float(tol["min_patients"]), True)
    if tol.get("max_failed_patients") is not None:
        check("max_failed_patients", "patients that failed", float(n_failed), float(tol["max_failed_patients"]), False)
    for name, (key, use_abs, lower) in _MEDIAN_CRITERIA.items():
        if tol.get(name) is None:
            continue
        for gland in sorted({r["gland"] for r in rows}) or ["(no gland)"]:
            value = _median([r for r in rows if r["gland"] == gland], key, use_abs)
            check(name, f"{gland}: median {'|' + key + '|' if use_abs else key}", value, float(tol[name]), lower)
    results = {c["result"] for c in checks}
    overall = "fail" if "fail" in results else "incomplete" if "not evaluated" in results else "pass"
    return {"result": overall, "checks": checks}


def _stratum(rows: list[dict]) -> dict:
    return {
        "n": len(rows),
        "dice_median": _median(rows, "dice"),
        "surface_dice_2mm_median": _median(rows, "surface_dice_2mm"),
        "volume_error_pct_median": _median(rows, "volume_error_pct"),
        "abs_mean_dose_diff_gy_median": _median(rows, "mean_dose_diff_gy", use_abs=True),
    }


def strata(rows: list[dict]) -> dict:
    """Both glands pooled, by reference gland size, CT slice thickness and reference gland density (mean HU)."""
    by = {"reference volume": ("ref_cc", SIZE_BANDS_CC), "slice thickness": ("slice_thickness_mm", THICKNESS_BANDS_MM),
          "gland density": ("ref_mean_hu", DENSITY_BANDS_HU)}  # fmt: skip
    return {
        title: {name: _stratum([r for r in rows if lo <= r[key] < hi]) for name, lo, hi in bands}
        for title, (key, bands) in by.items()
    }


def per_gland(rows: list[dict]) -> dict:
    out = {}
    for gland in sorted({r["gland"] for r in rows}):
        g = [r for r in rows if r["gland"] == gland]
        out[gland] = {"n": len(g)} | {
            f"{k}_median": _median(g, k)
            for k in (
                "dice",
                "surface_dice_2mm",
                "surface_dice_3mm",
                "hd95_mm",
                "hd95_pooled_mm",
                "msd_mm",
                "volume_diff_cc",
                "volume_error_pct",
                "mean_dose_ref_gy",
                "mean_dose_pred_gy",
                "d50_ref_gy",
                "d50_pred_gy",
            )  # fmt: skip
        }
        out[gland]["abs_mean_dose_diff_gy_median"] = _median(g, "mean_dose_diff_gy", use_abs=True)
        out[gland]["abs_d50_diff_gy_median"] = _median(g, "d50_diff_gy", use_abs=True)
    return out


def build_summary(rows: list[dict], failed: dict[str, str], meta: dict, tol: dict) -> dict:
    n_patients = len({r["patient"] for r in rows})
    return {
        **meta,
        "n_patients": n_patients,
        "n_glands": len(rows),
        "failed": failed,
        "tolerances": tol,
        "verdict": verdict(rows, n_patients, len(failed), tol),
        "per_gland": per_gland(rows),
        "strata": strata(rows),
        "cohort": cohort_summary(rows),
        "hd95_definition": HD95_DEFINITION,
    }


def _cell(v: object) -> object:
    return "" if isinstance(v, float) and not math.isfinite(v) else f"{v:.4f}" if isinstance(v, float) else v


def write_csv(rows: list[dict], path: Path) -> None:
    fields = [*CSV_FIELDS, *(DOSE_FIELDS if any("mean_dose_ref_gy" in r for r in rows) else ()), "qa_status"]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields, restval="", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    write_atomic(path, buf.getvalue().encode(), mode=default_file_mode())


def write_json(summary: dict, path: Path) -> None:
    def clean(x: object) -> object:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    write_atomic(path, (json.dumps(clean(summary), indent=2) + "\n").encode(), mode=default_file_mode())
