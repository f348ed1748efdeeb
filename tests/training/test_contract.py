"""The preprocessing contract (docs/architecture.md): training's data path and serving's pipeline give the same arrays.

For an OpenKBP sample patient:
- training: the patient written as an OpenKBP CSV folder, read by ``training.data.openkbp.read_patient`` and
  prepared by ``training.dataset.prepare_case``;
- serving: the same patient written as a DICOM CT series (head-first and feet-first supine), read by
  ``service.pipeline.series.load_series`` and preprocessed by ``service.pipeline.preprocess.preprocess_volume``
  with the same Plan.

Tolerance: the HU volumes must be identical. The network inputs must be identical when both sides see the same
spacing. The loader takes the slice spacing from (0020,0032) Image Position (Patient) differences, which can
differ from the CSV's spacing in the last bit (pt_206: 2.6999999999999997 mm vs 2.7 mm); the resampling
coordinates then differ by ~1e-15 voxel, which can at most flip the last bit of a float32 result, so there the
arrays must agree within 1e-6 (normalised units; 0.00025 HU with the default plan). Measured: bit-identical for
all eight sample patients, HFS and FFS.

The second test feeds one patient through all three training readers (OpenKBP CSV, DICOM CT + RTSTRUCT, NIfTI) and
requires the same CaseData and the same prepared image and label arrays (NIfTI stores its affine in float32; the
reader rounds the spacing to 1e-5 mm, so 2.7 mm stays 2.7 mm and its arrays are bit-identical too).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from service.pipeline.plan import Plan
from service.pipeline.preprocess import preprocess_volume
from service.pipeline.rtstruct import write_rtstruct
from service.pipeline.series import load_series
from tests.conftest import load_sample_canonical, require_samples, write_sample_series
from training.data import dicom_rtstruct, nifti, openkbp
from training.data.case import CaseData
from training.dataset import prepare_case

PLANS = {"default": Plan.model_validate({}), "fine": Plan.model_validate({"spacing_mm_zyx": (2.0, 3.0, 3.0)})}


def assert_same_input(a: np.ndarray, b: np.ndarray, spacing_a: tuple, spacing_b: tuple) -> None:
    """Bit-identical for identical spacings; within 1e-6 when they differ in the last bit (module docstring)."""
    assert a.dtype == b.dtype == np.float32
    assert a.shape == b.shape
    if tuple(spacing_a) == tuple(spacing_b):
        np.testing.assert_array_equal(a, b)
    else:
        assert spacing_a == pytest.approx(spacing_b, rel=1e-9, abs=0)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def write_openkbp_csv(patient: str, pt_dir: Path) -> Path:
    """A sample patient in the OpenKBP CSV format (sparse ct.csv, structure CSVs, voxel_dimensions.csv)."""
    raw = np.load(require_samples() / f"{patient}.npz")
    pt_dir.mkdir(parents=True)
    flat = raw["ct"].reshape(-1)
    idx = np.flatnonzero(flat)
    rows = "\n".join(f"{i},{v}" for i, v in zip(idx.tolist(), flat[idx].tolist(), strict=True))
    (pt_dir / "ct.csv").write_text(f",data\n{rows}\n")
    for fname, key in (("LeftParotid.csv", "parotid_l"), ("RightParotid.csv", "parotid_r")):
        (pt_dir / fname).write_text(",data\n" + "".join(f"{i},\n" for i in np.flatnonzero(raw[key]).tolist()))
    (pt_dir / "voxel_dimensions.csv").write_text("\n".join(repr(float(s)) for s in raw["spacing_mm"]) + "\n")
    return pt_dir


@pytest.mark.parametrize(
    ("patient", "position", "plan_name"),
    [
        ("pt_201", "HFS", "default"),
        ("pt_201", "FFS", "default"),
        ("pt_206", "HFS", "fine"),
        ("pt_206", "FFS", "default"),
    ],
)
def test_training_and_serving_prepare_identical_inputs(
    tmp_path: Path, sample_series_factory, patient: str, position: str, plan_name: str
) -> None:
    plan = PLANS[plan_name]
    case = openkbp.read_patient(write_openkbp_csv(patient, tmp_path / patient))
    training_input = prepare_case(case, plan).image_zyx

    series = sample_series_factory(patient, position)
    ct = load_series(series.ct_dir)
    serving_input = preprocess_volume(ct, plan)

    hu, spacing, _, _ = load_sample_canonical(patient)  # conftest's own conversion agrees with the reader's
    np.testing.assert_array_equal(case.hu_zyx, hu)
    assert case.spacing_mm_zyx == spacing
    np.testing.assert_array_equal(ct.array_zyx, case.hu_zyx)
    assert_same_input(serving_input, training_input, ct.spacing_mm_zyx, case.spacing_mm_zyx)


def _write_nifti(case: CaseData, case_dir: Path) -> None:
    """Canonical arrays as NIfTI in RAS+ voxel order (i toward the patient's right, j anterior)."""
    sz, sy, sx = case.spacing_mm_zyx
    nz, ny, nx = case.hu_zyx.shape
    # voxel (i, j, k) = canonical (k, ny-1-j, nx-1-i); RAS world of canonical (0, 0, 0) placed at the origin
    affine = np.array([[sx, 0, 0, -(nx - 1) * sx], [0, sy, 0, -(ny - 1) * sy], [0, 0, sz, 0.0], [0, 0, 0, 1]])

    def to_file(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.transpose(2, 1, 0)[::-1, ::-1, :])

    case_dir.mkdir(parents=True)
    nib.save(nib.Nifti1Image(to_file(case.hu_zyx.astype(np.int16)), affine), case_dir / "image.nii.gz")
    for name, mask in case.masks.items():
        nib.save(nib.Nifti1Image(to_file(mask.astype(np.uint8)), affine), case_dir / f"{name}.nii.gz")


def test_all_three_readers_agree_on_a_sample_patient(tmp_path: Path) -> None:
    patient = "pt_206"
    plan = PLANS["default"]
    from_csv = openkbp.read_patient(write_openkbp_csv(patient, tmp_path / "openkbp" / patient))

    sample = write_sample_series(patient, tmp_path / "dicom" / patient / "CT", "FFS")
    ct = load_series(sample.ct_dir)
    masks = {"PAROTID_LT": sample.parotid_l_zyx, "Rt Parotid": sample.parotid_r_zyx}
    write_rtstruct(ct, masks, tmp_path / "dicom" / patient / "RS.dcm", model_name="reference", model_version="0")
    from_dicom = dicom_rtstruct.read_patient(tmp_path / "dicom" / patient)

    _write_nifti(from_csv, tmp_path / "nifti" / patient)
    from_nifti = nifti.read_case(tmp_path / "nifti" / patient)

    reference = prepare_case(from_csv, plan)
    assert sorted(from_csv.masks) == ["Parotid_L", "Parotid_R"]
    for other in (from_dicom, from_nifti):
        assert other.case_id == patient
        np.testing.assert_array_equal(other.hu_zyx, from_csv.hu_zyx)
        assert sorted(other.masks) == sorted(from_csv.masks)
        for name, mask in from_csv.masks.items():
            np.testing.assert_array_equal(other.masks[name], mask, err_msg=name)
        prepared = prepare_case(other, plan)
        assert_same_input(prepared.image_zyx, reference.image_zyx, other.spacing_mm_zyx, from_csv.spacing_mm_zyx)
        np.testing.assert_array_equal(prepared.label_zyx, reference.label_zyx)
        assert prepared.present == reference.present == ("Parotid_R", "Parotid_L")
    # the left gland lies at larger x (patient's left) in every reader's output
    left_x = np.argwhere(from_dicom.masks["Parotid_L"])[:, 2].mean()
    right_x = np.argwhere(from_dicom.masks["Parotid_R"])[:, 2].mean()
    assert left_x > right_x + 10
