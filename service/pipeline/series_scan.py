"""Find the DICOM files among the inputs, read their headers (no pixels) and pick the one CT series.

Reads, per file: the 128-byte preamble and ``DICM`` prefix, the File Meta Information ((0002,0002) Media Storage
SOP Class UID, (0002,0010) Transfer Syntax UID) and the data set up to (7FE0,0010) Pixel Data
(``stop_before_pixels``). Classification uses (0008,0016) SOP Class UID, (0008,0060) Modality,
(0028,0010) Rows, (0028,0008) Number of Frames and (0020,000E) Series Instance UID. The chosen series must be
labelled (0008,0060) Modality CT, and its (0020,000E) Series, (0020,000D) Study, (0020,0052) Frame of Reference and
(0008,0018) SOP Instance UIDs must be valid UIDs.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from service.errors import ErrorCode, InputError
from service.pipeline.dicomdir import MEDIA_STORAGE_DIRECTORY, dicomdir_files, is_dicomdir
from service.pipeline.inflate import check_deflated_file

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Multi-frame CT objects: recognised so they can be refused clearly instead of ignored.
MULTIFRAME_CT_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
_DEFLATED = "1.2.840.10008.1.2.1.99"


def tag_label(keyword: str) -> str:
    """``(gggg,eeee) Keyword`` for messages."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return keyword if tag is None else f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}"


@dataclass
class CtFile:
    """One CT Image Storage file: its path and header data set (read without pixel data)."""

    path: Path
    ds: Dataset
    multiframe: bool = False


@dataclass
class ScanResult:
    n_files: int = 0
    n_dicom: int = 0
    ct_series: dict[str, list[CtFile]] = field(default_factory=dict)
    # (SOP class name, modality) -> number of files, for images that are not CT Image Storage
    other_images: Counter[tuple[str, str]] = field(default_factory=Counter)
    # series UID -> modality of non-CT images, to explain a --series-uid that names one
    other_series: dict[str, str] = field(default_factory=dict)
    # SOP class name -> number of files, for DICOM objects that are not images (RTSTRUCT, SR, DICOMDIR, ...)
    other_objects: Counter[str] = field(default_factory=Counter)


def list_input_files(inputs: Path | str | Sequence[Path | str]) -> list[Path]:
    """All files under the inputs (folders recursively, symlinked folders not followed), deduplicated. A DICOMDIR
    given as a file stands for the files its records reference (:mod:`service.pipeline.dicomdir`); in a folder, the
    referenced files are read from the folder itself."""
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    files: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        root = Path(item)
        if root.is_dir():
            found: list[Path] = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                found.extend(Path(dirpath) / name for name in sorted(filenames))
        elif root.is_file():
            found = [root]
        else:
            raise InputError(ErrorCode.EMPTY_INPUT, f"{root}: no such file or folder")
        if not root.is_dir() and is_dicomdir(root):
            found = dicomdir_files(root)
        for path in found:
            key = path.resolve()
            if key not in seen and path.is_file():
                seen.add(key)
                files.append(path)
    return files


def _transfer_syntax(ds: Dataset) -> UID:
    """(0002,0010) Transfer Syntax UID, or the one the reader detected for a data set without File Meta."""
    ts = getattr(ds.file_meta, "TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    if ts:
        return UID(str(ts))
    implicit, little = ds.original_encoding
    syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return syntax


def read_dataset(path: Path, *, stop_before_pixels: bool) -> tuple[Dataset | None, str]:
    """The data set of ``path`` (None when it is not DICOM) and, for a header read, a Pixel Data problem ('' if none).

    Not DICOM: no ``DICM`` prefix at byte 128 and not a bare data set (first tag in group 0002 or 0008) that
    pydicom can parse. A file *with* the ``DICM`` prefix that cannot be parsed raises CORRUPT_FILE.
    """
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below; open errors are input errors
    except OSError as exc:
        raise InputError(ErrorCode.CORRUPT_FILE, f"{path}: cannot be read ({exc.strerror or exc})") from exc
    with fp:
        head = fp.read(132)
        fp.seek(0)
        has_prefix = len(head) == 132 and head[128:132] == b"DICM"
        if not has_prefix and head[:2] not in (b"\x02\x00", b"\x08\x00"):
            return None, ""
        if has_prefix:
            check_deflated_file(fp, path)  # INFLATED_TOO_LARGE before pydicom inflates it whole
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, force=not has_prefix)
            if getattr(ds, "buffer", None) is not None:
                ds.buffer = None  # a deflated file's whole inflated data set: never kept with the header
            _transfer_syntax(ds)
            problem = _pixel_data_problem(fp, ds) if stop_before_pixels else ""
        except Exception as exc:  # pydicom raises many types for bad input
            if not has_prefix:
                return None, ""
            raise InputError(ErrorCode.CORRUPT_FILE, f"{path}: not a readable DICOM file ({exc})") from exc
    if not has_prefix and "SOPClassUID" not in ds:
        return None, ""
    return ds, problem


