"""Read a split with the chosen reader, apply the preprocessing contract and cache the result."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from service.pipeline.plan import Plan
from training.data.case import CaseData, SkipReport
from training.dataset import PreparedCase, load_prepared, prepare_case, save_prepared


def iter_cases(
    split_dir: Path, fmt: str, report: SkipReport, roi_synonyms: Path | None = None, *, with_dose: bool = False
) -> Iterator[CaseData]:
    """The cases of a split; ``with_dose``: with the clinical plan dose where the format carries one (OpenKBP)."""
    if fmt == "openkbp":
        from training.data.openkbp import iter_split

        yield from iter_split(split_dir, report, with_dose=with_dose)
    elif fmt == "dicom":
        from training.data.dicom_rtstruct import iter_split as iter_dicom
        from training.data.dicom_rtstruct import load_synonyms

        synonyms = load_synonyms(roi_synonyms) if roi_synonyms else None
        yield from iter_dicom(split_dir, report, synonyms=synonyms)
    elif fmt == "nifti":
        from training.data.nifti import iter_split as iter_nifti

        yield from iter_nifti(split_dir, report)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def load_split(
    split_dir: Path, fmt: str, plan: Plan, cache_dir: Path, roi_synonyms: Path | None = None
) -> tuple[list[PreparedCase], SkipReport]:
    """All cases of a split on the model grid; prepared arrays are cached in ``cache_dir``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = cache_dir / "COMPLETE"
    report = SkipReport({})
    if done.exists():
        import json

        report = SkipReport(json.loads(done.read_text()))
        return [load_prepared(p) for p in sorted(cache_dir.glob("*.npz"))], report
    cases = []
    for case in iter_cases(split_dir, fmt, report, roi_synonyms):
        pc = prepare_case(case, plan)
        save_prepared(pc, cache_dir / f"{case.case_id}.npz")
        cases.append(pc)
        print(f"prepared {case.case_id} {pc.image_zyx.shape}", file=sys.stderr, flush=True)
    import json

    done.write_text(json.dumps(report.skipped))
    return cases, report
