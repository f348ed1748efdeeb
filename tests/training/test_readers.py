"""Training data readers on small synthetic inputs of each format (OpenKBP CSV, DICOM CT + RTSTRUCT, NIfTI).

Every reader must land in the canonical LPS (z, y, x) order of ``service.pipeline.volume``: a marker on the
patient's left ends at a large x index, a superior one at a large z index, an anterior one at a small y index.
Bad inputs are refused with InputError(BAD_TRAINING_DATA) naming the file, or skipped with that reason.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import generate_uid

from service.errors import ErrorCode, InputError
from service.pipeline.rtstruct import write_rtstruct
from service.pipeline.series import load_series
from tests.dicom_factory import write_ct_series
from training.data import dicom_rtstruct, nifti, openkbp
from training.data.case import SkipReport

# ---------------------------------------------------------------- OpenKBP


def _flat(i: int, j: int, k: int) -> int:
    return int(np.ravel_multi_index((i, j, k), openkbp.OPENKBP_SHAPE))


def write_openkbp_patient(pt_dir: Path, *, left: bool = True, right: bool = True) -> None:
    """A mostly empty 128^3 patient: CT value 2000 (= 1000 HU) at a left and a right marker, glands there."""
    pt_dir.mkdir(parents=True)
    left_ijk, right_ijk = (10, 100, 20), (10, 20, 20)  # j large = patient's left; k small = superior
    rows = [f"{_flat(*left_ijk)},2000", f"{_flat(*right_ijk)},1500", f"{_flat(60, 64, 64)},1040"]
    (pt_dir / "ct.csv").write_text(",data\n" + "\n".join(rows) + "\n")
    (pt_dir / "voxel_dimensions.csv").write_text("3.9\n4.1\n2.5\n")  # along i (A->P), j (R->L), k (S->I)
    if left:
        (pt_dir / "LeftParotid.csv").write_text(f",data\n{_flat(*left_ijk)},\n")
    if right:
        (pt_dir / "RightParotid.csv").write_text(f",data\n{_flat(*right_ijk)},\n")


def test_openkbp_reader_canonical_axes(tmp_path: Path) -> None:
    write_openkbp_patient(tmp_path / "validation-pats" / "pt_7")
    (case,) = openkbp.iter_split(tmp_path / "validation-pats", SkipReport({}))
    assert case.case_id == "pt_7"
    assert case.spacing_mm_zyx == (2.5, 3.9, 4.1)
    # OpenKBP (i=10, j=100, k=20) -> canonical (z = 127 - k, y = i, x = j)
    assert [tuple(v) for v in np.argwhere(case.masks["Parotid_L"])] == [(107, 10, 100)]
    assert [tuple(v) for v in np.argwhere(case.masks["Parotid_R"])] == [(107, 10, 20)]
    assert case.hu_zyx[107, 10, 100] == 1000.0 and case.hu_zyx[107, 10, 20] == 500.0
    assert case.hu_zyx[127 - 64, 60, 64] == 40.0
    assert case.hu_zyx[0, 0, 0] == -1000.0  # absent = 0 = air
    assert case.hu_zyx.dtype == np.float32


def test_openkbp_one_gland_kept_without_the_other(tmp_path: Path) -> None:
    write_openkbp_patient(tmp_path / "train-pats" / "pt_1", right=False)
    (case,) = openkbp.iter_split(tmp_path / "train-pats", SkipReport({}))
    assert list(case.masks) == ["Parotid_L"]


def test_openkbp_bad_patients_skipped_with_reason(tmp_path: Path) -> None:
    split = tmp_path / "train-pats"
    write_openkbp_patient(split / "pt_1")
    write_openkbp_patient(split / "pt_2")
    (split / "pt_2" / "ct.csv").unlink()
    write_openkbp_patient(split / "pt_3")
    (split / "pt_3" / "LeftParotid.csv").write_text(",data\n99999999,\n")
    write_openkbp_patient(split / "pt_4")
    (split / "pt_4" / "ct.csv").write_text(",data\n12,abc\n")
    report = SkipReport({})
    assert [c.case_id for c in openkbp.iter_split(split, report)] == ["pt_1"]
    assert "pt_2/ct.csv: missing" in report.skipped["pt_2"]
    assert "LeftParotid.csv" in report.skipped["pt_3"] and "outside" in report.skipped["pt_3"]
    assert "ct.csv: malformed" in report.skipped["pt_4"]
    with pytest.raises(InputError) as exc:
        list(openkbp.iter_split(split))  # no report: the first bad patient raises
    assert exc.value.code == ErrorCode.BAD_TRAINING_DATA and "ct.csv" in exc.value.message


def test_openkbp_refuses_test_pats(tmp_path: Path) -> None:
    write_openkbp_patient(tmp_path / "test-pats" / "pt_241")
    with pytest.raises(InputError, match="holdout") as exc:
        next(openkbp.iter_split(tmp_path / "test-pats", SkipReport({})))
    assert exc.value.code == ErrorCode.BAD_TRAINING_DATA


# ---------------------------------------------------------------- DICOM CT + RTSTRUCT

SPACING = (3.0, 2.0, 2.0)
ORIGIN = (-23.0, -23.0, -15.0)


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hu = np.full((10, 24, 24), -1000.0, dtype=np.float32)
    hu[2:8, 4:20, 3:21] = 40.0
    left = np.zeros(hu.shape, dtype=bool)
    left[3:7, 8:12, 15:19] = True  # large x: the patient's left
    right = np.zeros(hu.shape, dtype=bool)
    right[3:6, 8:12, 5:9] = True
    hu[left] = 30.0
    return hu, left, right


def write_dicom_patient(
    patient_dir: Path,
    rois: dict[str, str],
    position: str = "HFS",
    frame_uid: str | None = None,
    z_shift_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CT series under ``patient_dir/CT``; RTSTRUCT with ``{ROI name: 'left'|'right'|'empty'}`` under ``RS/deep/``.

    ``frame_uid`` / ``z_shift_mm``: write the RTSTRUCT as if drawn on another CT (other frame, other slice z).
    """
    hu, left, right = _phantom()
    write_ct_series(patient_dir / "CT", hu, SPACING, ORIGIN, position)
    if rois:
        ct = load_series(patient_dir / "CT")
        assert ct.info is not None
        info = ct.info
        if frame_uid is not None:
            info = dataclasses.replace(info, frame_of_reference_uid=frame_uid)
        if z_shift_mm:
            info = dataclasses.replace(info, slice_z_mm=tuple(z + z_shift_mm for z in info.slice_z_mm))
        ct = dataclasses.replace(ct, info=info)
        sides = {"left": left, "right": right, "empty": np.zeros_like(left)}
        masks = {name: sides[side] for name, side in rois.items()}
        (patient_dir / "RS" / "deep").mkdir(parents=True)
        write_rtstruct(ct, masks, patient_dir / "RS" / "deep" / "struct", model_name="test", model_version="0")
    return hu, left, right


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_dicom_reader_synonyms_and_axes(tmp_path: Path, position: str) -> None:
    hu, left, right = write_dicom_patient(
        tmp_path / "split" / "patient_a", {"PAROTID_LT": "left", "Rt Parotid": "right", "Brainstem": "right"}, position
    )
    report = SkipReport({})
    (case,) = dicom_rtstruct.iter_split(tmp_path / "split", report)
    assert report.skipped == {}
    assert case.case_id == "patient_a" and case.spacing_mm_zyx == pytest.approx(SPACING)
    assert sorted(case.masks) == ["Parotid_L", "Parotid_R"]
    np.testing.assert_array_equal(case.hu_zyx, hu)
    np.testing.assert_array_equal(case.masks["Parotid_L"], left)
    np.testing.assert_array_equal(case.masks["Parotid_R"], right)
    assert np.argwhere(case.masks["Parotid_L"])[:, 2].min() > np.argwhere(case.masks["Parotid_R"])[:, 2].max()


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_dicom_reader_skips_bad_patients_with_reasons(tmp_path: Path) -> None:
    split = tmp_path / "split"
    write_dicom_patient(split / "ok_one_gland", {"L Parotid": "left"})
    write_dicom_patient(split / "no_rtstruct", {})
    write_dicom_patient(split / "unknown_names", {"Gland A": "left", "Spinal cord": "right"})
    write_dicom_patient(split / "other_frame", {"Parotid_L": "left", "Parotid_R": "right"}, frame_uid=generate_uid())
    write_dicom_patient(split / "two_series", {"Parotid_L": "left"})
    write_ct_series(split / "two_series" / "CT2", _phantom()[0], SPACING, ORIGIN, "HFS")
    write_dicom_patient(tmp_path / "donor", {"Parotid_L": "left"})
    (split / "no_ct").mkdir()
    (tmp_path / "donor" / "RS").rename(split / "no_ct" / "RS")
    write_dicom_patient(split / "corrupt_file", {"Parotid_L": "left"})
    (split / "corrupt_file" / "CT" / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    (split / "empty").mkdir()
    write_dicom_patient(split / "off_slice", {"Parotid_L": "left"}, z_shift_mm=1.4)
    write_dicom_patient(split / "no_contours", {"Parotid_L": "empty", "Parotid_R": "empty"})

    report = SkipReport({})
    cases = list(dicom_rtstruct.iter_split(split, report))
    assert [c.case_id for c in cases] == ["ok_one_gland"]
    assert list(cases[0].masks) == ["Parotid_L"]  # kept with the one gland it has
    why = report.skipped
    assert set(why) == {
        "no_rtstruct",
        "unknown_names",
        "other_frame",
        "two_series",
        "no_ct",
        "corrupt_file",
        "empty",
        "off_slice",
        "no_contours",
    }
    assert "no RTSTRUCT" in why["no_rtstruct"]
    assert "no parotid ROI matched" in why["unknown_names"]
    assert "'Gland A'" in why["unknown_names"] and "'Spinal cord'" in why["unknown_names"]
    assert "Frame of Reference" in why["other_frame"] and "another CT" in why["other_frame"]
    assert why["two_series"].startswith("several CT series")
    assert why["no_ct"].startswith("no CT series")
    assert "bad.dcm" in why["corrupt_file"] and "CORRUPT_FILE" in why["corrupt_file"]
    assert "no files" in why["empty"]
    assert "RTSTRUCT refused [BAD_REFERENCE]" in why["off_slice"] and "not on a slice" in why["off_slice"]
    assert "'Parotid_L', 'Parotid_R') have no contours" in why["no_contours"]
    with pytest.raises(InputError) as exc:
        list(dicom_rtstruct.iter_split(split))  # without a report the first bad patient raises
    assert exc.value.code == ErrorCode.BAD_TRAINING_DATA


def test_dicom_reader_synonym_file(tmp_path: Path) -> None:
    split = tmp_path / "split"
    write_dicom_patient(split / "p", {"Glandula parotis sin": "left", "Glandula parotis dx": "right"})
    report = SkipReport({})
    assert list(dicom_rtstruct.iter_split(split, report)) == []
    assert "'Glandula parotis sin'" in report.skipped["p"]
    (split / "roi_synonyms.json").write_text(
        json.dumps({"Parotid_L": ["Glandula parotis sin"], "Parotid_R": ["glandula_parotis_DX"]})
    )
    (case,) = dicom_rtstruct.iter_split(split, SkipReport({}))
    assert sorted(case.masks) == ["Parotid_L", "Parotid_R"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Parotid_Left": ["x"]}))
    with pytest.raises(InputError, match="bad.json: unknown key"):
        dicom_rtstruct.load_synonyms(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json: not a readable JSON"):
        list(dicom_rtstruct.iter_split(split, SkipReport({}), synonyms=bad))


def test_dicom_reader_ambiguous_rois_skipped(tmp_path: Path) -> None:
    write_dicom_patient(tmp_path / "split" / "p", {"Parotid_L": "left", "PAROTID_LT": "left"})
    report = SkipReport({})
    assert list(dicom_rtstruct.iter_split(tmp_path / "split", report)) == []
    assert "ambiguous" in report.skipped["p"]


# ---------------------------------------------------------------- NIfTI

NII_SPACING_ZYX = (3.0, 2.0, 1.5)
NII_ORIGIN_LPS = (-14.25, -15.0, 5.0)


def _canonical_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) = (8, 16, 20) canonical HU volume, a left (large x) and a right (small x) gland."""
    hu = np.full((8, 16, 20), -1000.0, dtype=np.float32)
    hu[1:7, 2:14, 2:18] = 20.0
    hu[6, 3, 10] = 900.0  # superior (large z), anterior (small y) marker
    left = np.zeros(hu.shape, dtype=bool)
    left[4:6, 6:8, 14:17] = True
    right = np.zeros(hu.shape, dtype=bool)
    right[4:6, 6:9, 3:5] = True
    return hu, left, right


Vec = tuple[float, float, float]


def _lps_to_ras_affine(cols_lps: list[Vec], offset_lps: Vec) -> np.ndarray:
    """NIfTI (RAS) affine from voxel-axis directions and the first voxel's centre given in LPS mm."""
    flip = np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = flip @ np.array(cols_lps, dtype=float).T
    aff[:3, 3] = flip @ np.array(offset_lps, dtype=float)
    return aff


def nifti_layouts() -> dict[str, tuple]:
    """The canonical phantom stored three ways: (to_file(arr_zyx) -> voxel array, affine)."""
    sz, sy, sx = NII_SPACING_ZYX
    ox, oy, oz = NII_ORIGIN_LPS
    ny, nx = 16, 20
    return {
        # ITK / SimpleITK style: voxel (i, j, k) along +L, +P, +S
        "lps": (lambda a: a.transpose(2, 1, 0), _lps_to_ras_affine([(sx, 0, 0), (0, sy, 0), (0, 0, sz)], (ox, oy, oz))),
        # RAS+ voxel order (nibabel canonical): i toward the patient's right, j anterior
        "ras": (
            lambda a: a.transpose(2, 1, 0)[::-1, ::-1, :],
            _lps_to_ras_affine([(-sx, 0, 0), (0, -sy, 0), (0, 0, sz)], (ox + (nx - 1) * sx, oy + (ny - 1) * sy, oz)),
        ),
        # axes permuted: voxel (i, j, k) along +S, +P, -L (slices first), e.g. a resliced export
        "permuted": (
            lambda a: a[:, :, ::-1],
            _lps_to_ras_affine([(0, 0, sz), (0, sy, 0), (-sx, 0, 0)], (ox + (nx - 1) * sx, oy, oz)),
        ),
    }


def write_nifti_case(case_dir: Path, layout: str = "lps", *, label_map: bool = False, glands=("L", "R")) -> None:
    hu, left, right = _canonical_phantom()
    to_file, affine = nifti_layouts()[layout]
    case_dir.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(to_file(hu)), affine), case_dir / "image.nii.gz")
    if label_map:
        lab = (right * 1 + left * 2).astype(np.uint8)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(to_file(lab)), affine), case_dir / "label.nii.gz")
        return
    for side, mask in (("L", left), ("R", right)):
        if side in glands:
            img = nib.Nifti1Image(np.ascontiguousarray(to_file(mask.astype(np.uint8))), affine)
            nib.save(img, case_dir / f"Parotid_{side}.nii.gz")


