"""Stage 1, ``load_series``: every refusal has its stable code and a message naming the file and attribute."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.errors import ErrorCode
from service.pipeline.series import load_series
from service.pipeline.series_pixels import native_pixel_data_bytes
from tests import dicom_variants as dv
from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.pipeline.test_series import by_z, rejected, write_series


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    """A valid HFS series (20 x 24 x 32), files in z order."""
    files, _ = write_series(tmp_path, "HFS")
    load_series(tmp_path)  # valid before it is broken
    return by_z(files)


@pytest.mark.parametrize(
    ("keyword", "tag"),
    [
        ("ImagePositionPatient", "(0020,0032)"),
        ("ImageOrientationPatient", "(0020,0037)"),
        ("PixelSpacing", "(0028,0030)"),
        ("FrameOfReferenceUID", "(0020,0052)"),
        ("RescaleIntercept", "(0028,1052)"),
        ("SOPInstanceUID", "(0008,0018)"),
        ("Modality", "(0008,0060)"),
    ],
)
def test_missing_attribute(series: list[Path], keyword: str, tag: str) -> None:
    dv.set_attrs(series[5], **{keyword: None})
    rejected(series[0].parent, ErrorCode.MISSING_ATTRIBUTE, series[5].name, tag, keyword)


def test_malformed_attribute(series: list[Path]) -> None:
    dv.set_attrs(series[2], ImagePositionPatient=["1", "2"])
    rejected(series[0].parent, ErrorCode.MISSING_ATTRIBUTE, series[2].name, "(0020,0032) ImagePositionPatient")


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"PixelSpacing": ["0.8", "0.5"]}, ["(0028,0030) PixelSpacing"]),
        ({"ImageOrientationPatient": ["-1", "0", "0", "0", "1", "0"]}, ["(0020,0037) ImageOrientationPatient"]),
        ({"FrameOfReferenceUID": "1.2.3.4.5"}, ["(0020,0052) FrameOfReferenceUID"]),
    ],
)
def test_inconsistent_geometry(series: list[Path], change: dict, names: list[str]) -> None:
    dv.set_attrs(series[9], **change)
    rejected(series[0].parent, ErrorCode.INCONSISTENT_GEOMETRY, series[9].name, *names)


def test_inconsistent_rows_columns(series: list[Path]) -> None:
    dv.set_pixels(series[4], np.zeros((24, 30), dtype=np.int16))
    rejected(series[0].parent, ErrorCode.INCONSISTENT_GEOMETRY, series[4].name, "(0028,0011) Columns", "24x30")


def test_inconsistent_patient_does_not_echo_identifiers(series: list[Path]) -> None:
    dv.set_attrs(series[3], PatientID="OTHER-PATIENT")
    err = rejected(series[0].parent, ErrorCode.INCONSISTENT_SERIES, series[3].name, "(0010,0020) PatientID")
    for secret in (TEST_PATIENT_ID, "OTHER-PATIENT", TEST_PATIENT_NAME):
        assert secret not in err.message


def test_duplicate_position(series: list[Path]) -> None:
    copy = series[0].parent / "copy_of_slice.dcm"
    dv.copy_as_new_instance(series[6], copy)
    rejected(series[0].parent, ErrorCode.DUPLICATE_POSITION, series[6].name, "copy_of_slice.dcm", "(0020,0032)")


def test_same_image_twice(series: list[Path]) -> None:
    shutil.copyfile(series[6], series[0].parent / "again.dcm")
    rejected(series[0].parent, ErrorCode.DUPLICATE_POSITION, series[6].name, "again.dcm", "SOPInstanceUID")


def test_gap_from_missing_slice(series: list[Path]) -> None:
    series[10].unlink()
    rejected(series[0].parent, ErrorCode.NONUNIFORM_SPACING, series[9].name, series[11].name, "5.000 mm", "2.500")


def test_nonuniform_spacing(series: list[Path]) -> None:
    p = dv.position(series[12])
    dv.set_position(series[12], p + [0, 0, 0.3])
    rejected(series[0].parent, ErrorCode.NONUNIFORM_SPACING, series[12].name, "(0020,0032)")


def test_spacing_tolerance_accepts_rounding(series: list[Path]) -> None:
    p = dv.position(series[12])
    dv.set_position(series[12], p + [0, 0, 0.04])  # below max(1% of 2.5 mm, 0.05 mm)
    load_series(series[0].parent)


def test_slow_drift_off_the_grid(series: list[Path]) -> None:
    for n, path in enumerate(series[10:]):  # each gap only 0.04 mm longer, but the grid drifts by > 0.05 mm
        dv.set_position(path, dv.position(path) + [0, 0, 0.04 * (n + 1)])
    rejected(series[0].parent, ErrorCode.NONUNIFORM_SPACING, "off the regular", "(0020,0032)")


def test_gantry_tilt_tag(series: list[Path]) -> None:
    dv.set_attrs(series[0], GantryDetectorTilt="15")
    rejected(series[0].parent, ErrorCode.GANTRY_TILT, series[0].name, "(0018,1120) GantryDetectorTilt")


def test_gantry_tilt_positions(series: list[Path]) -> None:
    for n, path in enumerate(series):  # positions slide in y with z: a tilted acquisition, tags say 0
        dv.set_position(path, dv.position(path) + [0, 0.5 * n, 0])
    rejected(series[0].parent, ErrorCode.GANTRY_TILT, series[-1].name, series[0].name, "(0020,0032)")


@pytest.mark.parametrize(
    ("iop", "words"),
    [
        (["0.98480775", "0", "0.17364818", "0", "1", "0"], ["oblique"]),
        (["0", "1", "0", "0", "0", "-1"], ["sagittal", "axial"]),
        (["1", "0", "0", "0", "0", "-1"], ["coronal", "axial"]),
    ],
)
def test_oblique_sagittal_coronal(series: list[Path], iop: list[str], words: list[str]) -> None:
    dv.set_attrs(series, ImageOrientationPatient=iop)
    rejected(series[0].parent, ErrorCode.OBLIQUE_ORIENTATION, "(0020,0037) ImageOrientationPatient", *words)


def test_truncated_pixel_data(series: list[Path]) -> None:
    dv.truncate(series[8], series[8].stat().st_size - 100)
    rejected(series[0].parent, ErrorCode.CORRUPT_FILE, series[8].name, "Pixel Data")


def test_short_pixel_data_element(series: list[Path]) -> None:
    dv.edit(series[5], lambda ds: setattr(ds, "PixelData", ds.PixelData[:-256]))  # complete element, too few bytes
    rejected(series[0].parent, ErrorCode.CORRUPT_FILE, series[5].name, "(7FE0,0010) Pixel Data", "need 1536")


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"Rows": 24, "Columns": 32, "BitsAllocated": 16}, 24 * 32 * 2),
        ({"Rows": 24, "Columns": 32}, 24 * 32 * 2),  # Bits Allocated absent: 16
        ({"Rows": 24, "Columns": 32, "BitsAllocated": 8, "SamplesPerPixel": 3}, 24 * 32 * 3),
        ({"Rows": 24, "Columns": 32, "BitsAllocated": 16, "NumberOfFrames": "5"}, 24 * 32 * 2 * 5),
        ({"Rows": 3, "Columns": 3, "BitsAllocated": 1}, 2),  # 9 bits
        ({"Rows": 65535, "Columns": 65535, "BitsAllocated": 32}, 65535 * 65535 * 4),
        ({"Columns": 32}, None),
        ({"Rows": 24, "Columns": 32, "NumberOfFrames": "-2"}, None),
    ],
)
def test_native_pixel_data_bytes(attrs: dict, expected: int | None) -> None:
    ds = pydicom.Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    assert native_pixel_data_bytes(ds) == expected


@pytest.mark.parametrize("keep", [140, 400, 900])
def test_truncated_header(series: list[Path], keep: int) -> None:
    dv.truncate(series[8], keep)
    rejected(series[0].parent, ErrorCode.CORRUPT_FILE, series[8].name)


def test_garbage_after_dicm_prefix(series: list[Path]) -> None:
    rng = np.random.default_rng(3)
    series[1].write_bytes(b"\0" * 128 + b"DICM" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    rejected(series[0].parent, ErrorCode.CORRUPT_FILE, series[1].name)


def test_truncated_compressed_file(series: list[Path]) -> None:
    dv.compress(series, "rle")
    dv.truncate(series[8], series[8].stat().st_size - 300)
    err = rejected(series[0].parent, ErrorCode.CORRUPT_FILE, series[8].name)
    assert "Pixel Data" in err.message or "readable" in err.message


def test_unsupported_transfer_syntax(series: list[Path]) -> None:
    def mpeg2(ds: pydicom.Dataset) -> None:  # encapsulated data of a syntax nobody decodes here
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])

    dv.edit(series[5], mpeg2)
    rejected(
        series[0].parent, ErrorCode.UNSUPPORTED_TRANSFER_SYNTAX, series[5].name, "1.2.840.10008.1.2.4.100", "MPEG2"
    )


def test_undecodable_compressed_pixels(series: list[Path]) -> None:
    dv.compress(series, "rle")

    def scramble(ds: pydicom.Dataset) -> None:  # keep the encapsulation, break the RLE header inside the frame
        frame = bytearray(next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)))
        frame[0:4] = (5).to_bytes(4, "little")  # 5 segments for a 16-bit greyscale frame (needs 2)
        ds.PixelData = pydicom.encaps.encapsulate([bytes(frame)])

    dv.edit(series[7], scramble)
    rejected(series[0].parent, ErrorCode.PIXEL_DATA_ERROR, series[7].name, "RLE Lossless")


def test_colour_image_in_ct_series(series: list[Path]) -> None:
    dv.set_attrs(series[2], PhotometricInterpretation="RGB", SamplesPerPixel=3)
    rejected(series[0].parent, ErrorCode.PIXEL_DATA_ERROR, series[2].name, "(0028,0004) PhotometricInterpretation")


@pytest.mark.parametrize("modality", ["MR", "PT"])
def test_ct_image_storage_labelled_another_modality(series: list[Path], modality: str) -> None:
    dv.set_attrs(series[7], Modality=modality)
    rejected(series[0].parent, ErrorCode.NOT_CT, series[7].name, "(0008,0060) Modality", f"'{modality}'")


def test_ct_labelled_another_modality_exits_2_through_the_cli(series: list[Path], tmp_path: Path, capsys) -> None:
    from service.cli import main
    from tests.bundle_factory import build_oracle_bundle

    store = tmp_path / "store"
    build_oracle_bundle(store, promote=True)
    dv.set_attrs(series, Modality="MR")
    out = tmp_path / "out"
    out.mkdir()
    rc = main(
        ["--model-store", str(store), "segment", str(series[0].parent), "--output", str(out / "rs.dcm"), "--quiet"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error[NOT_CT]: ") and "(0008,0060) Modality" in err[0]
    assert list(out.iterdir()) == []


NOT_UIDS = {
    "path": "../../../../tmp/x",
    "letters": "1.2.840.abc",
    "too_long": "1.2.826.0.1.3680043.8.498." + "1" * 39,  # 65 characters
    "empty_component": "1.2..3",
}


@pytest.mark.parametrize("value", NOT_UIDS.values(), ids=NOT_UIDS.keys())
@pytest.mark.parametrize(
    ("keyword", "tag"),
    [
        ("SeriesInstanceUID", "(0020,000E)"),
        ("StudyInstanceUID", "(0020,000D)"),
        ("FrameOfReferenceUID", "(0020,0052)"),
        ("SOPInstanceUID", "(0008,0018)"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
def test_invalid_uid(series: list[Path], keyword: str, tag: str, value: str) -> None:
    # the series UID groups the files: change it on all of them; the others on one slice
    dv.set_attrs(series if keyword == "SeriesInstanceUID" else series[4], **{keyword: value})
    err = rejected(series[0].parent, ErrorCode.INVALID_ATTRIBUTE, f"{tag} {keyword}")
    named = series if keyword == "SeriesInstanceUID" else series[4:5]  # the first file checked, for the series UID
    assert any(p.name in err.message for p in named)
    assert value not in err.message  # the value is described, not echoed
    reason = err.message.replace(str(series[0].parent), "")  # the temporary folder's name may hold "64" too
    assert ("64" in reason) == (len(value) > 64)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_leading_zero_uid_components_from_older_scanners_are_accepted(series: list[Path]) -> None:
    dv.set_attrs(series, SeriesInstanceUID="1.2.840.0113619.2.55.3")
    assert load_series(series[0].parent).info.series_instance_uid == "1.2.840.0113619.2.55.3"


def test_valid_uids_of_64_characters_are_accepted(series: list[Path]) -> None:
    longest = "1.2.826.0.1.3680043.8.498." + "1" * 38
    assert len(longest) == 64
    dv.set_attrs(series, StudyInstanceUID=longest, SeriesInstanceUID="2.25.0." + "9" * 57)
    load_series(series[0].parent)


def test_every_documented_code_is_tested() -> None:
    """Guard: each code that load_series' docstring promises is raised by a test in this module or test_series."""
    doc = " ".join((load_series.__doc__ or "").split())
    promised = [c for c in ErrorCode if re.search(rf"\b{c.value}\b", doc)]
    assert len(promised) >= 18
    here = Path(__file__).read_text() + (Path(__file__).parent / "test_series.py").read_text()
    missing = [c.name for c in promised if f"ErrorCode.{c.name}" not in here]
    assert not missing, missing
