"""Reader for clinic data: a DICOM CT series and an RTSTRUCT per patient, the format clinics retrain on.

Layout: ``split_dir/<patient>/...``, one folder per patient holding one CT series and its RTSTRUCT anywhere below
it, under any file names. The folder name is the case id. Files directly in ``split_dir`` are ignored, except
``roi_synonyms.json`` (see :func:`load_synonyms`), which is used when no synonyms are passed in.

Per patient: the CT is read by serving's own loader (:func:`service.pipeline.series.load_series`: ordering,
geometry checks and HU exactly as at inference time) into the canonical LPS order; every RTSTRUCT below the
folder is identified by (0002,0002) Media Storage SOP Class UID (or (0008,0016) SOP Class UID) = RT Structure Set
Storage; its (3006,0020) Structure Set ROI Sequence > (3006,0026) ROI Name are matched to ``Parotid_L`` /
``Parotid_R`` through the synonym list (:func:`service.pipeline.rtstruct_read.match_roi_name`: case, spaces and
punctuation ignored), and its frame ((3006,0020) > (3006,0024) Referenced Frame of Reference UID, or
(3006,0010) Referenced Frame of Reference Sequence > (0020,0052) Frame of Reference UID) must be the CT's
(0020,0052) Frame of Reference UID. The matched ROIs are rasterized onto the CT grid by
:func:`service.pipeline.rtstruct_read.read_rtstruct_masks`.

A patient is skipped, with the reason in ``report.skipped[patient]``, when: the folder has no CT series or
several, the CT is unreadable or refused by the loader, there is no RTSTRUCT, no RTSTRUCT ROI name matches a
parotid (the ROI names found are listed), the only RTSTRUCTs with parotids reference another frame of reference,
several RTSTRUCTs on this CT hold parotids (keep one), an RTSTRUCT is unreadable or its contours do not fit the CT,
or the matched ROIs have no contours. A patient with only one gland is kept with only that gland in ``masks``
(the trainer leaves such patients out of training and reports them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from service.errors import ErrorCode, InputError
from service.pipeline import rtstruct_find as _find
from service.pipeline.rtstruct_read import DEFAULT_SYNONYMS, read_rtstruct_masks
from service.pipeline.series import load_series
from service.pipeline.series_scan import list_input_files
from training.data.case import CaseData, SkipReport

GLANDS = _find.GLANDS
SYNONYMS_FILE = _find.SYNONYMS_FILE

Synonyms = Mapping[str, Sequence[str]]


def _bad(message: str) -> InputError:
    return InputError(ErrorCode.BAD_TRAINING_DATA, message)


def load_synonyms(path: Path, *, extend_defaults: bool = True) -> dict[str, tuple[str, ...]]:
    """:func:`service.pipeline.rtstruct_find.load_synonyms`, refusing with InputError(BAD_TRAINING_DATA)."""
    try:
        return _find.load_synonyms(path, extend_defaults=extend_defaults)
    except InputError as exc:
        raise _bad(exc.message) from None


def read_patient(patient_dir: Path, synonyms: Synonyms = DEFAULT_SYNONYMS) -> CaseData:
    """One patient folder -> CaseData (canonical LPS); InputError(BAD_TRAINING_DATA) says why it is unusable."""
    files = list_input_files(patient_dir)
    if not files:
        raise _bad(f"{patient_dir}: no files")
    try:
        ct = load_series(patient_dir)
    except InputError as exc:
        what = {
            ErrorCode.EMPTY_INPUT: "no CT series",
            ErrorCode.NO_CT_SERIES: "no CT series",
            ErrorCode.NOT_CT: "no CT series",
            ErrorCode.MULTIPLE_SERIES: "several CT series",
        }.get(exc.code, "CT refused")
        raise _bad(f"{what} [{exc.code}]: {exc.message}") from None
    try:
        chosen = _find.find_reference(patient_dir, files, ct, synonyms)
    except InputError as exc:
        raise _bad(exc.message) from None
    wanted = [g for g in GLANDS if g in chosen.glands]
    try:
        masks = read_rtstruct_masks(chosen.path, ct, wanted, synonyms=synonyms)
    except InputError as exc:
        raise _bad(f"RTSTRUCT refused [{exc.code}]: {exc.message}") from None
    kept = {g: np.asarray(m, dtype=bool) for g, m in masks.items() if np.any(m)}
    if not kept:
        matched = ", ".join(repr(n) for g in wanted for n in chosen.glands[g])
        raise _bad(f"{_find.rel(chosen.path, patient_dir)}: the parotid ROIs ({matched}) have no contours")
    hu = np.ascontiguousarray(ct.array_zyx, dtype=np.float32)
    return CaseData(patient_dir.name, hu, ct.spacing_mm_zyx, kept)


def iter_split(
    split_dir: Path, report: SkipReport | None = None, *, synonyms: Synonyms | Path | None = None
) -> Iterator[CaseData]:
    """Yield every usable patient folder of ``split_dir``, recording skipped ones (and why) in ``report``.

    ``synonyms``: a mapping, a JSON file (:func:`load_synonyms`) or None: ``split_dir/roi_synonyms.json`` when it
    exists, else :data:`DEFAULT_SYNONYMS`. Without a ``report`` the first unusable patient raises.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise _bad(f"{split_dir}: not a folder of patient folders")
    if synonyms is None:
        file = split_dir / SYNONYMS_FILE
        synonyms = load_synonyms(file) if file.is_file() else DEFAULT_SYNONYMS
    elif isinstance(synonyms, str | Path):
        synonyms = load_synonyms(Path(synonyms))
    patients = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not patients:
        raise _bad(f"{split_dir}: no patient folders (expected {split_dir}/<patient>/ with CT and RTSTRUCT files)")
    for patient in patients:
        try:
            case = read_patient(patient, synonyms)
        except InputError as exc:
            if report is None:
                raise
            report.skipped[patient.name] = exc.message
            continue
        yield case
