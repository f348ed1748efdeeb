"""The measured part of the QA: signals, the calibrated quality estimate and the named concerns, per gland.

``apply_signals`` fills each ``GlandQA``'s ``signals``, ``quality`` and ``uncertain_slices`` and appends one
``review`` flag per concern (``qa_calibration.assess_gland`` / ``assess_input``: the same function the calibration
command scored, so the sensitivity and specificity it reported are those of these flags). A bundle without
``qa_calibration.json`` gets the built-in rule thresholds, no population z-scores and no quality model; the report
says so in a note.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from service.pipeline.gland_boxes import BoxedMap, GlandProbabilities
from service.pipeline.postprocess import GlandMask
from service.pipeline.qa_calibration import QACalibration, assess_gland, assess_input
from service.pipeline.qa_collect import collect_gland_signals, collect_input_signals, gland_z_range
from service.pipeline.qa_perturb import MemberPrediction
from service.pipeline.qa_schema import (
    CalibrationSummary,
    GlandQA,
    GlandQuality,
    InputChecks,
    QAFlag,
    QAReport,
    UncertainSlice,
)
from service.pipeline.qa_signals import uncertain_slices
from service.pipeline.volume import Volume


def _finite(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else None


def calibration_summary(cal: QACalibration | None) -> CalibrationSummary | None:
    v = cal.validation if cal else {}
    try:
        return CalibrationSummary(
            bundle=v["bundle"],
            n_glands=v["n_glands"],
            auroc=v["auroc"],
            auroc_ci95=tuple(v["auroc_ci95"]),
            verdict_sensitivity=v["verdict_sensitivity"],
            verdict_specificity=v["verdict_specificity"],
            poor_definition=v["poor_definition"],
        )
    except (KeyError, TypeError, ValueError):
        return None


def apply_signals(
    ct: Volume,
    glands: Mapping[str, GlandMask],
    gland_qa: dict[str, GlandQA],
    flags: list[QAFlag],
    notes: list[str],
    *,
    gland_probs: Sequence[GlandProbabilities],
    members: MemberPrediction | None,
    uncertainty: BoxedMap | None,
    calibration: QACalibration | None,
    background_weight: float,
    pairs: Sequence[tuple[str, str]],
    body_threshold_hu: float,
) -> InputChecks:
    cal = calibration or QACalibration()
    if calibration is None:
        notes.append(
            "the model bundle has no qa_calibration.json: no quality estimate and no population comparison; "
            "only the built-in rule thresholds were applied"
        )
    elif calibration.quality_model is None:
        notes.append("the bundle's QA calibration has no quality model: no quality estimate")
    hu = np.asarray(ct.array_zyx)
    signals = collect_gland_signals(
        hu, ct.spacing_mm_zyx, ct.origin_lps, glands, gland_probs, members, background_weight, pairs,
        body_threshold_hu,
    )  # fmt: skip
    for name, g in glands.items():
        q = gland_qa[name]
        s = signals[name]
        q.signals = {k: _finite(v) for k, v in s.items()}
        if g.is_empty:
            continue
        feats, est, concerns = assess_gland(name, s, cal)
        if est is not None and cal.quality_model is not None:
            q.quality = GlandQuality(
                p_poor=est[0],
                predicted_dice=est[1],
                review_threshold=cal.quality_model.review_threshold,
                features={k: feats[k] for k in cal.quality_model.features},
            )
        if uncertainty is not None:
            q.uncertain_slices = [
                UncertainSlice(z_index=k, z_mm=float(ct.index_to_lps(np.array([k, 0, 0]))[2]), score=v)
                for k, v in uncertain_slices(uncertainty, g.mask_zyx)
            ]
        for c in concerns:
            flags.append(
                QAFlag(
                    severity="review",
                    code=c.code,
                    gland=name,
                    message=c.message,
                    signal=c.signal,
                    value=c.value,
                    threshold=c.threshold,
                )
            )
            q.flags.append(c.code)
    z_range = gland_z_range([g.mask_zyx for g in glands.values()], ct.shape_zyx[0])
    inp = collect_input_signals(hu, ct.spacing_mm_zyx, z_range, body_threshold_hu)
    for c in assess_input(inp, cal):
        flags.append(
            QAFlag(
                severity="review", code=c.code, message=c.message, signal=c.signal, value=c.value, threshold=c.threshold
            )
        )
    blanked = inp["blanked_slices"]
    if blanked and not inp["blanked_slices_near_glands"]:
        notes.append(f"{len(blanked)} axial slice(s) away from the glands are blanked to air inside the body")  # type: ignore[arg-type]
    return InputChecks(
        blanked_slices=list(blanked),  # type: ignore[call-overload]
        blanked_slices_near_glands=list(inp["blanked_slices_near_glands"]),  # type: ignore[call-overload]
        soft_tissue_peak_hu=_finite(inp["soft_tissue_peak_hu"]),
        body_cut_sides=list(inp["body_cut_sides"]),  # type: ignore[call-overload]
    )


def rtstruct_texts(qa: QAReport, model_name: str, model_version: str) -> tuple[str, str, dict[str, str]]:
    """The QA verdict as the planning system shows it: (0008,103E) Series Description (64 characters: status),
    (3006,0006) Structure Set Description (status and short reasons) and a (3006,0028) ROI Description per gland
    (its status, the quality estimate and its concern codes)."""
    status = qa.status.upper()
    series = f"AUTO-GENERATED {model_name} {model_version} UNAPPROVED QA {status}"
    reasons = "; ".join(f"{f.code}({f.gland})" if f.gland else f.code for f in qa.reasons) or "no automatic concern"
    structure_set = (
        f"Automatically generated by {model_name} {model_version}; not reviewed. QA {status}: {reasons}. "
        "QA ok means no automatic concern was found, not that the contour is correct."
    )
    rois = {}
    for name, g in qa.glands.items():
        own = [f.severity for f in qa.reasons if f.gland == name]
        g_status = "FAIL" if "fail" in own else "REVIEW" if own else "OK"
        text = f"QA {g_status}"
        if g.quality is not None:
            text += f"; est. Dice {g.quality.predicted_dice:.2f}, P(poor) {g.quality.p_poor:.2f}"
        if g.flags:
            text += f"; {', '.join(g.flags)}"
        rois[name] = text
    return series, structure_set, rois
