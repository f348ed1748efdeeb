"""DICOMDIR (a DICOM File-set's directory, PS3.10 / PS3.3 F) as input: its records name the files to read.

A CD/DVD/USB export from a PACS or planning system holds a ``DICOMDIR`` file at its root and the instances in
sub-folders with 8-character names. Given the DICOMDIR itself, the loader reads the instances it references
(pydicom's :class:`~pydicom.fileset.FileSet`, which follows the directory records) instead of treating the
DICOMDIR as one more non-image object.

Recognised by (0002,0002) Media Storage SOP Class UID 1.2.840.10008.1.3.10 (Media Storage Directory Storage) or,
in a folder walk, by the file name ``DICOMDIR`` (PS3.10 8.6 requires it). Errors name the DICOMDIR: an
unreadable directory, or referenced files that are not there (copy the whole media folder), are CORRUPT_FILE.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet

from service.errors import ErrorCode, InputError

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def is_dicomdir(path: Path) -> bool:
    """True when ``path`` is named ``DICOMDIR`` or its File Meta names Media Storage Directory Storage."""
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            return False
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - not readable as DICOM: not a DICOMDIR (the scan reports the file)
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")).strip() == MEDIA_STORAGE_DIRECTORY


def dicomdir_files(path: Path) -> list[Path]:
    """The files the DICOMDIR at ``path`` references, in record order (patient > study > series > instance).

    Raises CORRUPT_FILE when the DICOMDIR cannot be read as a File-set or any referenced file is missing.
    """
    try:
        ds = pydicom.dcmread(path)
        if "DirectoryRecordSequence" not in ds:
            raise ValueError("no (0004,1220) Directory Record Sequence")
        # (0004,1500) Referenced File ID: path components relative to the DICOMDIR's folder
        referenced = [
            path.parent.joinpath(*_components(rec.ReferencedFileID))
            for rec in ds.DirectoryRecordSequence
            if rec.get("ReferencedFileID")
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FileSet warns for, and skips, records whose file is missing
            fileset = FileSet(ds)
    except Exception as exc:  # pydicom raises many types for a damaged directory
        raise InputError(
            ErrorCode.CORRUPT_FILE, f"{path}: a DICOMDIR that cannot be read as a DICOM File-set ({exc})"
        ) from exc
    files = [Path(instance.path) for instance in fileset]
    missing = [f for f in referenced if not f.is_file()]
    if missing:
        raise InputError(
            ErrorCode.CORRUPT_FILE,
            f"{path}: the DICOMDIR references {len(referenced)} file(s) of which {len(missing)} do not exist (e.g. "
            f"{missing[0]}); give the whole folder of the medium, not the DICOMDIR alone",
        )
    log.info("DICOMDIR: %d referenced file(s)", len(files))
    return files


def _components(file_id: object) -> list[str]:
    """(0004,1500) Referenced File ID (CS, 1-8 values) as a list of path components."""
    return [str(file_id)] if isinstance(file_id, str) else [str(c) for c in file_id]  # type: ignore[attr-defined]