def _pixel_data_problem(fp: BinaryIO, ds: Dataset) -> str:
    """After a ``stop_before_pixels`` read: '' when (7FE0,0010) Pixel Data follows in full, else why not."""
    ts = _transfer_syntax(ds)
    if ts == _DEFLATED:
        return ""  # the file position is inside the deflated stream: checked when pixels are read
    pos = fp.tell()
    size = os.fstat(fp.fileno()).st_size
    little = ts != ExplicitVRBigEndian
    header = fp.read(8 if ts == ImplicitVRLittleEndian else 12)
    pixel_tag = b"\xe0\x7f\x10\x00" if little else b"\x7f\xe0\x00\x10"
    if len(header) < 8 or header[:4] != pixel_tag:
        return f"the file ends at byte {pos} without (7FE0,0010) Pixel Data (truncated?)"
    fmt = "<I" if little else ">I"
    length = struct.unpack(fmt, header[4:8] if ts == ImplicitVRLittleEndian else header[8:12])[0]
    if length != 0xFFFFFFFF and pos + len(header) + length > size:
        return f"(7FE0,0010) Pixel Data needs {length} bytes but the file ends after {size - pos - len(header)}"
    return ""


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _sop_class(path: Path, ds: Dataset) -> str:
    """(0002,0002) Media Storage SOP Class UID, which must agree with (0008,0016) SOP Class UID when both exist."""
    in_meta = _str(ds.file_meta, "MediaStorageSOPClassUID")
    in_dataset = _str(ds, "SOPClassUID")
    if in_meta and in_dataset and in_meta != in_dataset:
        raise InputError(
            ErrorCode.CORRUPT_FILE,
            f"{path}: {tag_label('MediaStorageSOPClassUID')} {in_meta} differs from {tag_label('SOPClassUID')} "
            f"{in_dataset} (truncated or damaged file?)",
        )
    if not (in_meta or in_dataset):
        raise InputError(ErrorCode.CORRUPT_FILE, f"{path}: no {tag_label('SOPClassUID')} (truncated file?)")
    return in_meta or in_dataset


def scan_inputs(inputs: Path | str | Sequence[Path | str]) -> ScanResult:
    """Read every header once and group the CT Image Storage files by (0020,000E) Series Instance UID."""
    result = ScanResult()
    for path in list_input_files(inputs):
        result.n_files += 1
        ds, pixel_problem = read_dataset(path, stop_before_pixels=True)
        if ds is None:
            continue
        result.n_dicom += 1
        sop_class = _sop_class(path, ds)
        is_ct = sop_class == CT_IMAGE_STORAGE or sop_class in MULTIFRAME_CT_STORAGE
        is_image = is_ct or "Rows" in ds or "Image Storage" in UID(sop_class).name
        if not is_image:
            result.other_objects[UID(sop_class).name] += 1  # RTSTRUCT, RTPLAN, SR, presentation states, DICOMDIR
            continue
        if pixel_problem:
            raise InputError(ErrorCode.CORRUPT_FILE, f"{path}: {pixel_problem}")
        series_uid = _str(ds, "SeriesInstanceUID")
        if not is_ct:
            result.other_images[(UID(sop_class).name, _str(ds, "Modality") or "?")] += 1
            result.other_series[series_uid] = _str(ds, "Modality") or UID(sop_class).name
            continue
        if not series_uid:
            raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{path}: missing {tag_label('SeriesInstanceUID')}")
        frames = ds.get("NumberOfFrames")
        multiframe = sop_class in MULTIFRAME_CT_STORAGE or (frames is not None and int(frames or 1) > 1)
        result.ct_series.setdefault(series_uid, []).append(CtFile(path, ds, multiframe))
    log.debug("scanned %d files: %d DICOM, %d CT series", result.n_files, result.n_dicom, len(result.ct_series))
    return result


_UID_SYNTAX = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def uid_problem(value: str) -> str:
    """'' when ``value`` can be referenced as a UID: at most 64 characters of digit components separated by single
    dots; else why not (the value itself is not echoed). Components with a leading zero break PS3.5 9.1 but were
    written by some older scanners; they are accepted (refusing real patients' scans for it helps nobody, and the
    listener accepts them too), and logged."""
    if len(value) > 64:
        return f"is {len(value)} characters long (at most 64)"
    if not _UID_SYNTAX.match(value):
        return "is not digits separated by single dots"
    if not UID(value).is_valid:
        log.warning("UID with a leading-zero component accepted")
    return ""


