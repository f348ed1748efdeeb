"""One commissioning patient: segment its CT, compare with its reference RTSTRUCT (and dose, when an RTDOSE is there).

A patient is a folder holding one CT series, one RTSTRUCT with the reference parotids (ROI names matched through
the synonym list, as for training: ``service.pipeline.rtstruct_find.find_reference``) and optionally one RTDOSE
(RT Dose Storage, Gy, on the CT's Frame of Reference), under any file names. The automatic contours come from the
service's own pipeline (``run_segmentation``: the same code path as every adapter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import RTDoseStorage

from service.errors import ErrorCode, InputError
from service.pipeline.rtdose import read_rtdose_on_grid
from service.pipeline.rtstruct_read import read_rtstruct_masks
from service.pipeline.segment import run_segmentation
from service.pipeline.series_scan import list_input_files
from service.pipeline.volume import Volume


@dataclass
class PatientResult:
    rows: list[dict]  # one per gland with a reference contour: metrics (see training.evaluate_report.gland_metrics)
    ct: Volume
    auto: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    has_dose: bool
    qa_status: str


def find_dose(patient_dir: Path, files: Sequence[Path]) -> Path | None:
    """The patient's RTDOSE file, None if there is none; InputError(BAD_DOSE) when there are several."""
    from service.pipeline.rtstruct_find import sop_class as _sop_class

    doses = [p for p in files if _safe_sop_class(_sop_class, p) == RTDoseStorage]
    if len(doses) > 1:
        names = ", ".join(str(p.relative_to(patient_dir)) for p in doses)
        raise InputError(ErrorCode.BAD_DOSE, f"{patient_dir}: several RTDOSE files ({names}); keep the plan's one")
    return doses[0] if doses else None


def _safe_sop_class(fn, path: Path) -> str | None:
    try:
        return fn(path)
    except InputError:
        return None  # an unreadable file is the CT loader's or the RTSTRUCT finder's business


def evaluate_patient(
    patient_dir: Path, *, model: str | None, store: Path, synonyms: Mapping[str, Sequence[str]]
) -> PatientResult:
    """Segment, read the reference (and dose), and measure every gland; InputError says why a patient is unusable."""
    from service.pipeline.metrics_report import gland_metrics
    from service.pipeline.rtstruct_find import find_reference

    files = list_input_files(patient_dir)
    if not files:
        raise InputError(ErrorCode.EMPTY_INPUT, f"{patient_dir}: no files")
    result = run_segmentation(patient_dir, model=model, store=store)
    ct = result.ct
    try:
        chosen = find_reference(patient_dir, files, ct, synonyms)
    except InputError as exc:  # the training reader's wording, this tool's code
        raise InputError(ErrorCode.BAD_REFERENCE, exc.message) from None
    glands = [g for g in result.glands if g in chosen.glands]
    reference = read_rtstruct_masks(chosen.path, ct, glands, synonyms=synonyms, require_all=False)
    reference = {g: np.asarray(m, dtype=bool) for g, m in reference.items() if np.any(m)}
    dose_path = find_dose(patient_dir, files)
    dose = read_rtdose_on_grid(dose_path, ct) if dose_path is not None else None
    auto = {g: m.mask_zyx for g, m in result.glands.items()}
    rows = []
    for gland, ref in reference.items():
        row: dict[str, object] = {"patient": patient_dir.name, "gland": gland}
        row.update(gland_metrics(auto[gland], ref, ct.spacing_mm_zyx, gland, dose))
        row["slice_thickness_mm"] = float(ct.spacing_mm_zyx[0])
        row["ref_mean_hu"] = float(ct.array_zyx[ref].mean())
        rows.append(row)
    return PatientResult(rows, ct, auto, reference, dose is not None, result.qa.status)
