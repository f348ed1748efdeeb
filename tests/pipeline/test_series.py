"""Stage 1, ``load_series``: real DICOM files in, canonical HU volume or a typed refusal out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.errors import ErrorCode, InputError
from service.pipeline.budget import CT_BYTES_PER_VOXEL
from service.pipeline.series import load_series
from tests import dicom_variants as dv
from tests.conftest import load_sample_canonical, require_tool
from tests.dicom_factory import TEST_PATIENT_ID, write_ct_series

SHAPE = (20, 24, 32)  # non-square images so that a swapped axis cannot pass
SPACING = (2.5, 0.75, 0.5)
ORIGIN = (-10.5, 20.25, -30.0)
POSITIONS = ["HFS", "FFS", "HFP", "FFP"]


def asymmetric_hu(shape=SHAPE, seed=0) -> np.ndarray:
    """Random HU plus a ramp along every axis: no flip or transpose leaves it unchanged."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    return (rng.integers(-1000, 1000, size=shape) + 3 * k + 5 * j + 7 * i).astype(np.float32)


def write_series(folder: Path, position="HFS", shape=SHAPE, **kwargs) -> tuple[list[Path], np.ndarray]:
    hu = asymmetric_hu(shape)
    files = write_ct_series(folder, hu, SPACING, ORIGIN, position, **kwargs)
    return files, hu


def by_z(files: list[Path]) -> list[Path]:
    return sorted(files, key=lambda p: dv.position(p)[2])


def rejected(inputs, code: ErrorCode, *names: str, **kwargs) -> InputError:
    """Assert that loading fails with ``code`` and a message naming each of ``names``."""
    with pytest.raises(InputError) as info:
        load_series(inputs, **kwargs)
    err = info.value
    assert err.code == code, err.message
    for name in names:
        assert name in err.message, f"{name!r} not in: {err.message}"
    assert "\n" not in err.one_line()
    return err


# ---------------------------------------------------------------- geometry and values


@pytest.mark.parametrize("position", POSITIONS)
def test_round_trip_to_canonical(tmp_path: Path, position: str) -> None:
    files, hu = write_series(tmp_path, position)
    volume = load_series(tmp_path)
    assert volume.array_zyx.dtype == np.float32
    np.testing.assert_array_equal(volume.array_zyx, hu)
    np.testing.assert_allclose(volume.origin_lps, ORIGIN, atol=1e-9)
    np.testing.assert_allclose(volume.spacing_mm_zyx, SPACING, atol=1e-9)
    info = volume.info
    assert info is not None and info.patient_position == position
    assert info.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    # SOP Instance UIDs, source files and stored z follow canonical z (independently read from the files)
    expected = by_z(files)
    assert info.source_files == tuple(str(p) for p in expected)
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in expected]
    assert info.slice_sop_instance_uids == tuple(uids)
    np.testing.assert_allclose(info.slice_z_mm, ORIGIN[2] + SPACING[0] * np.arange(SHAPE[0]))
    first = pydicom.dcmread(expected[0], stop_before_pixels=True)
    assert info.series_instance_uid == first.SeriesInstanceUID
    assert info.study_instance_uid == first.StudyInstanceUID
    assert info.frame_of_reference_uid == first.FrameOfReferenceUID
    assert info.patient_study_attrs["PatientID"] == TEST_PATIENT_ID
    assert info.patient_study_attrs["StudyInstanceUID"] == first.StudyInstanceUID
    assert {"PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID"} <= set(
        info.patient_study_attrs
    )
    assert "StudyDescription" not in info.patient_study_attrs  # not in the files: not invented


def assert_matches_dicom_geometry(volume, files: list[Path]) -> None:
    """Independent oracle: every stored pixel, placed by the standard's IPP/IOP/PixelSpacing formula, must land on
    the voxel whose canonical LPS centre is that point, with value stored * slope + intercept."""
    sz, sy, sx = volume.spacing_mm_zyx
    origin = np.array(volume.origin_lps)
    for path in files:
        ds = pydicom.dcmread(path)
        lps = dv.pixel_lps(ds)
        idx = (lps - origin) / np.array([sx, sy, sz])
        kji = np.rint(idx[..., ::-1]).astype(int)
        np.testing.assert_allclose(idx[..., ::-1], kji, atol=1e-6)
        expect = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(volume.array_zyx[kji[..., 0], kji[..., 1], kji[..., 2]], expect)


