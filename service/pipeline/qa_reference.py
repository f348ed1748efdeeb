"""The QA's comparison with a reference contour (``--reference`` / an HTTP reference upload): Dice, IoU, HD95,
mean surface distance and volume error per gland, and the `review` flags beyond ``QAThresholds.reference_*``."""

from __future__ import annotations

import math

import numpy as np

from service.pipeline import metrics
from service.pipeline.postprocess import GlandMask
from service.pipeline.qa_schema import QAFlag, QAThresholds, ReferenceComparison
from service.pipeline.volume import Volume


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def find_reference(name: str, reference: dict[str, np.ndarray]) -> str | None:
    if name in reference:
        return name
    matches = [k for k in reference if k.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def compare_reference(
    ct: Volume, gland: GlandMask, ref_name: str, ref: np.ndarray, volume: float
) -> ReferenceComparison:
    ref = np.asarray(ref, dtype=bool)
    if ref.shape != ct.shape_zyx:
        raise ValueError(f"reference {ref_name}: shape {ref.shape} != CT grid {ct.shape_zyx}")
    ref_cc = metrics.volume_cc(ref, ct.spacing_mm_zyx)
    hd95, msd = metrics.surface_metrics_mm(gland.mask_zyx, ref, ct.spacing_mm_zyx)
    return ReferenceComparison(
        reference_roi=ref_name,
        reference_volume_cc=ref_cc,
        dice=_finite_or_none(metrics.dice(gland.mask_zyx, ref)),
        iou=_finite_or_none(metrics.iou(gland.mask_zyx, ref)),
        hd95_mm=_finite_or_none(hd95),
        mean_surface_distance_mm=_finite_or_none(msd),
        volume_difference_cc=volume - ref_cc,
        volume_difference_pct=100.0 * (volume - ref_cc) / ref_cc if ref_cc > 0 else None,
    )


def reference_flags(name: str, ref: ReferenceComparison, th: QAThresholds) -> list[QAFlag]:
    """`review` flags for a gland beyond the reference tolerances (Dice, HD95, volume error)."""
    out = []

    def flag(code: str, signal: str, value: float, limit: float, text: str) -> None:
        msg = f"{name} against reference {ref.reference_roi}: {text}"
        out.append(
            QAFlag(severity="review", code=code, gland=name, message=msg, signal=signal, value=value, threshold=limit)
        )

    if ref.dice is not None and ref.dice < th.reference_min_dice:
        flag(
            "reference_dice",
            "dice",
            ref.dice,
            th.reference_min_dice,
            f"Dice {ref.dice:.2f} < {th.reference_min_dice:g}",
        )
    if ref.hd95_mm is not None and ref.hd95_mm > th.reference_max_hd95_mm:
        limit = th.reference_max_hd95_mm
        flag("reference_hd95", "hd95_mm", ref.hd95_mm, limit, f"HD95 {ref.hd95_mm:.1f} mm > {limit:g} mm")
    pct = ref.volume_difference_pct
    if pct is not None and abs(pct) > th.reference_max_volume_error_pct:
        limit = th.reference_max_volume_error_pct
        flag(
            "reference_volume_error",
            "volume_difference_pct",
            pct,
            limit,
            f"volume error {pct:+.0f}% beyond +/-{limit:g}%",
        )
    return out
