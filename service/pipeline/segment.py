"""``segment_series``: the whole pipeline behind every adapter (CLI, API worker, DICOM listener).

load_series -> preprocess -> infer -> postprocess -> RTSTRUCT + QA + preview. Input is validated (and the
reference RTSTRUCT read) before anything is written; the outputs are written under temporary names and renamed
only when all of them are complete, so a rejected input never leaves a file behind.

Imports: only what reading and checking the input needs is imported with this module; the numerical stages,
the QA and the writers are imported once the input has been accepted, so that a rejection (e.g. from the CLI)
answers without paying for SciPy, Matplotlib or a network runtime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from service.model_bundle import DEFAULT_STORE, LoadedModel, load_bundle, read_plan, resolve_bundle
from service.pipeline.series import load_series
from service.pipeline.stages import PROGRESS_AT, Progress, Stage, StageTimer
from service.pipeline.structures import DEFAULT_TEMPLATE, StructureTemplate
from service.pipeline.volume import Volume

if TYPE_CHECKING:
    from service.pipeline.gland_boxes import BoxedMap
    from service.pipeline.postprocess import GlandMask
    from service.pipeline.qa import QAReport, QAThresholds


@dataclass
class SegmentationResult:
    ct: Volume
    glands: dict[str, GlandMask]
    qa: QAReport
    model: LoadedModel
    stage_times_s: dict[str, float] = field(default_factory=dict)
    uncertainty: BoxedMap | None = None  # float32 in [0, 1] on the CT grid, 0 below a floor (see qa_perturb)


def run_segmentation(
    inputs: Path | Sequence[Path],
    *,
    model: str | None = None,
    reference: Path | None = None,
    series_uid: str | None = None,
    store: Path = DEFAULT_STORE,
    thresholds: QAThresholds | None = None,
    progress: Progress | None = None,
    perturbations: Sequence[str] | None = None,
    memory_budget: int | None = None,
) -> SegmentationResult:
    """Run every stage in memory; raises ``InputError`` for rejected input before any output exists.

    ``perturbations``: the QA's extra test-time members (one network pass each); None = the bundle's QA
    calibration's list (the built-in default without one), ``()`` = none. They never change the contours.
    ``memory_budget``: bytes the series may need (``budget``); None = ``PAROTID_MEMORY_BUDGET_MB`` or the default."""
    timer = StageTimer(progress)
    ref = resolve_bundle(model, store)
    # the input is checked (and the reference read) before the network is loaded: a rejection answers at once
    plan = read_plan(ref)
    with timer.stage(Stage.READ):
        ct = load_series(
            inputs,
            series_uid=series_uid,
            min_slices=plan.min_slices,
            model_spacing_mm_zyx=plan.spacing_mm_zyx,
            memory_budget=memory_budget,
        )
    ref_masks = None
    if reference is not None:
        from service.pipeline.rtstruct_read import read_rtstruct_masks

        with timer.stage(Stage.READ_REFERENCE):
            ref_masks = read_rtstruct_masks(reference, ct, list(plan.labels[1:]), require_all=False)
    with timer.stage(Stage.LOAD_MODEL):
        loaded = load_bundle(ref)
    plan = loaded.plan
    from service.pipeline.gland_boxes import clean_glands, gland_probabilities, map_to_ct_grid
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.qa import build_qa
    from service.pipeline.qa_calibration import load_calibration
    from service.pipeline.qa_perturb import DEFAULT_PERTURBATIONS, UNCERTAINTY_FLOOR, predict_with_members
    from service.pipeline.qa_signals import UNCERTAIN_LOW

    with timer.stage(Stage.PREPROCESS):
        x = preprocess_volume(ct, plan)
    calibration = load_calibration(ref.path)
    if perturbations is None:
        perturbations = calibration.perturbations if calibration else DEFAULT_PERTURBATIONS
    with timer.stage(Stage.MODEL):
        members = predict_with_members(loaded.predict, x, plan, tuple(perturbations))
    with timer.stage(Stage.RESAMPLE_BACK):
        # only inside each gland's box (built with the QA's lowest threshold, so its signals see every voxel they
        # count) and inside the box where the uncertainty exceeds its floor: no whole-grid float array
        boxed = gland_probabilities(
            members.probs_zyxc, plan, ct.spacing_mm_zyx, ct.shape_zyx, min_threshold=UNCERTAIN_LOW
        )
        uncertainty = map_to_ct_grid(
            members.uncertainty_zyx, plan, ct.spacing_mm_zyx, ct.shape_zyx, floor=UNCERTAINTY_FLOOR
        )
    with timer.stage(Stage.POSTPROCESS):
        # argmax and clean-up inside each gland's box (the whole grid's masks: tests/pipeline/test_gland_boxes.py)
        glands = clean_glands(boxed, plan.background_weight, ct.shape_zyx)
    with timer.stage(Stage.QA):
        qa = build_qa(
            ct,
            glands,
            model_name=ref.name,
            model_version=ref.version,
            stage_times_s={},
            reference=ref_masks,
            thresholds=thresholds,
            gland_probs=boxed,
            members=members,
            uncertainty=uncertainty,
            calibration=calibration,
            background_weight=plan.background_weight,
        )
    del boxed, members  # the probabilities are not needed once the masks and the QA exist
    qa = qa.model_copy(update={"stage_times_s": dict(timer.times)})
    return SegmentationResult(ct, glands, qa, loaded, timer.times, uncertainty)


def write_outputs(
    result: SegmentationResult,
    rtstruct_path: Path,
    qa_path: Path | None = None,
    preview_path: Path | None = None,
    progress: Progress | None = None,
    uncertainty_path: Path | None = None,
    structures: StructureTemplate | None = None,
) -> QAReport:
    """Write RTSTRUCT (+ QA JSON, + preview PNG, + uncertainty NIfTI); all appear together or not at all.

    ROI names and colours come from ``structures`` (default: TG-263 names, the default colours) for all of them."""
    from service.pipeline.preview import UNCERTAIN_LEVEL, write_preview
    from service.pipeline.qa import write_qa_json
    from service.pipeline.qa_verdict import rtstruct_texts
    from service.pipeline.rtstruct import write_rtstruct

    ref = result.model.ref
    template = structures or DEFAULT_TEMPLATE
    colors = template.colors_for(list(result.glands))
    masks = template.rename({label: g.mask_zyx for label, g in result.glands.items()})
    roi_colors = template.rename(colors)
    pending: list[tuple[Path, Path]] = []
    timer = StageTimer(progress, result.stage_times_s)
    try:
        with timer.stage(Stage.RTSTRUCT):
            tmp_rs = rtstruct_path.with_name(f".{rtstruct_path.name}.partial")
            series_desc, set_desc, roi_desc = rtstruct_texts(result.qa, ref.name, ref.version)
            write_rtstruct(
                result.ct,
                masks,
                tmp_rs,
                model_name=ref.name,
                model_version=ref.version,
                colors=roi_colors,
                series_description=series_desc,
                structure_set_description=set_desc,
                roi_descriptions=template.rename({k: v for k, v in roi_desc.items() if k in result.glands}),
            )
            pending.append((tmp_rs, rtstruct_path))
        if preview_path is not None:
            with timer.stage(Stage.PREVIEW):
                unc = result.uncertainty
                tmp_pv = preview_path.with_name(f".{preview_path.name}.partial")
                title = f"{ref.name} {ref.version} - QA {result.qa.status.upper()} - research use only"
                write_preview(
                    result.ct,
                    masks,
                    tmp_pv,
                    title=title,
                    colors=roi_colors,
                    uncertain_band_zyx=None if unc is None else unc.at_least(UNCERTAIN_LEVEL),
                )
                pending.append((tmp_pv, preview_path))
        if uncertainty_path is not None and result.uncertainty is not None:
            from service.pipeline.qa_uncertainty_io import write_uncertainty_nifti

            with timer.stage(Stage.UNCERTAINTY):
                tmp_un = uncertainty_path.with_name(f".{uncertainty_path.name}.partial.nii.gz")
                write_uncertainty_nifti(result.ct, result.uncertainty, tmp_un)
                pending.append((tmp_un, uncertainty_path))
        glands = {
            label: g.model_copy(update={"roi_name": template.roi_name(label), "display_color_rgb": colors[label]})
            for label, g in result.qa.glands.items()
        }
        qa = result.qa.model_copy(update={"stage_times_s": timer.times, "glands": glands})
        if qa_path is not None:
            tmp_qa = qa_path.with_name(f".{qa_path.name}.partial")
            write_qa_json(qa, tmp_qa)
            pending.append((tmp_qa, qa_path))
        for tmp, final in pending:
            os.replace(tmp, final)
        pending = []
        return qa
    finally:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)


def segment_series(
    inputs: Path | Sequence[Path],
    *,
    rtstruct_path: Path,
    qa_path: Path | None = None,
    preview_path: Path | None = None,
    model: str | None = None,
    reference: Path | None = None,
    series_uid: str | None = None,
    store: Path = DEFAULT_STORE,
    thresholds: QAThresholds | None = None,
    progress: Progress | None = None,
    uncertainty_path: Path | None = None,
    perturbations: Sequence[str] | None = None,
    memory_budget: int | None = None,
    structures: StructureTemplate | None = None,
) -> QAReport:
    """Segment one CT series and write the RTSTRUCT (and QA JSON / preview PNG / uncertainty NIfTI when paths
    are given), with the ROI names and colours of ``structures`` (default ``structures.DEFAULT_TEMPLATE``)."""
    result = run_segmentation(
        inputs,
        model=model,
        reference=reference,
        series_uid=series_uid,
        store=store,
        thresholds=thresholds,
        progress=progress,
        perturbations=perturbations,
        memory_budget=memory_budget,
    )
    qa = write_outputs(result, rtstruct_path, qa_path, preview_path, progress, uncertainty_path, structures)
    if progress:
        progress(Stage.DONE.value, PROGRESS_AT[Stage.DONE])
    return qa