@pytest.mark.parametrize("position", POSITIONS)
def test_voxels_sit_where_the_tags_put_them(tmp_path: Path, position: str) -> None:
    files, _ = write_series(tmp_path, position)
    assert_matches_dicom_geometry(load_series(tmp_path), files)


@pytest.mark.parametrize("position", POSITIONS)
def test_marker_on_patient_left_has_larger_x_index(tmp_path: Path, position: str) -> None:
    files, _ = write_series(tmp_path, position)
    for path in files:  # in each stored image, brighten the pixel with the largest LPS x (patient's left)

        def mark(ds: pydicom.Dataset) -> None:
            x = dv.pixel_lps(ds)[..., 0]
            arr = ds.pixel_array.copy()
            r, c = np.unravel_index(np.argmax(x), x.shape)
            arr[r, c] = 5000
            ds.PixelData = arr.tobytes()

        dv.edit(path, mark)
    volume = load_series(tmp_path)
    k, j, i = np.unravel_index(np.argmax(volume.array_zyx), volume.shape_zyx)
    assert i == SHAPE[2] - 1
    assert volume.index_to_lps(np.array([k, j, i]))[0] > volume.index_to_lps(np.array([k, j, 0]))[0]
    assert (volume.array_zyx[:, :, -1].max(axis=1) == 5000 - 1024).all()


def test_transposed_axial_images_are_accepted(tmp_path: Path) -> None:
    files, hu = write_series(tmp_path, "FFS")
    dv.transpose_images(files)
    assert list(pydicom.dcmread(files[0]).ImageOrientationPatient) == [0, 1, 0, -1, 0, 0]
    volume = load_series(tmp_path)
    np.testing.assert_array_equal(volume.array_zyx, hu)
    np.testing.assert_allclose(volume.origin_lps, ORIGIN)
    np.testing.assert_allclose(volume.spacing_mm_zyx, SPACING)


def test_instance_numbers_and_file_names_do_not_order_slices(tmp_path: Path) -> None:
    files, hu = write_series(tmp_path, "HFS", shuffle_instance_numbers=False)
    ordered = by_z(files)
    for n, path in enumerate(ordered):  # names and InstanceNumber now both run against z
        dv.set_attrs(path, InstanceNumber=len(ordered) - n)
        path.rename(tmp_path / f"IMG{len(ordered) - n:04d}.dcm")
    np.testing.assert_array_equal(load_series(tmp_path).array_zyx, hu)


def test_rescale_slope_and_intercept_per_slice(tmp_path: Path) -> None:
    hu = (asymmetric_hu() / 2).astype(np.float32)  # multiples of 0.5 HU
    files = write_ct_series(tmp_path, hu, SPACING, ORIGIN, "HFS", rescale_slope=0.5, rescale_intercept=-1000.0)
    middle = by_z(files)[7]

    def other_intercept(ds: pydicom.Dataset) -> None:  # same HU, stored with intercept -1200
        ds.PixelData = (ds.pixel_array + 400).astype(np.int16).tobytes()
        ds.RescaleIntercept = "-1200"

    dv.edit(middle, other_intercept)
    np.testing.assert_array_equal(load_series(tmp_path).array_zyx, hu)


def test_single_slice_uses_slice_thickness(tmp_path: Path) -> None:
    files, hu = write_series(tmp_path, "HFS", shape=(1, 24, 32))
    volume = load_series(files)
    np.testing.assert_array_equal(volume.array_zyx, hu)
    assert volume.spacing_mm_zyx == SPACING


# ---------------------------------------------------------------- what the input folder may hold