def _load(path: Path) -> nib.Nifti1Image:
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)
    return img


@pytest.mark.parametrize("layout", ["lps", "ras", "permuted"])
def test_nifti_reader_canonical_order(tmp_path: Path, layout: str) -> None:
    write_nifti_case(tmp_path / "split" / "case01", layout)
    hu, left, right = _canonical_phantom()
    # the helper's left gland really is on the patient's left: negative RAS x in world coordinates
    img = _load(tmp_path / "split" / "case01" / "Parotid_L.nii.gz")
    world_ras = nib.affines.apply_affine(img.affine, np.argwhere(np.asanyarray(img.dataobj) > 0))
    assert np.all(world_ras[:, 0] < 0)
    report = SkipReport({})
    (case,) = nifti.iter_split(tmp_path / "split", report)
    assert report.skipped == {} and case.case_id == "case01"
    assert case.spacing_mm_zyx == pytest.approx(NII_SPACING_ZYX)
    np.testing.assert_array_equal(case.hu_zyx, hu)
    np.testing.assert_array_equal(case.masks["Parotid_L"], left)
    np.testing.assert_array_equal(case.masks["Parotid_R"], right)
    assert tuple(np.argwhere(case.hu_zyx == 900.0)[0]) == (6, 3, 10)


def test_nifti_label_map_and_single_gland(tmp_path: Path) -> None:
    split = tmp_path / "split"
    write_nifti_case(split / "a_labelmap", "ras", label_map=True)
    write_nifti_case(split / "b_left_only", glands=("L",))
    _, left, right = _canonical_phantom()
    a, b = nifti.iter_split(split, SkipReport({}))
    np.testing.assert_array_equal(a.masks["Parotid_L"], left)  # label 2 = left
    np.testing.assert_array_equal(a.masks["Parotid_R"], right)  # label 1 = right
    assert list(b.masks) == ["Parotid_L"]


