"""Where the QA verdict goes, end to end through ``parotid-seg segment`` with the oracle bundle: the uncertainty
NIfTI, ``--fail-on-qa`` (exit 3, outputs still written), the RTSTRUCT descriptions, the preview band."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.cli import main
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.dicom_factory import write_ct_series

SPACING = (2.5, 4.0, 4.0)
ORIGIN = (-126.0, -130.0, 40.0)


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_oracle_bundle(store, promote=True)
    return store


def _segment(store: Path, ct_dir: Path, out: Path, *extra: str) -> int:
    return main(
        ["--model-store", str(store), "segment", str(ct_dir), "--output", str(out / "rs.dcm"), "--qa",
         str(out / "qa.json"), "--preview", str(out / "preview.png"), "--uncertainty", str(out / "unc.nii.gz"),
         "--quiet", *extra]
    )  # fmt: skip


def test_clean_phantom_outputs_and_verdict(oracle_store: Path, tmp_path: Path) -> None:
    import nibabel as nib

    from service.review.nifti import ras_affine, ras_to_zyx

    hu, masks = oracle_phantom()
    write_ct_series(tmp_path / "ct", hu, SPACING, ORIGIN, "HFS")
    assert _segment(oracle_store, tmp_path / "ct", tmp_path, "--fail-on-qa", "review") == 0
    qa = json.loads((tmp_path / "qa.json").read_text())
    assert qa["schema_version"] == "1.1" and qa["status"] == "ok", qa["reasons"]
    assert qa["glands"]["Parotid_L"]["signals"]["n_members"] == 3.0  # identity + the two default extra members
    img = nib.load(tmp_path / "unc.nii.gz")
    arr = ras_to_zyx(np.asarray(img.dataobj))
    assert arr.shape == hu.shape and arr.dtype == np.float32 and arr.min() >= 0.0 and arr.max() <= 1.0
    assert np.allclose(img.affine, ras_affine(hu.shape, SPACING, ORIGIN))  # the CT's grid, RAS+ as --nifti
    # the members disagree at the gland boundaries (the scaled member moves them), not deep inside the glands
    from service.pipeline.qa_signals import boundary_band

    inner = np.zeros_like(masks["Parotid_L"])
    inner[16:20, 30:34, 44:48] = True
    assert arr[inner].max() < 0.2 and arr[boundary_band(masks["Parotid_L"], 1)].max() >= 0.66  # 1 of 3 members
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert ds.SeriesDescription.endswith("QA OK") and len(ds.SeriesDescription) <= 64
    assert "QA OK: no automatic concern" in ds.StructureSetDescription
    assert all(r.ROIDescription.startswith("QA OK") for r in ds.StructureSetROISequence)


def test_blanked_slice_phantom_exits_3_with_outputs_written(oracle_store: Path, tmp_path: Path) -> None:
    hu, masks = oracle_phantom()
    k = int(np.flatnonzero(masks["Parotid_L"].any(axis=(1, 2)))[4])
    hu = hu.copy()
    hu[k][hu[k] > -500] = -1000.0
    hu[k][:, [8, 55]] = 0.0  # the skin outline survives
    hu[k][[8, 55], 8:56] = 0.0
    write_ct_series(tmp_path / "ct", hu, SPACING, ORIGIN, "HFS")
    assert _segment(oracle_store, tmp_path / "ct", tmp_path, "--fail-on-qa", "review") == 3
    for name in ("rs.dcm", "qa.json", "preview.png", "unc.nii.gz"):
        assert (tmp_path / name).is_file(), name
    qa = json.loads((tmp_path / "qa.json").read_text())
    assert qa["status"] == "review" and "blanked_slices" in {r["code"] for r in qa["reasons"]}
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert "QA REVIEW" in ds.SeriesDescription and "blanked_slices" in ds.StructureSetDescription
    # --fail-on-qa fail does not trip on a review
    assert _segment(oracle_store, tmp_path / "ct", tmp_path, "--fail-on-qa", "fail") == 0


def test_uncertainty_path_must_be_nifti(oracle_store: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--model-store", str(oracle_store), "segment", "x", "--output", str(tmp_path / "rs.dcm"),
              "--uncertainty", str(tmp_path / "u.png")])  # fmt: skip
    assert exc.value.code == 2
