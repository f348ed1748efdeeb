"""Corpus cases from issue 16 (hostile or broken senders): a deflate bomb among the slices, a series too large for
the memory budget in 0.7 MB of deflated slices, physically absurd geometry, a JPEG 2000 codestream larger than its
Rows/Columns, a 10,005-character Patient's Name, overlapping and folder-padded zips, an over-long multipart
boundary. The memory-bound and process-level checks are in tests/service/test_inflate_limits.py,
test_size_limits.py, test_zip_guard.py and tests/listener/test_hostile_senders.py."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests import dicom_variants as dv
from tests.corpus.model import Case, DicomExpect, HttpCall, HttpExpect
from tests.corpus.request_cases import MAX_UPLOAD_FILES, NA_ARCHIVE, NA_REQUEST, _http_only, _zip_part
from tests.corpus.series_cases import N_SLICES, both, job, ok, refused, rejected_series, write_series
from tests.hostile_files import deflate_bomb
from tests.service.test_zip_guard import folders_zip, overlapping_zip


def deflate_bomb_slice(d: Path) -> Case:
    f = write_series(d)
    deflate_bomb(f[10], f[10], 128 * 2**20)
    return both(
        "deflate_bomb_slice",
        "one slice in Deflated Explicit VR LE, 130 KB inflating to 128 MiB (limit 64 MiB, measured before parsing)",
        f,
        HttpExpect(413, "INFLATED_TOO_LARGE"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA700": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


def over_memory_budget(d: Path) -> Case:
    f = write_series(d)
    zeros = bytes(4096 * 4096 * 2)
    for p in f:
        ds = pydicom.dcmread(p)
        ds.Rows = ds.Columns = 4096
        ds.PixelSpacing = ["0.2", "0.2"]
        ds.PixelData = zeros
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(p, enforce_file_format=True)
    return both(
        "over_memory_budget",
        "20 deflated slices of 4096 x 4096 (0.7 MB sent, 335 M voxels: ~16 GB to process, budget 8 GiB)",
        f,
        HttpExpect(413, "TOO_LARGE"),
        rejected_series("TOO_LARGE"),
    )


def _respace(files: list[Path], pixel_mm: float | None = None, dz_mm: float | None = None, dx_mm: float = 0.0):
    for k, p in enumerate(files):
        x, y, z = dv.position(p)
        if dz_mm is not None:
            z = k * dz_mm
        dv.set_attrs(p, ImagePositionPatient=[f"{x + dx_mm:.16g}"[:16], f"{y:.16g}"[:16], f"{z:.16g}"[:16]])
        if pixel_mm is not None:
            dv.set_attrs(p, PixelSpacing=[str(pixel_mm), str(pixel_mm)])


def twenty_mm_pixels(d: Path) -> Case:
    f = write_series(d)
    _respace(f, pixel_mm=20.0)
    return both(
        "twenty_mm_pixels",
        "(0028,0030) Pixel Spacing 20 mm",
        f,
        refused("IMPLAUSIBLE_GEOMETRY"),
        rejected_series("IMPLAUSIBLE_GEOMETRY"),
    )


def slices_far_apart(d: Path) -> Case:
    f = write_series(d)
    _respace(f, dz_mm=1e9)
    return both(
        "slices_far_apart",
        "slices 1e9 mm apart",
        f,
        refused("IMPLAUSIBLE_GEOMETRY"),
        rejected_series("IMPLAUSIBLE_GEOMETRY"),
    )


def positions_far_away(d: Path) -> Case:
    f = write_series(d)
    _respace(f, dx_mm=1e15)
    return both(
        "positions_far_away",
        "(0020,0032) Image Position (Patient) 1e15 mm from the origin (no 16-character DS could hold the contours)",
        f,
        refused("IMPLAUSIBLE_GEOMETRY"),
        rejected_series("IMPLAUSIBLE_GEOMETRY"),
    )


def j2k_codestream_too_large(d: Path) -> Case:
    f = write_series(d)
    dv.compress(f, "j2k-lossless")

    def forge(ds: pydicom.Dataset) -> None:
        frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
        at = frame.find(b"\xff\x4f\xff\x51")
        frame[at + 8 : at + 16] = struct.pack(">II", 16384, 16384)
        ds.PixelData = encapsulate([bytes(frame)])

    dv.edit(f[5], forge)
    return both(
        "j2k_codestream_too_large",
        "JPEG 2000 Lossless, one codestream declaring 16384 x 16384 in a 48 x 48 image",
        f,
        job("failed", "PIXEL_DATA_ERROR"),
        DicomExpect(statuses=ok(N_SLICES), outcomes=("failed:PIXEL_DATA_ERROR",)),
    )


def patient_name_10005_chars(d: Path) -> Case:
    f = write_series(d, patient_name="Long^" + "N" * 10000)
    return both(
        "patient_name_10005_chars",
        "a Patient's Name of 10,005 characters (PN: 64 per group): truncated in the RTSTRUCT, QA flag "
        "`patient_values_conformed`",
        f,
        job("succeeded"),
        DicomExpect(statuses=ok(N_SLICES), outcomes=("succeeded",)),
    )


def zip_overlapping_entries(d: Path) -> Case:
    return _http_only(
        "zip_overlapping_entries",
        "a zip whose central directory lists one 64 KiB stored entry 40 times (the same bytes)",
        _zip_part(overlapping_zip(40, bytes(range(256)) * 256)),
        HttpExpect(400, "UNSAFE_ARCHIVE"),
        NA_ARCHIVE,
    )


def zip_folder_records(d: Path) -> Case:
    return _http_only(
        "zip_folder_records",
        f"a zip with one file and {MAX_UPLOAD_FILES} folder entries (every record counts)",
        _zip_part(folders_zip(MAX_UPLOAD_FILES)),
        HttpExpect(413, "TOO_MANY_FILES"),
        NA_ARCHIVE,
    )


def multipart_boundary_too_long(d: Path) -> Case:
    boundary = "b" * 300
    part = 'Content-Disposition: form-data; name="files"; filename="a.dcm"\r\n\r\nx\r\n'
    body = f"--{boundary}\r\n{part}--{boundary}--\r\n".encode()
    return _http_only(
        "multipart_boundary_too_long",
        "a multipart boundary of 300 characters",
        HttpCall(content=body, content_type=f"multipart/form-data; boundary={boundary}"),
        HttpExpect(400, "BAD_UPLOAD"),
        NA_REQUEST,
    )


HOSTILE_SERIES_CASES = [
    deflate_bomb_slice,
    over_memory_budget,
    twenty_mm_pixels,
    slices_far_apart,
    positions_far_away,
    j2k_codestream_too_large,
    patient_name_10005_chars,
]
HOSTILE_REQUEST_CASES = [zip_overlapping_entries, zip_folder_records, multipart_boundary_too_long]