def _edit(path: Path, change) -> None:
    img = _load(path)
    data, affine = change(np.asanyarray(img.dataobj).copy(), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)


def test_nifti_bad_cases_skipped_with_reasons(tmp_path: Path) -> None:
    split = tmp_path / "split"
    write_nifti_case(split / "ok")
    write_nifti_case(split / "shape")
    _edit(split / "shape" / "Parotid_R.nii.gz", lambda d, a: (d[:-1], a))
    write_nifti_case(split / "affine")
    _edit(split / "affine" / "Parotid_L.nii.gz", lambda d, a: (d, a + np.array([[0, 0, 0, 5.0]] * 3 + [[0] * 4])))
    write_nifti_case(split / "nonbinary")
    _edit(split / "nonbinary" / "Parotid_R.nii.gz", lambda d, a: (d * 2 + (d > 0), a))
    write_nifti_case(split / "badlabel", label_map=True)
    _edit(split / "badlabel" / "label.nii.gz", lambda d, a: (d + (d > 1), a))
    write_nifti_case(split / "noimage")
    (split / "noimage" / "image.nii.gz").unlink()
    write_nifti_case(split / "nomask", glands=())
    write_nifti_case(split / "not_hu")
    _edit(split / "not_hu" / "image.nii.gz", lambda d, a: (d + 1024, a))
    write_nifti_case(split / "garbage")
    (split / "garbage" / "Parotid_L.nii.gz").write_bytes(b"not a nifti file")

    report = SkipReport({})
    assert [c.case_id for c in nifti.iter_split(split, report)] == ["ok"]
    why = report.skipped
    assert "shape/Parotid_R.nii.gz: shape (19, 16, 8) differs" in why["shape"]
    assert "affine/Parotid_L.nii.gz: affine differs" in why["affine"]
    assert "nonbinary/Parotid_R.nii.gz: not a label mask: values 3" in why["nonbinary"]
    assert "badlabel/label.nii.gz: not a label mask: values 3" in why["badlabel"]
    assert "no image.nii.gz" in why["noimage"]
    assert "no mask" in why["nomask"]
    assert "not_hu/image.nii.gz: does not look like CT in Hounsfield units" in why["not_hu"]
    assert "garbage/Parotid_L.nii.gz: not a readable NIfTI file" in why["garbage"]
    assert len(why) == 8


def test_nifti_oblique_affine_refused(tmp_path: Path) -> None:
    write_nifti_case(tmp_path / "split" / "tilted")
    path = tmp_path / "split" / "tilted" / "image.nii.gz"
    a = np.radians(10.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0, 0], [np.sin(a), np.cos(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    _edit(path, lambda d, aff: (d, rot @ aff))
    with pytest.raises(InputError) as exc:
        list(nifti.iter_split(tmp_path / "split"))
    assert exc.value.code == ErrorCode.BAD_TRAINING_DATA
    assert str(path) in exc.value.message and "oblique" in exc.value.message


def test_readers_refuse_missing_split_folder(tmp_path: Path) -> None:
    for reader in (openkbp.iter_split, dicom_rtstruct.iter_split, nifti.iter_split):
        with pytest.raises(InputError) as exc:
            list(reader(tmp_path / "nowhere", SkipReport({})))
        assert exc.value.code == ErrorCode.BAD_TRAINING_DATA and "nowhere" in exc.value.message
