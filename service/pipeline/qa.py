"""Stage 6: the QA report (versioned pydantic schema, JSON) that goes out with every RTSTRUCT.

What it checks and how the overall ``status`` is decided:

- **fail**: a gland is empty or missing from the model output; the laterality check fails (``Parotid_L`` centroid
  not at larger LPS x than ``Parotid_R``, i.e. not on the patient's left of it, or a gland's centroid on the wrong
  side of the body midline).
- **review**: any plausibility flag: volume outside ``[min_volume_cc, max_volume_cc]``, L/R volume ratio outside
  ``[min_lr_volume_ratio, max_lr_volume_ratio]``, more than ``max_components_before`` connected components before
  clean-up, the kept component holding less than ``min_largest_component_fraction`` of the gland's voxels, mean
  probability inside below ``min_mean_probability``, a mask touching the edge of the CT's field of view (first/last
  row, column or slice: the gland may be cut off), or a body midline that could not be estimated.
- **review** (measured signals, ``service.pipeline.qa_verdict``, when the pipeline passes the probabilities): the
  bundle's calibrated quality model (P(poor gland) at or above the threshold stored in ``qa_calibration.json``),
  plausibility against the training population (volume, volume for the head size, L/R ratio, SI extent, position,
  mean HU: fatty glands), disagreement between test-time perturbation members, probability mass outside the
  contour, blanked slices near the glands, a field of view cutting the body, an unusual soft-tissue HU peak; each
  flag carries its signal, value and threshold. With a reference: Dice, HD95 or volume error beyond the
  ``reference_*`` tolerances.
- **ok**: none of the above. ``ok`` means "no automatic concern found", never "clinically correct".

Body midline: the median LPS x of the body voxels (HU > ``body_threshold_hu``, largest 26-connected component) in
the slab of axial slices spanned by the two glands of the pair. The median of the whole head cross-section is
robust to a one-sided ear, nose tip or mask fragment.

No patient name or ID is ever written into the report. The schema is in ``service.pipeline.qa_schema``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import ndimage

from service.fileio import write_atomic
from service.pipeline import metrics
from service.pipeline.gland_boxes import BoxedMap, GlandProbabilities
from service.pipeline.postprocess import GlandMask, mask_indices
from service.pipeline.qa_calibration import QACalibration
from service.pipeline.qa_perturb import MemberPrediction
from service.pipeline.qa_reference import compare_reference, find_reference, reference_flags
from service.pipeline.qa_schema import (
    XYZ,
    GlandQA,
    InputSummary,
    LateralityCheck,
    ModelInfo,
    PairQA,
    QAFlag,
    QAReport,
    QAThresholds,
    Status,
)
from service.pipeline.qa_verdict import apply_signals, calibration_summary
from service.pipeline.rtstruct_values import conform_values, conformance_note
from service.pipeline.volume import Volume

LR_PAIRS: tuple[tuple[str, str], ...] = (("Parotid_L", "Parotid_R"),)
_SEVERITY_RANK = {"ok": 0, "review": 1, "fail": 2}


def _input_summary(ct: Volume) -> InputSummary:
    info = ct.info
    return InputSummary(
        series_instance_uid=info.series_instance_uid if info else None,
        num_slices=ct.shape_zyx[0],
        grid_shape_zyx=ct.shape_zyx,
        spacing_mm_zyx=tuple(float(s) for s in ct.spacing_mm_zyx),  # type: ignore[arg-type]
        origin_lps_mm=tuple(float(o) for o in ct.origin_lps),  # type: ignore[arg-type]
        patient_position=(info.patient_position or None) if info else None,
    )


_EDGE_NAMES = (("inferior", "superior"), ("anterior", "posterior"), ("right", "left"))  # low/high index per z, y, x


def _xyz(v: np.ndarray) -> XYZ:
    return (float(v[0]), float(v[1]), float(v[2]))


def _gland_qa(ct: Volume, gland: GlandMask, th: QAThresholds, flags: list[QAFlag]) -> GlandQA:
    mask = np.asarray(gland.mask_zyx, dtype=bool)
    if mask.shape != ct.shape_zyx:
        raise ValueError(f"{gland.name}: mask shape {mask.shape} != CT grid {ct.shape_zyx}")
    name = gland.name
    raised: list[QAFlag] = []
    count = int(mask.sum())
    volume = metrics.volume_cc(mask, ct.spacing_mm_zyx)
    centroid = lo = hi = None
    edges: list[str] = []
    if count == 0:
        raised.append(QAFlag(severity="fail", code="empty_gland", gland=name, message=f"{name} is empty"))
    else:
        kji = mask_indices(mask)  # np.argwhere inside the gland's box
        centroid = _xyz(ct.index_to_lps(kji.mean(axis=0)))
        lo = _xyz(ct.index_to_lps(kji.min(axis=0)))
        hi = _xyz(ct.index_to_lps(kji.max(axis=0)))
        for axis, (low_name, high_name) in enumerate(_EDGE_NAMES):
            if kji[:, axis].min() == 0:
                edges.append(low_name)
            if kji[:, axis].max() == mask.shape[axis] - 1:
                edges.append(high_name)
        if not th.min_volume_cc <= volume <= th.max_volume_cc:
            raised.append(
                QAFlag(
                    severity="review",
                    code="volume_out_of_range",
                    gland=name,
                    message=f"{name} volume {volume:.1f} cc outside [{th.min_volume_cc:g}, {th.max_volume_cc:g}] cc",
                )
            )
        if gland.mean_probability < th.min_mean_probability:
            raised.append(
                QAFlag(
                    severity="review",
                    code="low_mean_probability",
                    gland=name,
                    message=f"{name} mean probability {gland.mean_probability:.2f} < {th.min_mean_probability:g}",
                )
            )
        if edges:
            raised.append(
                QAFlag(
                    severity="review",
                    code="touches_fov_edge",
                    gland=name,
                    message=f"{name} touches the {'/'.join(edges)} edge of the CT field of view (may be cut off)",
                )
            )
    if gland.components_before > th.max_components_before:
        raised.append(
            QAFlag(
                severity="review",
                code="too_many_components",
                gland=name,
                message=f"{name} had {gland.components_before} connected components before clean-up "
                f"(> {th.max_components_before})",
            )
        )
    if count and gland.largest_component_fraction < th.min_largest_component_fraction:
        raised.append(
            QAFlag(
                severity="review",
                code="small_largest_component",
                gland=name,
                message=f"the kept component held only {100 * gland.largest_component_fraction:.0f}% "
                f"of {name}'s voxels before clean-up",
            )
        )
    flags.extend(raised)
    return GlandQA(
        name=name,
        empty=count == 0,
        voxel_count=count,
        volume_cc=volume,
        centroid_lps_mm=centroid,
        extent_min_lps_mm=lo,
        extent_max_lps_mm=hi,
        components_before_cleanup=gland.components_before,
        largest_component_fraction=gland.largest_component_fraction,
        mean_probability=gland.mean_probability,
        touches_fov_edge=bool(edges),
        fov_edges_touched=edges,
        flags=[f.code for f in raised],
    )


def estimate_midline_x_mm(ct: Volume, z_range: tuple[int, int], body_threshold_hu: float) -> float | None:
    """Median LPS x of the largest body component (HU > threshold) in axial slices ``z_range`` (inclusive)."""
    slab = np.asarray(ct.array_zyx[z_range[0] : z_range[1] + 1]) > body_threshold_hu
    labelled, n = ndimage.label(slab, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return None
    largest = int(np.argmax(np.bincount(labelled[labelled > 0])[1:])) + 1
    i_idx = np.nonzero(labelled == largest)[2]
    return float(ct.origin_lps[0] + float(np.median(i_idx)) * ct.spacing_mm_zyx[2])


def _pair_qa(
    ct: Volume, left: GlandQA, right: GlandQA, masks: dict[str, np.ndarray], th: QAThresholds, flags: list[QAFlag]
) -> PairQA:
    ratio = None if left.empty or right.empty else left.volume_cc / right.volume_cc
    if ratio is not None and not th.min_lr_volume_ratio <= ratio <= th.max_lr_volume_ratio:
        flags.append(
            QAFlag(
                severity="review",
                code="lr_ratio_out_of_range",
                message=f"{left.name}/{right.name} volume ratio {ratio:.2f} outside "
                f"[{th.min_lr_volume_ratio:g}, {th.max_lr_volume_ratio:g}]",
            )
        )
    lat = LateralityCheck(
        left=left.name,
        right=right.name,
        left_minus_right_x_mm=None,
        body_midline_x_mm=None,
        left_on_left_side=None,
        right_on_right_side=None,
        passed=None,
    )
    if left.centroid_lps_mm is None or right.centroid_lps_mm is None:
        return PairQA(left=left.name, right=right.name, lr_volume_ratio=ratio, laterality=lat)
    lat.left_minus_right_x_mm = left.centroid_lps_mm[0] - right.centroid_lps_mm[0]
    ks = np.flatnonzero((masks[left.name] | masks[right.name]).any(axis=(1, 2)))
    midline = estimate_midline_x_mm(ct, (int(ks[0]), int(ks[-1])), th.body_threshold_hu)
    lat.passed = lat.left_minus_right_x_mm > 0
    if not lat.passed:
        flags.append(
            QAFlag(
                severity="fail",
                code="laterality_swapped",
                message=f"{left.name} centroid x {left.centroid_lps_mm[0]:.1f} mm is not on the patient's "
                f"left of {right.name} centroid x {right.centroid_lps_mm[0]:.1f} mm (LPS, +x = "
                "patient's left)",
            )
        )
    if midline is None:
        flags.append(
            QAFlag(
                severity="review",
                code="midline_unavailable",
                message=f"no body (HU > {th.body_threshold_hu:g}) found on the gland slices: "
                "side-of-midline check not done",
            )
        )
        return PairQA(left=left.name, right=right.name, lr_volume_ratio=ratio, laterality=lat)
    lat.body_midline_x_mm = midline
    lat.left_on_left_side = left.centroid_lps_mm[0] > midline
    lat.right_on_right_side = right.centroid_lps_mm[0] < midline
    sides = (
        (left.name, left.centroid_lps_mm[0], lat.left_on_left_side, "left"),
        (right.name, right.centroid_lps_mm[0], lat.right_on_right_side, "right"),
    )
    for name, x_mm, ok, side in sides:
        if not ok:
            flags.append(
                QAFlag(
                    severity="fail",
                    code="wrong_side_of_midline",
                    gland=name,
                    message=f"{name} centroid x {x_mm:.1f} mm is not on the patient's {side} of the "
                    f"body midline x {midline:.1f} mm",
                )
            )
    lat.passed = bool(lat.passed and lat.left_on_left_side and lat.right_on_right_side)
    return PairQA(left=left.name, right=right.name, lr_volume_ratio=ratio, laterality=lat)


def build_qa(
    ct: Volume,
    glands: dict[str, GlandMask],
    *,
    model_name: str,
    model_version: str,
    stage_times_s: dict[str, float],
    reference: dict[str, np.ndarray] | None = None,
    thresholds: QAThresholds | None = None,
    gland_probs: Sequence[GlandProbabilities] | None = None,
    members: MemberPrediction | None = None,
    uncertainty: BoxedMap | None = None,
    calibration: QACalibration | None = None,
    background_weight: float = 1.0,
) -> QAReport:
    """Build the QA report for the glands segmented on ``ct`` (all masks on the CT grid, canonical LPS order).

    ``reference`` maps ROI name -> mask on the CT grid; each gland is compared with the ROI of the same name
    (exact, else case-insensitive). With ``gland_probs`` (each gland's class probabilities on the CT grid in its
    box, ``gland_boxes.gland_probabilities(min_threshold=UNCERTAIN_LOW)``; ``gland_boxes.whole_grid`` wraps
    whole-grid ones) the measured signals are added (``qa_verdict``); ``members`` (test-time perturbation members)
    and ``uncertainty`` (on the CT grid) add the disagreement signals and the slices where uncertainty
    concentrates.
    """
    th = thresholds or QAThresholds()
    flags: list[QAFlag] = []
    notes: list[str] = []
    gland_qa = {name: _gland_qa(ct, g, th, flags) for name, g in glands.items()}
    pairs: list[PairQA] = []
    for left, right in LR_PAIRS:
        missing = [n for n in (left, right) if n not in glands]
        for n in missing:
            flags.append(QAFlag(severity="fail", code="missing_gland", gland=n, message=f"no {n} in the model output"))
        if not missing:
            masks = {n: np.asarray(glands[n].mask_zyx, dtype=bool) for n in (left, right)}
            pairs.append(_pair_qa(ct, gland_qa[left], gland_qa[right], masks, th, flags))
    if reference is not None:
        for name, g in glands.items():
            ref_name = find_reference(name, reference)
            if ref_name is None:
                notes.append(f"no reference ROI named {name}; reference ROIs: {sorted(reference)}")
                continue
            gland_qa[name].reference = compare_reference(ct, g, ref_name, reference[ref_name], gland_qa[name].volume_cc)
            flags.extend(reference_flags(name, gland_qa[name].reference, th))  # type: ignore[arg-type]
    input_checks = None
    if gland_probs is not None:
        input_checks = apply_signals(
            ct, glands, gland_qa, flags, notes, gland_probs=gland_probs, members=members, uncertainty=uncertainty,
            calibration=calibration, background_weight=background_weight, pairs=LR_PAIRS,
            body_threshold_hu=th.body_threshold_hu,
        )  # fmt: skip
    _, conformed = conform_values(ct.info.patient_study_attrs if ct.info else {})  # what the RTSTRUCT writer changes
    if conformed:
        flags.append(QAFlag(severity="review", code="patient_values_conformed", message=conformance_note(conformed)))
    status: Status = "ok"
    for f in flags:
        if _SEVERITY_RANK[f.severity] > _SEVERITY_RANK[status]:
            status = f.severity
    return QAReport(
        generated_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        input=_input_summary(ct),
        model=ModelInfo(name=model_name, version=model_version),
        glands=gland_qa,
        pairs=pairs,
        status=status,
        reasons=sorted(flags, key=lambda f: -_SEVERITY_RANK[f.severity]),
        notes=notes,
        stage_times_s={k: float(v) for k, v in stage_times_s.items()},
        thresholds=th,
        input_checks=input_checks,
        calibration=calibration_summary(calibration),
    )


def write_qa_json(report: QAReport, path: Path) -> None:
    """Write the report as indented JSON atomically (temp file in the same directory, then ``os.replace``)."""
    path = Path(path)
    write_atomic(path, (report.model_dump_json(indent=2) + "\n").encode("utf-8"))
