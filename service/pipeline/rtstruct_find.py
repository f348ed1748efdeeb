"""Find a patient's reference RTSTRUCT among its files, and ROI-name synonym files (shared by the training DICOM
reader and ``parotid-seg evaluate``).

Every RTSTRUCT among the files is identified by (0002,0002) Media Storage SOP Class UID (or (0008,0016) SOP Class
UID) = RT Structure Set Storage; its (3006,0020) Structure Set ROI Sequence > (3006,0026) ROI Name are matched to
``Parotid_L`` / ``Parotid_R`` through the synonym list (:func:`service.pipeline.rtstruct_read.match_roi_name`), and
its frame ((3006,0020) > (3006,0024) Referenced Frame of Reference UID, or (3006,0010) Referenced Frame of
Reference Sequence > (0020,0052) Frame of Reference UID) must be the CT's (0020,0052) Frame of Reference UID.
Problems raise ``InputError(BAD_REFERENCE)`` naming the file (the training reader reports them as
BAD_TRAINING_DATA).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import RTStructureSetStorage

from service.errors import ErrorCode, InputError
from service.pipeline.rtstruct_read import DEFAULT_SYNONYMS, match_roi_name
from service.pipeline.series_scan import read_dataset
from service.pipeline.volume import Volume

GLANDS = ("Parotid_L", "Parotid_R")
SYNONYMS_FILE = "roi_synonyms.json"

Synonyms = Mapping[str, Sequence[str]]


def _bad(message: str) -> InputError:
    return InputError(ErrorCode.BAD_REFERENCE, message)


def load_synonyms(path: Path, *, extend_defaults: bool = True) -> dict[str, tuple[str, ...]]:
    """ROI-name synonyms from a JSON file ``{"Parotid_L": [...], "Parotid_R": [...]}``.

    With ``extend_defaults`` the names are added to :data:`DEFAULT_SYNONYMS`; otherwise they replace them (a
    gland missing from the file then matches only its own name). Raises InputError(BAD_REFERENCE) naming the
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
class StructHeader:
    path: Path
    frames: set[str]  # Frame of Reference UIDs the matched parotid ROIs reference
    roi_names: list[str]  # every (3006,0026) ROI Name in the file
    glands: dict[str, list[str]]  # gland -> ROI names matched to it


def sop_class(path: Path) -> str | None:
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
    return [p for p in files if sop_class(p) == RTStructureSetStorage]


def _read_header(path: Path, synonyms: Synonyms) -> StructHeader:
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
    return StructHeader(path, frames, names, glands)


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _choose_rtstruct(patient_dir: Path, headers: list[StructHeader], ct: Volume) -> StructHeader:
    ct_frame = ct.info.frame_of_reference_uid if ct.info is not None else ""
    with_glands = [h for h in headers if h.glands]
    if not with_glands:
        found = "; ".join(
            f"{rel(h.path, patient_dir)}: {', '.join(repr(n) for n in h.roi_names) or 'no ROIs'}" for h in headers
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
            f"{rel(h.path, patient_dir)}: the parotid ROIs reference Frame of Reference {frames} "
            f"((3006,0024) Referenced Frame of Reference UID), the CT's (0020,0052) Frame of Reference UID is "
            f"{ct_frame!r}: the RTSTRUCT was drawn on another CT"
        )
    if len(on_ct) > 1:
        files = ", ".join(rel(h.path, patient_dir) for h in on_ct)
        raise _bad(f"several RTSTRUCTs with parotid ROIs on this CT ({files}); keep one per patient")
    return on_ct[0]


def find_reference(patient_dir: Path, files: Sequence[Path], ct: Volume, synonyms: Synonyms) -> StructHeader:
    """The one RTSTRUCT among ``files`` with parotid ROIs on ``ct`` (``.path``; ``.glands``: gland -> ROI names);
    InputError(BAD_REFERENCE) says why there is none."""
    rtstructs = _find_rtstructs(files)
    if not rtstructs:
        raise _bad(f"no RTSTRUCT (RT Structure Set Storage, {RTStructureSetStorage}) among {len(files)} files")
    chosen = _choose_rtstruct(patient_dir, [_read_header(p, synonyms) for p in rtstructs], ct)
    for gland, names in chosen.glands.items():
        if len(names) > 1:
            raise _bad(
                f"{rel(chosen.path, patient_dir)}: {gland} is ambiguous, ROIs {', '.join(map(repr, names))} all "
                "match it; keep one (or narrow the synonym list)"
            )
    return chosen