def _check_ct_labels(files: list[CtFile]) -> None:
    """The chosen series' images must say they are CT and carry valid UIDs. (0008,0060) Modality must be ``CT``
    (a CT Image Storage object labelled MR or PT: NOT_CT; none: MISSING_ATTRIBUTE). (0020,000E) Series Instance
    UID, (0020,000D) Study Instance UID, (0020,0052) Frame of Reference UID and (0008,0018) SOP Instance UID, where
    present, must be valid UIDs (INVALID_ATTRIBUTE: the RTSTRUCT would reference them); missing ones are reported
    by the later checks."""
    for f in files:
        modality = _str(f.ds, "Modality")
        if not modality:
            raise InputError(ErrorCode.MISSING_ATTRIBUTE, f"{f.path}: missing {tag_label('Modality')}")
        if modality.upper() != "CT":
            raise InputError(
                ErrorCode.NOT_CT,
                f"{f.path}: {tag_label('Modality')} is '{modality[:16]}', not CT, in a CT Image Storage object; "
                "only CT images are segmented",
            )
        for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
            value = _str(f.ds, keyword)
            problem = uid_problem(value) if value else ""
            if problem:
                raise InputError(ErrorCode.INVALID_ATTRIBUTE, f"{f.path}: {tag_label(keyword)} {problem}")


def _describe(uid: str, files: list[CtFile]) -> str:
    desc = _str(files[0].ds, "SeriesDescription")
    kind = ", multi-frame (not supported)" if any(f.multiframe for f in files) else ""
    return f"{uid} ({len(files)} files, SeriesDescription '{desc}'{kind})"


def select_series(scan: ScanResult, series_uid: str | None) -> tuple[str, list[CtFile]]:
    """The CT series to load, or an InputError that explains what was found instead."""
    if scan.n_dicom == 0:
        where = f"{scan.n_files} file(s)" if scan.n_files else "no files"
        raise InputError(ErrorCode.EMPTY_INPUT, f"no DICOM files in the input ({where} read)")
    if series_uid is not None and series_uid not in scan.ct_series:
        if series_uid in scan.other_series:
            raise InputError(
                ErrorCode.NOT_CT, f"series {series_uid} is {scan.other_series[series_uid]}, not CT Image Storage"
            )
        listing = "; ".join(_describe(u, f) for u, f in scan.ct_series.items()) or "none"
        raise InputError(ErrorCode.SERIES_NOT_FOUND, f"no CT series {series_uid} in the input; CT series: {listing}")
    if not scan.ct_series:
        if scan.other_images:
            kinds = ", ".join(f"{n} x {name} (Modality {mod})" for (name, mod), n in scan.other_images.items())
            raise InputError(ErrorCode.NOT_CT, f"no CT Image Storage files; found only other images: {kinds}")
        kinds = ", ".join(f"{n} x {name}" for name, n in sorted(scan.other_objects.items()))
        hint = (
            "; a DICOMDIR only lists the files of a medium: give its folder, or the DICOMDIR with the files next to it"
            if UID(MEDIA_STORAGE_DIRECTORY).name in scan.other_objects
            else ""
        )
        raise InputError(ErrorCode.NO_CT_SERIES, f"{scan.n_dicom} DICOM file(s) but no images: {kinds}{hint}")
    if series_uid is None:
        if len(scan.ct_series) > 1:
            listing = "; ".join(_describe(u, f) for u, f in scan.ct_series.items())
            raise InputError(
                ErrorCode.MULTIPLE_SERIES,
                f"{len(scan.ct_series)} CT series in the input, choose one by its series UID: {listing}",
            )
        series_uid = next(iter(scan.ct_series))
    files = scan.ct_series[series_uid]
    multi = [f for f in files if f.multiframe]
    if multi:
        sop = _str(multi[0].ds, "SOPClassUID")
        raise InputError(
            ErrorCode.MULTIFRAME_NOT_SUPPORTED,
            f"{multi[0].path}: {MULTIFRAME_CT_STORAGE.get(sop, 'multi-frame CT')} ({tag_label('NumberOfFrames')} "
            f"{_str(multi[0].ds, 'NumberOfFrames') or '?'}) is not supported; export the series as single-frame "
            "CT Image Storage (1.2.840.10008.5.1.4.1.1.2)",
        )
    _check_ct_labels(files)
    return series_uid, files