def test_folder_with_junk_non_image_objects_and_subfolders(tmp_path: Path) -> None:
    files, hu = write_series(tmp_path / "export" / "a", "FFP")
    for path in files[::2]:  # spread the series over nested folders
        (tmp_path / "export" / "b" / "deeper").mkdir(parents=True, exist_ok=True)
        path.rename(tmp_path / "export" / "b" / "deeper" / path.name)
    ct_files = {str(p) for p in tmp_path.rglob("CT*.dcm")}
    assert len(ct_files) == SHAPE[0]
    dv.write_junk(tmp_path / "export")
    dv.write_junk(tmp_path / "export" / "b")
    dv.write_rtstruct_like(tmp_path / "export" / "RS.dcm", like=files[1])
    volume = load_series(tmp_path)
    np.testing.assert_array_equal(volume.array_zyx, hu)
    assert volume.info is not None
    assert set(volume.info.source_files) == ct_files


def test_list_of_files_and_folders_and_str_path(tmp_path: Path) -> None:
    files, hu = write_series(tmp_path / "a", "HFS")
    for path in files[10:]:
        path.rename(tmp_path / path.name)
    loose = [tmp_path / p.name for p in files[10:]]
    np.testing.assert_array_equal(load_series([tmp_path / "a", *loose]).array_zyx, hu)
    # the same file named twice (directly and through its folder) counts once
    np.testing.assert_array_equal(load_series([tmp_path, loose[0]]).array_zyx, hu)
    np.testing.assert_array_equal(load_series(str(tmp_path)).array_zyx, hu)  # type: ignore[arg-type]


def test_bare_dataset_without_preamble_is_read(tmp_path: Path) -> None:
    files, hu = write_series(tmp_path, "HFS")
    target = files[3]
    dv.write_bare_dataset(target, target)
    assert target.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(load_series(tmp_path).array_zyx, hu)


@pytest.mark.parametrize("name", list(dv.COMPRESSIONS))
def test_compressed_transfer_syntaxes_decode_to_same_hu(tmp_path: Path, name: str) -> None:
    if name in dv.DCMCJPEG_OPTIONS:
        require_tool("dcmcjpeg")
    files, hu = write_series(tmp_path, "HFP", shape=(6, 32, 32))
    dv.compress(files, name)
    syntaxes = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID for p in files}
    assert syntaxes == {dv.COMPRESSIONS[name]}
    np.testing.assert_array_equal(load_series(tmp_path).array_zyx, hu)


def test_multiple_series_listed_and_one_chosen(tmp_path: Path) -> None:
    files_a, hu_a = write_series(tmp_path / "a", "HFS")
    files_b, _ = write_series(tmp_path / "b", "HFS", shape=(6, 24, 32))
    dv.set_attrs(files_a, SeriesDescription="Head 2.5mm")
    dv.set_attrs(files_b, SeriesDescription="Scout")
    uid_a = pydicom.dcmread(files_a[0]).SeriesInstanceUID
    uid_b = pydicom.dcmread(files_b[0]).SeriesInstanceUID
    rejected(tmp_path, ErrorCode.MULTIPLE_SERIES, uid_a, uid_b, "20 files", "6 files", "Head 2.5mm", "Scout")
    np.testing.assert_array_equal(load_series(tmp_path, series_uid=uid_a).array_zyx, hu_a)
    rejected(tmp_path, ErrorCode.SERIES_NOT_FOUND, "1.2.3.4", uid_a, uid_b, series_uid="1.2.3.4")


# ---------------------------------------------------------------- refusals: what is (not) there


def test_empty_input(tmp_path: Path) -> None:
    rejected(tmp_path, ErrorCode.EMPTY_INPUT)
    dv.write_junk(tmp_path / "junk")
    rejected(tmp_path, ErrorCode.EMPTY_INPUT, "no DICOM")
    rejected(tmp_path / "nothing-here", ErrorCode.EMPTY_INPUT, "nothing-here")


def test_only_non_image_objects(tmp_path: Path) -> None:
    dv.write_rtstruct_like(tmp_path / "RS.dcm")
    rejected(tmp_path, ErrorCode.NO_CT_SERIES)


