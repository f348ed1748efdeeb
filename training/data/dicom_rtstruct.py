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

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import RTStructureSetStorage

from service.errors import ErrorCode, InputError
from service.pipeline.rtstruct_read import DEFAULT_SYNONYMS, match_roi_name, read_rtstruct_masks
from service.pipeline.series import load_series
from service.pipeline.series_scan import list_input_files, read_dataset
from service.pipeline.volume import Volume
from training.data.case import CaseData, SkipReport

GLANDS = ("Parotid_L", "Parotid_R")
SYNONYMS_FILE = "roi_synonyms.json"

Synonyms = Mapping[str, Sequence[str]]


def _bad(message: str) -> InputError:
    return InputError(ErrorCode.BAD_TRAINING_DATA, message)


def load_synonyms(path: Path, *, extend_defaults: bool = True) -> dict[str, tuple[str, ...]]:
    """ROI-name synonyms from a JSON file ``{"Parotid_L": [...], "Parotid_R": [...]}``.

    With ``extend_defaults`` the names are added to :data:`DEFAULT_SYNONYMS`; otherwise they replace them (a
    gland missing from the file then matches only its own name). Raises InputError(BAD_TRAINING_DATA) naming the
    file when it is not such a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise _bad(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise _bad(f'{path}: expected a JSON object {{"Parotid_L": [...], "Parotid_R": [...]}}')
    unknown = sorted(set(data) - set(GLANDS))
    if unknown:
        raise _bad(f"{path}: unknown key(s) {unknown}; the keys are {list(GLANDS)}")
    out: dict[str, tuple[str, ...]] = {g: (tuple(DEFAULT_SYNONYMS[g]) if extend_defaults else ()) for g in GLANDS}
    for gland, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise _bad(f"{path}: {gland!r} must be a list of non-empty ROI names")
        out[gland] = out[gland] + tuple(names)
    return out


@dataclass
class _StructHeader:
    path: Path
    frames: set[str]  # Frame of Reference UIDs the matched parotid ROIs reference
    roi_names: list[str]  # every (3006,0026) ROI Name in the file
    glands: dict[str, list[str]]  # gland -> ROI names matched to it


def _sop_class(path: Path) -> str | None:
    """(0002,0002) Media Storage SOP Class UID from the File Meta (cheap), else (0008,0016); None if not DICOM."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        sop = str(meta.get("MediaStorageSOPClassUID", ""))
        if sop:
            return sop
    except Exception:  # no File Meta: maybe a bare data set, read below
        pass
    try:
        ds, _ = read_dataset(path, stop_before_pixels=True)
    except InputError as exc:
        raise _bad(f"unreadable file: {exc.message}") from None
    return None if ds is None else str(ds.get("SOPClassUID", ""))


def _find_rtstructs(files: Sequence[Path]) -> list[Path]:
    return [p for p in files if _sop_class(p) == RTStructureSetStorage]


def _read_header(path: Path, synonyms: Synonyms) -> _StructHeader:
    """(3006,0020) Structure Set ROI Sequence names and frames, and (3006,0010) Referenced Frame of Reference."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for garbage input
        raise _bad(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    top = [str(f.get("FrameOfReferenceUID", "")) for f in ds.get("ReferencedFrameOfReferenceSequence", [])]
    names: list[str] = []
    frames: set[str] = set()
    glands: dict[str, list[str]] = {}
    for item in ds.get("StructureSetROISequence", []):
        name = str(item.get("ROIName", ""))
        names.append(name)
        key = match_roi_name(name, synonyms)
        if key in GLANDS:
            glands.setdefault(key, []).append(name)
            frame = str(item.get("ReferencedFrameOfReferenceUID", "")) or (top[0] if len(top) == 1 else "")
            frames.add(frame)
    return _StructHeader(path, frames, names, glands)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _choose_rtstruct(patient_dir: Path, headers: list[_StructHeader], ct: Volume) -> _StructHeader:
    ct_frame = ct.info.frame_of_reference_uid if ct.info is not None else ""
    with_glands = [h for h in headers if h.glands]
    if not with_glands:
        found = "; ".join(
            f"{_rel(h.path, patient_dir)}: {', '.join(repr(n) for n in h.roi_names) or 'no ROIs'}" for h in headers
        )
        raise _bad(
            f"no parotid ROI matched (3006,0026) ROI Names found: {found}; add the clinic's names to the synonym "
            f"list ({SYNONYMS_FILE})"
        )
    on_ct = [h for h in with_glands if h.frames == {ct_frame}]
    if not on_ct:
        h = with_glands[0]
        frames = ", ".join(sorted(repr(f or "none") for f in h.frames))
        raise _bad(
            f"{_rel(h.path, patient_dir)}: the parotid ROIs reference Frame of Reference {frames} "
            f"((3006,0024) Referenced Frame of Reference UID), the CT's (0020,0052) Frame of Reference UID is "
            f"{ct_frame!r}: the RTSTRUCT was drawn on another CT"
        )
    if len(on_ct) > 1:
        files = ", ".join(_rel(h.path, patient_dir) for h in on_ct)
        raise _bad(f"several RTSTRUCTs with parotid ROIs on this CT ({files}); keep one per patient")
    return on_ct[0]


def find_reference(patient_dir: Path, files: Sequence[Path], ct: Volume, synonyms: Synonyms) -> _StructHeader:
    """The one RTSTRUCT among ``files`` with parotid ROIs on ``ct`` (``.path``; ``.glands``: gland -> ROI names);
    InputError(BAD_TRAINING_DATA) says why there is none."""
    rtstructs = _find_rtstructs(files)
    if not rtstructs:
        raise _bad(f"no RTSTRUCT (RT Structure Set Storage, {RTStructureSetStorage}) among {len(files)} files")
    chosen = _choose_rtstruct(patient_dir, [_read_header(p, synonyms) for p in rtstructs], ct)
    for gland, names in chosen.glands.items():
        if len(names) > 1:
            raise _bad(
                f"{_rel(chosen.path, patient_dir)}: {gland} is ambiguous, ROIs {', '.join(map(repr, names))} all "
                "match it; keep one (or narrow the synonym list)"
            )
    return chosen


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
    chosen = find_reference(patient_dir, files, ct, synonyms)
    wanted = [g for g in GLANDS if g in chosen.glands]
    try:
        masks = read_rtstruct_masks(chosen.path, ct, wanted, synonyms=synonyms)
    except InputError as exc:
        raise _bad(f"RTSTRUCT refused [{exc.code}]: {exc.message}") from None
    kept = {g: np.asarray(m, dtype=bool) for g, m in masks.items() if np.any(m)}
    if not kept:
        matched = ", ".join(repr(n) for g in wanted for n in chosen.glands[g])
        raise _bad(f"{_rel(chosen.path, patient_dir)}: the parotid ROIs ({matched}) have no contours")
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
