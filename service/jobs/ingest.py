"""Checks run when a job is submitted (headers only, no pixel decoding) and the job's idempotency key.

``check_series`` runs the pipeline's own header stages (``series_scan``, ``series_geometry``, ``series_pixels``)
on the uploaded files, so a bad series is refused at once with the pipeline's code and message; decoding and
inference happen in the worker. It also hashes the pixel data of the chosen series slice by slice in spatial
order: the bytes from (7FE0,0010) Pixel Data to the end of each file, so header-only differences (a resend with
another (0008,0013) Instance Creation Time) keep the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import RTStructureSetStorage

from service.errors import ErrorCode, InputError
from service.jobs.models import MANIFEST_FILE
from service.pipeline.inflate import check_deflated_path
from service.pipeline.series import check_series_headers
from service.pipeline.series_scan import CtFile, tag_label

_DEFLATED = "1.2.840.10008.1.2.1.99"


@dataclass(frozen=True)
class SeriesCheck:
    series_instance_uid: str
    n_files: int
    pixel_digest: str  # sha256 over the slices' pixel data, in increasing z


def _pixel_bytes_digest(f: CtFile) -> bytes:
    """SHA-256 of the file from (7FE0,0010) Pixel Data onwards (the whole file for a deflated transfer syntax)."""
    h = hashlib.sha256()
    with open(f.path, "rb") as fp:
        if str(f.ds.file_meta.get("TransferSyntaxUID", "")) != _DEFLATED:
            pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        else:
            fp.seek(0)
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def check_series(
    inputs: Path | list[Path],
    *,
    series_uid: str | None,
    min_slices: int,
    model_spacing_mm_zyx: tuple[float, float, float] | None = None,
    memory_budget: int | None = None,
) -> SeriesCheck:
    """Find, validate (headers, geometry, memory budget) and fingerprint the CT series; raises InputError like
    load_series."""
    uid, files, layout, _ = check_series_headers(
        inputs,
        series_uid=series_uid,
        min_slices=min_slices,
        model_spacing_mm_zyx=model_spacing_mm_zyx,
        memory_budget=memory_budget,
    )
    h = hashlib.sha256()
    for idx in layout.order:
        h.update(_pixel_bytes_digest(files[idx]))
    return SeriesCheck(uid, len(files), h.hexdigest())


def check_reference(path: Path) -> str:
    """A reference must be an RT Structure Set: (0008,0016) SOP Class UID 1.2.840.10008.5.1.4.1.1.481.3.
    Returns the SHA-256 of the file (part of the idempotency key: another reference gives another QA)."""
    check_deflated_path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for garbage
        raise InputError(ErrorCode.BAD_REFERENCE, f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != RTStructureSetStorage:
        raise InputError(
            ErrorCode.BAD_REFERENCE,
            f"{path}: not an RTSTRUCT: {tag_label('SOPClassUID')} is {sop_class or 'missing'!r}, expected "
            f"{RTStructureSetStorage} (RT Structure Set Storage)",
        )
    return hashlib.sha256(path.read_bytes()).hexdigest()


def idempotency_key(owner: str, check: SeriesCheck, model_spec: str, reference_digest: str | None) -> str:
    """Same owner + series UID + pixel data + model name:version (+ reference file) -> same key."""
    parts = [owner, check.series_instance_uid, check.pixel_digest, model_spec, reference_digest or "-"]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def write_manifest(folder: Path, names: dict[str, str]) -> None:
    """``{stored path relative to the job folder: name as uploaded}``, for messages only."""
    (folder / MANIFEST_FILE).write_text(json.dumps(names, indent=1, sort_keys=True))


def read_manifest(folder: Path) -> dict[str, str]:
    try:
        return dict(json.loads((folder / MANIFEST_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def describe_paths(message: str, folder: Path, names: dict[str, str] | None = None) -> str:
    """Replace server paths under ``folder`` in a pipeline message by the names the client uploaded."""
    names = read_manifest(folder) if names is None else names
    pattern = re.compile(re.escape(str(folder)) + r"/([^\s:,;()'\"]+)")

    def repl(m: re.Match[str]) -> str:
        rel = m.group(1)
        return f"'{names[rel]}'" if rel in names else rel

    return pattern.sub(repl, message)
