"""DICOM-shaped corpus cases: a small CT series (the oracle phantom, 20 x 48 x 48 at 2.5 x 4 x 4 mm, HFS) broken in
one way each. Every case is sent over HTTP (all files in one upload) and over DICOM (the same files, bytes as
stored, in one association) unless the case says why DICOM does not apply.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid
from pynetdicom.dsutils import split_dataset

from tests import dicom_variants as dv
from tests.corpus.model import DROPPED, NO_CONTEXT, Case, DicomExpect, DicomSend, FilePart, HttpCall, HttpExpect
from tests.dicom_factory import write_ct_series

N_SLICES = 20
PLANE_YX = (48, 48)
SPACING_MM_ZYX = (2.5, 4.0, 4.0)
ORIGIN_LPS = (-94.0, -94.0, -60.0)
HOSTILE_NAME = "Robert'); DROP TABLE jobs;--^%s%n${jndi:ldap://127.0.0.1/x}"
NOT_A_UID = "../../../../tmp/parotid-corpus-series"
LONG_UID = "1.2.826.0.1.3680043.8.498." + "1" * 40  # 66 characters


def write_series(folder: Path, n_slices: int = N_SLICES, **kwargs) -> list[Path]:
    """The oracle phantom as a CT series in ``folder`` (new UIDs each call); files sorted by z (inferior first)."""
    from tests.bundle_factory import oracle_phantom

    hu, _ = oracle_phantom((n_slices, *PLANE_YX))
    files = write_ct_series(folder, hu, SPACING_MM_ZYX, ORIGIN_LPS, "HFS", **kwargs)
    return sorted(files, key=lambda p: dv.position(p)[2])


def parts(files: list[Path], name=lambda p: p.name) -> list[FilePart]:
    return [("files", (name(p), p.read_bytes(), "application/dicom")) for p in files]


def ok(n: int) -> dict[str, int]:
    return {"0x0000": n}


def both(name: str, what: str, files: list[Path], http: HttpExpect, dicom: DicomExpect, gap: str = "") -> Case:
    return Case(name, what, HttpCall(files=parts(files)), http, DicomSend(list(files)), dicom, gap=gap)


def refused(code: str) -> HttpExpect:
    return HttpExpect(422, code)


def job(state: str, code: str | None = None) -> HttpExpect:
    return HttpExpect(202, code, state)


def rejected_series(code: str, statuses: dict[str, int] | None = None) -> DicomExpect:
    """Every instance stored, then the pipeline's header checks refuse the series when it becomes a job."""
    return DicomExpect(statuses=statuses or ok(N_SLICES), outcomes=(f"rejected:{code}",))