def test_not_ct(tmp_path: Path) -> None:
    files, _ = write_series(tmp_path, "HFS")
    dv.convert_modality(files)
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    rejected(tmp_path, ErrorCode.NOT_CT, "MR Image Storage", "MR")
    rejected(tmp_path, ErrorCode.NOT_CT, uid, series_uid=uid)


def test_enhanced_multiframe_ct(tmp_path: Path) -> None:
    files, _ = write_series(tmp_path / "src", "HFS", shape=(3, 24, 32))
    (tmp_path / "in").mkdir()
    dv.write_enhanced_ct(tmp_path / "in" / "enhanced.dcm", files)
    rejected(tmp_path / "in", ErrorCode.MULTIFRAME_NOT_SUPPORTED, "enhanced.dcm", "Enhanced CT", "NumberOfFrames")


def test_too_few_slices_and_too_large(tmp_path: Path) -> None:
    write_series(tmp_path, "HFS")
    rejected(tmp_path, ErrorCode.TOO_FEW_SLICES, "20 slice", "at least 40", min_slices=40)
    load_series(tmp_path, min_slices=20)
    need = 20 * 24 * 32 * CT_BYTES_PER_VOXEL
    rejected(tmp_path, ErrorCode.TOO_LARGE, "20 x 24 x 32", "memory budget", memory_budget=need - 1)
    load_series(tmp_path, memory_budget=need)
    # the model grid counts too: a plan with a very fine grid needs far more than the CT itself
    rejected(tmp_path, ErrorCode.TOO_LARGE, "model grid", model_spacing_mm_zyx=(0.1, 0.1, 0.1), memory_budget=need)


# ---------------------------------------------------------------- real anatomy


@pytest.mark.parametrize("position", ["HFS", "FFP"])
def test_openkbp_sample_loads_back(sample_series_factory, position: str) -> None:
    sample = sample_series_factory("pt_201", position)
    volume = load_series(sample.ct_dir)
    hu, spacing, _, _ = load_sample_canonical("pt_201")
    assert volume.shape_zyx == hu.shape
    np.testing.assert_array_equal(volume.array_zyx, np.round(hu))  # stored as int16: equal within rounding
    np.testing.assert_allclose(volume.spacing_mm_zyx, spacing, atol=1e-4)
    np.testing.assert_allclose(volume.origin_lps, sample.origin_lps, atol=1e-3)


def _respace(files: list[Path], pixel_mm: float | None = None, dz_mm: float | None = None, offset_mm: float = 0.0):
    for k, f in enumerate(by_z(files)):
        x, y, z = dv.position(f)
        if dz_mm is not None:
            z = ORIGIN[2] + k * dz_mm
        values: dict = {"ImagePositionPatient": [f"{x + offset_mm:.16g}"[:16], f"{y:.16g}"[:16], f"{z:.16g}"[:16]]}
        if pixel_mm is not None:
            values["PixelSpacing"] = [str(pixel_mm), str(pixel_mm)]
        dv.set_attrs(f, **values)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"pixel_mm": 1e6}, "Pixel Spacing"),
        ({"pixel_mm": 20.0}, "Pixel Spacing"),
        ({"pixel_mm": 0.001}, "Pixel Spacing"),
        ({"dz_mm": 1e9}, "slice spacing"),
        ({"dz_mm": 30.0}, "slice spacing"),
        ({"offset_mm": 1e15}, "Image Position"),
    ],
)
def test_physically_implausible_geometry_is_refused(tmp_path: Path, change, named) -> None:
    """Issue 16: 1e6 mm pixels or slices 1e9 mm apart ended as MemoryError, 20 mm pixels ran for minutes, positions
    1e15 mm away wrote collapsed contour coordinates."""
    files, _ = write_series(tmp_path, "HFS")
    _respace(files, **change)
    rejected(tmp_path, ErrorCode.IMPLAUSIBLE_GEOMETRY, named, "implausible")


def test_plausible_extremes_still_load(tmp_path: Path) -> None:
    files, _ = write_series(tmp_path, "HFS")
    _respace(files, pixel_mm=5.5, dz_mm=10.0, offset_mm=5000.0)  # OpenKBP's coarsest pixels are 5.4 mm
    load_series(tmp_path)
