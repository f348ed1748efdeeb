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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from service.model_bundle import DEFAULT_STORE, LoadedModel, load_bundle, read_plan, resolve_bundle
from service.pipeline.series import load_series
from service.pipeline.volume import Volume

if TYPE_CHECKING:
    from service.pipeline.postprocess import GlandMask
    from service.pipeline.qa import QAReport, QAThresholds

Progress = Callable[[str, float], None]  # (stage name, fraction of the job done)


@dataclass
class SegmentationResult:
    ct: Volume
    glands: dict[str, GlandMask]
    qa: QAReport
    model: LoadedModel
    stage_times_s: dict[str, float] = field(default_factory=dict)


class _Timer:
    def __init__(self, progress: Progress | None) -> None:
        self.times: dict[str, float] = {}
        self.progress = progress

    def run(self, stage: str, frac: float, fn, *args, **kwargs):
        if self.progress:
            self.progress(stage, frac)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[stage] = round(time.perf_counter() - t0, 3)
        return out


def run_segmentation(
    inputs: Path | Sequence[Path],
    *,
    model: str | None = None,
    reference: Path | None = None,
    series_uid: str | None = None,
    store: Path = DEFAULT_STORE,
    thresholds: QAThresholds | None = None,
    progress: Progress | None = None,
) -> SegmentationResult:
    """Run every stage in memory; raises ``InputError`` for rejected input before any output exists."""
    timer = _Timer(progress)
    ref = resolve_bundle(model, store)
    # the input is checked (and the reference read) before the network is loaded: a rejection answers at once
    plan = read_plan(ref)
    ct = timer.run("read", 0.0, load_series, inputs, series_uid=series_uid, min_slices=plan.min_slices)
    ref_masks = None
    if reference is not None:
        from service.pipeline.rtstruct_read import read_rtstruct_masks

        ref_masks = timer.run(
            "read_reference", 0.05, read_rtstruct_masks, reference, ct, list(plan.labels[1:]), require_all=False
        )
    loaded = timer.run("load_model", 0.1, load_bundle, ref)
    from service.pipeline.gland_boxes import postprocess_on_ct_grid
    from service.pipeline.infer import predict_probabilities
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.qa import build_qa

    t0 = time.perf_counter()
    if progress:
        progress("preprocess", 0.15)
    x = preprocess_volume(ct, loaded.plan)
    timer.times["preprocess"] = round(time.perf_counter() - t0, 3)
    probs_model = timer.run("model", 0.2, predict_probabilities, loaded.predict, x, loaded.plan)
    del x
    if progress:
        progress("postprocess", 0.75)
    # back onto the CT grid and cleaned inside each gland's box only (same masks as the whole grid, tested);
    # records the "resample_back" and "postprocess" stage times
    glands = postprocess_on_ct_grid(probs_model, loaded.plan, ct.spacing_mm_zyx, ct.shape_zyx, timer.times)
    del probs_model
    qa = build_qa(
        ct,
        glands,
        model_name=ref.name,
        model_version=ref.version,
        stage_times_s=timer.times,
        reference=ref_masks,
        thresholds=thresholds,
    )
    return SegmentationResult(ct, glands, qa, loaded, timer.times)


def write_outputs(
    result: SegmentationResult,
    rtstruct_path: Path,
    qa_path: Path | None = None,
    preview_path: Path | None = None,
    progress: Progress | None = None,
) -> QAReport:
    """Write RTSTRUCT (+ QA JSON, + preview PNG); all appear together or not at all."""
    from service.pipeline.preview import write_preview
    from service.pipeline.qa import write_qa_json
    from service.pipeline.rtstruct import write_rtstruct

    ref = result.model.ref
    masks = {name: g.mask_zyx for name, g in result.glands.items()}
    pending: list[tuple[Path, Path]] = []
    times = dict(result.stage_times_s)
    try:
        if progress:
            progress("rtstruct", 0.85)
        t0 = time.perf_counter()
        tmp_rs = rtstruct_path.with_name(f".{rtstruct_path.name}.partial")
        write_rtstruct(result.ct, masks, tmp_rs, model_name=ref.name, model_version=ref.version)
        pending.append((tmp_rs, rtstruct_path))
        times["rtstruct"] = round(time.perf_counter() - t0, 3)
        if preview_path is not None:
            if progress:
                progress("preview", 0.92)
            t0 = time.perf_counter()
            tmp_pv = preview_path.with_name(f".{preview_path.name}.partial")
            title = f"{ref.name} {ref.version} - QA {result.qa.status.upper()} - research use only"
            write_preview(result.ct, masks, tmp_pv, title=title)
            pending.append((tmp_pv, preview_path))
            times["preview"] = round(time.perf_counter() - t0, 3)
        qa = result.qa.model_copy(update={"stage_times_s": times})
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
) -> QAReport:
    """Segment one CT series and write the RTSTRUCT (and QA JSON / preview PNG when paths are given)."""
    result = run_segmentation(
        inputs,
        model=model,
        reference=reference,
        series_uid=series_uid,
        store=store,
        thresholds=thresholds,
        progress=progress,
    )
    qa = write_outputs(result, rtstruct_path, qa_path, preview_path, progress)
    if progress:
        progress("done", 1.0)
    return qa
