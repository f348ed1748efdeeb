"""Model-card lines for the cohort metrics of an evaluation (issue 13's error analysis).

The metrics themselves live in :mod:`service.pipeline.metrics_report` (shared with ``parotid-seg evaluate``) and
are re-exported here for ``training.evaluate``.
"""

from __future__ import annotations

from service.pipeline.metrics_report import (
    ANTERIOR_FLAG_MM,
    DOSE_FIELDS,
    DOSE_FLAG_GY,
    HD95_DEFINITION,
    ROW_FIELDS,
    SIZE_BANDS_CC,
    cohort_summary,
    gland_extras,
    gland_metrics,
)

__all__ = [
    "DOSE_FIELDS",
    "HD95_DEFINITION",
    "ROW_FIELDS",
    "SIZE_BANDS_CC",
    "card_lines",
    "cohort_summary",
    "gland_extras",
    "gland_metrics",
]


def _f(x: object, nd: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def card_lines(val: dict) -> list[str]:
    """Model-card lines for the cohort metrics of an evaluation summary (none for older summaries)."""
    c = val.get("cohort")
    if not c:
        return []
    sp = c["spearman_ref_volume_vs_volume_error"]
    bands = "; ".join(
        f"{k}: n={v['n']}, median {_f(v.get('median'))} %" for k, v in c["volume_error_pct_by_reference_size"].items()
    )
    thirds = ", ".join(f"{k} {_f(v.get('mean'), 2)}" for k, v in c["missed_fraction_by_third"].items())
    ant = c["anterior_shortfall_mm"]
    lines = [
        f"Both glands pooled ({c['n_glands']} glands): volume error (predicted - reference, % of reference) by "
        f"reference size: {bands}; Spearman rho between reference volume and volume error {_f(sp['rho'], 2)} "
        f"(p {_f(sp['p'], 4)}). Mean fraction of the reference missed by third (left-right): {thirds}. The "
        f"prediction's anterior border lies behind the reference's by a median {_f(ant.get('median'))} mm "
        f"(>= {ANTERIOR_FLAG_MM:g} mm in {ant.get(f'n_at_least_{ANTERIOR_FLAG_MM:g}mm')} glands).",
    ]
    if "mean_dose" in c:
        d = c["mean_dose"]
        lines[0] += (
            f" Clinical plan dose: median |mean-dose difference| automatic vs reference contour "
            f"{_f(d['abs_diff_gy'].get('median'), 2)} Gy (max {_f(d['abs_diff_gy'].get('max'), 1)} Gy, over "
            f"{DOSE_FLAG_GY:g} Gy in {d[f'n_over_{DOSE_FLAG_GY:g}gy']} glands), median reference mean dose "
            f"{_f(d['ref_mean_dose_gy'].get('median'))} Gy."
        )
    lines += [f"HD95 definitions: {c['hd95_definition']}; the table's HD95 is the first.", ""]
    return lines