# ---------------------------------------------------------------------------------------------- file-level damage
def truncated_header(d: Path) -> Case:
    f = write_series(d)
    dv.truncate(f[8], 400)
    return both(
        "truncated_header",
        "one file cut after 400 bytes (inside the data set)",
        f,
        refused("CORRUPT_FILE"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA900": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


def truncated_pixel_data(d: Path) -> Case:
    f = write_series(d)
    dv.truncate(f[8], f[8].stat().st_size - 100)
    # DICOM: the C-STORE handler refuses the short Pixel Data (0xA900); the rest of the series leaves a gap
    return both(
        "truncated_pixel_data",
        "one file missing the last 100 bytes of (7FE0,0010) Pixel Data",
        f,
        refused("CORRUPT_FILE"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA900": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


def garbage_dataset(d: Path) -> Case:
    f = write_series(d)
    _, offset = split_dataset(f[8])
    noise = np.random.default_rng(5).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    f[8].write_bytes(f[8].read_bytes()[:offset] + noise)
    return both(
        "garbage_dataset",
        "one file: valid preamble and File Meta, then random bytes",
        f,
        refused("CORRUPT_FILE"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA900": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


def short_pixel_data(d: Path) -> Case:
    f = write_series(d)
    dv.edit(f[5], lambda ds: setattr(ds, "PixelData", ds.PixelData[:-256]))
    return both(
        "short_pixel_data",
        "one file's Pixel Data element complete but shorter than Rows x Columns",
        f,
        job("failed", "CORRUPT_FILE"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA900": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


def missing_pixel_data(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[10], PixelData=None)
    return both(
        "missing_pixel_data",
        "one image without (7FE0,0010) Pixel Data",
        f,
        refused("CORRUPT_FILE"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA900": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


# ---------------------------------------------------------------------------------------------- wrong objects
def mr_series(d: Path) -> Case:
    f = write_series(d)
    dv.convert_modality(f)
    return both(
        "mr_series",
        "an MR Image Storage series (wrong modality)",
        f,
        refused("NOT_CT"),
        DicomExpect(statuses={DROPPED: N_SLICES}),
    )


def ct_labelled_mr(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f, Modality="MR")
    return both(
        "ct_labelled_mr",
        "CT Image Storage objects with (0008,0060) Modality MR",
        f,
        refused("NOT_CT"),
        DicomExpect(statuses={"0xA900": N_SLICES}),
    )


def rtstruct_only(d: Path) -> Case:
    rs = dv.write_rtstruct_like(d / "RS.dcm")
    return both(
        "rtstruct_only",
        "only an RT Structure Set, no images",
        [rs],
        refused("NO_CT_SERIES"),
        DicomExpect(statuses={DROPPED: 1}),
    )


def enhanced_ct(d: Path) -> Case:
    src = write_series(d / "src")
    mf = dv.write_enhanced_ct(d / "enhanced.dcm", src)
    shutil.rmtree(d / "src")
    return both(
        "enhanced_ct",
        "the series as one multi-frame Enhanced CT object",
        [mf],
        refused("MULTIFRAME_NOT_SUPPORTED"),
        DicomExpect(statuses={DROPPED: 1}),
    )


def mixed_series(d: Path) -> Case:
    f = write_series(d / "a") + write_series(d / "b")
    return both(
        "mixed_series",
        "two CT series in one upload / association",
        f,
        refused("MULTIPLE_SERIES"),
        DicomExpect(statuses=ok(2 * N_SLICES), outcomes=("succeeded", "succeeded")),
    )


def inconsistent_patient(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[3], PatientID="OTHER-PATIENT")
    return both(
        "inconsistent_patient",
        "one slice of the series with another (0010,0020) Patient ID",
        f,
        refused("INCONSISTENT_SERIES"),
        rejected_series("INCONSISTENT_SERIES"),
    )


def other_frame_of_reference(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[9], FrameOfReferenceUID=generate_uid())
    return both(
        "other_frame_of_reference",
        "one slice in another (0020,0052) Frame of Reference",
        f,
        refused("INCONSISTENT_GEOMETRY"),
        rejected_series("INCONSISTENT_GEOMETRY"),
    )


# ---------------------------------------------------------------------------------------------- geometry
def gap(d: Path) -> Case:
    f = write_series(d)
    f.pop(10).unlink()
    return both(
        "gap",
        "a missing slice in the middle (5 mm gap in 2.5 mm spacing)",
        f,
        refused("NONUNIFORM_SPACING"),
        rejected_series("NONUNIFORM_SPACING", ok(N_SLICES - 1)),
    )


def uneven_spacing(d: Path) -> Case:
    f = write_series(d)
    dv.set_position(f[12], dv.position(f[12]) + [0, 0, 0.6])
    return both(
        "uneven_spacing",
        "one slice 0.6 mm off the regular grid",
        f,
        refused("NONUNIFORM_SPACING"),
        rejected_series("NONUNIFORM_SPACING"),
    )


def duplicate_position(d: Path) -> Case:
    f = write_series(d)
    dup = d / "dup.dcm"
    dv.copy_as_new_instance(f[6], dup)
    return both(
        "duplicate_position",
        "two instances (different SOP Instance UIDs) at one position",
        f + [dup],
        refused("DUPLICATE_POSITION"),
        rejected_series("DUPLICATE_POSITION", ok(N_SLICES + 1)),
    )


def same_instance_twice(d: Path) -> Case:
    f = write_series(d)
    again = d / "again.dcm"
    shutil.copyfile(f[6], again)
    # DICOM: a resent instance replaces the spooled copy (a normal sender retry), so the series is complete
    return both(
        "same_instance_twice",
        "one file sent twice (same SOP Instance UID)",
        f + [again],
        refused("DUPLICATE_POSITION"),
        DicomExpect(statuses=ok(N_SLICES + 1), outcomes=("succeeded",)),
    )


def gantry_tilt_tag(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f, GantryDetectorTilt="15")
    return both(
        "gantry_tilt_tag",
        "(0018,1120) Gantry/Detector Tilt 15 degrees",
        f,
        refused("GANTRY_TILT"),
        rejected_series("GANTRY_TILT"),
    )


def gantry_tilt_positions(d: Path) -> Case:
    f = write_series(d)
    for n, p in enumerate(f):
        dv.set_position(p, dv.position(p) + [0, 0.5 * n, 0])
    return both(
        "gantry_tilt_positions",
        "positions slide 0.5 mm in y per slice (tilt not in the tags)",
        f,
        refused("GANTRY_TILT"),
        rejected_series("GANTRY_TILT"),
    )


def oblique(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f, ImageOrientationPatient=["0.98480775", "0", "0.17364818", "0", "1", "0"])
    return both(
        "oblique",
        "images 10 degrees oblique",
        f,
        refused("OBLIQUE_ORIENTATION"),
        rejected_series("OBLIQUE_ORIENTATION"),
    )


def sagittal(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f, ImageOrientationPatient=["0", "1", "0", "0", "0", "-1"])
    return both(
        "sagittal", "a sagittal series", f, refused("OBLIQUE_ORIENTATION"), rejected_series("OBLIQUE_ORIENTATION")
    )


def one_slice(d: Path) -> Case:
    f = write_series(d, n_slices=1)
    return both("one_slice", "a single slice", f, refused("TOO_FEW_SLICES"), rejected_series("TOO_FEW_SLICES", ok(1)))


def fifteen_slices(d: Path) -> Case:
    f = write_series(d, n_slices=15)
    return both(
        "fifteen_slices",
        "15 slices, one fewer than the plan's minimum",
        f,
        refused("TOO_FEW_SLICES"),
        rejected_series("TOO_FEW_SLICES", ok(15)),
    )


def huge_dimensions(d: Path) -> Case:
    f = write_series(d)
    # 0.05 mm pixels keep the field of view at a plausible 1000 mm, so the size limit is what refuses it
    dv.set_attrs(f, Rows=20000, Columns=20000, PixelSpacing=["0.05", "0.05"])
    # DICOM: 48 x 48 pixels of Pixel Data cannot fill 20000 x 20000: the C-STORE handler refuses each instance
    return both(
        "huge_dimensions",
        "(0028,0010) Rows and (0028,0011) Columns 20000 of 0.05 mm (8 G voxels claimed)",
        f,
        HttpExpect(413, "TOO_LARGE"),
        DicomExpect(statuses={"0xA900": N_SLICES}),
    )


# ---------------------------------------------------------------------------------------------- attributes
def missing_position(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[5], ImagePositionPatient=None)
    return both(
        "missing_position",
        "one slice without (0020,0032) Image Position (Patient)",
        f,
        refused("MISSING_ATTRIBUTE"),
        rejected_series("MISSING_ATTRIBUTE"),
    )


def malformed_position(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[2], ImagePositionPatient=["1", "2"])
    return both(
        "malformed_position",
        "one slice's Image Position (Patient) with 2 values",
        f,
        refused("MISSING_ATTRIBUTE"),
        rejected_series("MISSING_ATTRIBUTE"),
    )


def missing_series_uid(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[10], SeriesInstanceUID=None)
    return both(
        "missing_series_uid",
        "one slice without (0020,000E) Series Instance UID",
        f,
        refused("MISSING_ATTRIBUTE"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA900": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


def series_uid_path_traversal(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f, SeriesInstanceUID=NOT_A_UID)
    return both(
        "series_uid_path_traversal",
        f"(0020,000E) Series Instance UID '{NOT_A_UID}'",
        f,
        refused("INVALID_ATTRIBUTE"),
        DicomExpect(statuses={"0xA900": N_SLICES}),
    )


def study_uid_too_long(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f, StudyInstanceUID=LONG_UID)
    return both(
        "study_uid_too_long",
        f"(0020,000D) Study Instance UID of {len(LONG_UID)} digits and dots (at most 64)",
        f,
        refused("INVALID_ATTRIBUTE"),
        rejected_series("INVALID_ATTRIBUTE"),
    )


def frame_of_reference_not_a_uid(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f, FrameOfReferenceUID="1.2.840.abc")
    return both(
        "frame_of_reference_not_a_uid",
        "(0020,0052) Frame of Reference UID '1.2.840.abc'",
        f,
        refused("INVALID_ATTRIBUTE"),
        rejected_series("INVALID_ATTRIBUTE"),
    )


def rescale_slope_zero(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[4], RescaleSlope="0")
    return both(
        "rescale_slope_zero",
        "(0028,1053) Rescale Slope 0 on one slice",
        f,
        refused("MISSING_ATTRIBUTE"),
        rejected_series("MISSING_ATTRIBUTE"),
    )


def hostile_patient_name(d: Path) -> Case:
    f = write_series(d, patient_name=HOSTILE_NAME, patient_id="../../etc/passwd")
    return both(
        "hostile_patient_name",
        "SQL, format-string and JNDI text in Patient's Name, a path as Patient ID",
        f,
        job("succeeded"),
        DicomExpect(statuses=ok(N_SLICES), outcomes=("succeeded",)),
    )


# ---------------------------------------------------------------------------------------------- pixel encoding
def unsupported_transfer_syntax(d: Path) -> Case:
    f = write_series(d)

    def mpeg2(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = encapsulate([ds.PixelData])

    dv.edit(f, mpeg2)
    return both(
        "unsupported_transfer_syntax",
        "Transfer Syntax MPEG2 (1.2.840.10008.1.2.4.100)",
        f,
        refused("UNSUPPORTED_TRANSFER_SYNTAX"),
        DicomExpect(statuses={NO_CONTEXT: N_SLICES}),
    )


def undecodable_rle(d: Path) -> Case:
    f = write_series(d)
    dv.compress(f, "rle")

    def scramble(ds: pydicom.Dataset) -> None:
        frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
        frame[0:4] = (5).to_bytes(4, "little")  # 5 RLE segments for a 16-bit greyscale frame (needs 2)
        ds.PixelData = encapsulate([bytes(frame)])

    dv.edit(f[7], scramble)
    return both(
        "undecodable_rle",
        "RLE Lossless series, one frame's RLE header broken",
        f,
        job("failed", "PIXEL_DATA_ERROR"),
        DicomExpect(statuses=ok(N_SLICES), outcomes=("failed:PIXEL_DATA_ERROR",)),
    )


def colour_image(d: Path) -> Case:
    f = write_series(d)
    dv.set_attrs(f[2], PhotometricInterpretation="RGB", SamplesPerPixel=3)
    # DICOM: one sample per pixel of Pixel Data cannot fill three: the C-STORE handler refuses that instance
    return both(
        "colour_image",
        "one slice labelled RGB (3 samples per pixel)",
        f,
        refused("PIXEL_DATA_ERROR"),
        DicomExpect(statuses={"0x0000": N_SLICES - 1, "0xA900": 1}, outcomes=("rejected:NONUNIFORM_SPACING",)),
    )


SERIES_CASES: list[Callable[[Path], Case]] = [
    truncated_header,
    truncated_pixel_data,
    garbage_dataset,
    short_pixel_data,
    missing_pixel_data,
    mr_series,
    ct_labelled_mr,
    rtstruct_only,
    enhanced_ct,
    mixed_series,
    inconsistent_patient,
    other_frame_of_reference,
    gap,
    uneven_spacing,
    duplicate_position,
    same_instance_twice,
    gantry_tilt_tag,
    gantry_tilt_positions,
    oblique,
    sagittal,
    one_slice,
    fifteen_slices,
    huge_dimensions,
    missing_position,
    malformed_position,
    missing_series_uid,
    series_uid_path_traversal,
    study_uid_too_long,
    frame_of_reference_not_a_uid,
    rescale_slope_zero,
    hostile_patient_name,
    unsupported_transfer_syntax,
    undecodable_rle,
    colour_image,
]
