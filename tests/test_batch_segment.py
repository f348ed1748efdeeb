"""``parotid-seg segment --batch``: every CT series under the inputs, one output set each, a summary, an exit status
that says whether any failed (oracle bundle: the expected contours are known)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from service.cli import main
from service.pipeline.metrics import dice
from service.pipeline.rtstruct_read import read_rtstruct_masks
from service.pipeline.series import load_series
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.dicom_factory import write_ct_series


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_oracle_bundle(store, promote=True)
    return store


def test_batch_over_patients_and_series(oracle_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    hu, expected = oracle_phantom()
    data = tmp_path / "data"
    write_ct_series(data / "patient_a", hu, (2.5, 4.0, 4.0), (0.0, 0.0, 0.0))
    write_ct_series(data / "patient_b" / "study" / "ct", hu, (2.5, 4.0, 4.0), (10.0, 0.0, 0.0), "FFS")  # feet first
    write_ct_series(data / "patient_b" / "scout", hu[:2], (2.5, 4.0, 4.0), (0.0, 0.0, 0.0))  # too few slices
    (data / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    rc = main(["--model-store", str(oracle_store), "segment", str(data), "--batch", str(out)])
    err = capsys.readouterr().err
    assert rc == 3, err  # some series failed
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["folder"], r["status"]) for r in rows] == [
        ("series_001", "ok"),
        ("series_002", "failed"),
        ("series_003", "ok"),
    ]  # fmt: skip  (ordered by first file path: patient_a, patient_b/scout, patient_b/study)
    assert "error[TOO_FEW_SLICES]" in rows[1]["error"] and not (out / "series_002").exists()
    assert rows[0]["input_folder"].endswith("patient_a") and rows[2]["input_folder"].endswith("study/ct")
    assert "[3/3] series_003: QA" in err and "2 of 3 series segmented, 1 failed" in err
    for row, src in ((rows[0], data / "patient_a"), (rows[2], data / "patient_b" / "study" / "ct")):
        folder = out / row["folder"]
        assert {p.name for p in folder.iterdir()} == {"rtstruct.dcm", "qa.json", "preview.png"}
        ct = load_series(src)
        back = read_rtstruct_masks(folder / "rtstruct.dcm", ct, ["Parotid_L", "Parotid_R"])
        for g in ("Parotid_L", "Parotid_R"):
            assert dice(back[g], expected[g]) > 0.95, (row["folder"], g)
            assert float(row[f"{g}_cc"]) == pytest.approx(expected[g].sum() * 2.5 * 4 * 4 / 1000, rel=0.05)


def test_batch_all_ok_exits_0_and_refuses_single_series_flags(oracle_store: Path, tmp_path: Path) -> None:
    hu, _ = oracle_phantom()
    write_ct_series(tmp_path / "in" / "a", hu, (2.5, 4.0, 4.0), (0.0, 0.0, 0.0))
    args = ["--model-store", str(oracle_store), "segment", str(tmp_path / "in"), "--batch", str(tmp_path / "out")]
    assert main([*args, "--quiet"]) == 0
    assert main([*args, "--qa", str(tmp_path / "qa.json")]) == 2
    assert main(["--model-store", str(oracle_store), "segment", str(tmp_path / "nothing"), "--batch", "x"]) == 2


def test_batch_outputs_seg_nifti_uncertainty(oracle_store: Path, tmp_path: Path) -> None:
    """``--batch-outputs seg,nifti,uncertainty``: per series a DICOM SEG, NIfTI masks and the uncertainty map, the
    masks the same as the RTSTRUCT's; the flag is refused without --batch and an unknown output name is refused."""
    import nibabel as nib
    import numpy as np
    import pydicom

    from service.review.nifti import ras_to_zyx

    hu, expected = oracle_phantom()
    write_ct_series(tmp_path / "in" / "a", hu, (2.5, 4.0, 4.0), (0.0, 0.0, 0.0))
    out = tmp_path / "out"
    args = ["--model-store", str(oracle_store), "segment", str(tmp_path / "in"), "--quiet"]
    assert main([*args, "--batch", str(out), "--batch-outputs", "seg,nifti,uncertainty"]) == 0
    folder = out / "series_001"
    assert {p.name for p in folder.iterdir()} == {"rtstruct.dcm", "qa.json", "preview.png", "seg.dcm",
                                                  "masks_Parotid_L.nii.gz", "masks_Parotid_R.nii.gz",
                                                  "uncertainty.nii.gz"}  # fmt: skip
    seg = pydicom.dcmread(folder / "seg.dcm")
    assert seg.Modality == "SEG" and {s.SegmentLabel for s in seg.SegmentSequence} == {"Parotid_L", "Parotid_R"}
    ct = load_series(tmp_path / "in" / "a")
    back = read_rtstruct_masks(folder / "rtstruct.dcm", ct, ["Parotid_L", "Parotid_R"])
    for g in ("Parotid_L", "Parotid_R"):
        nifti = ras_to_zyx(np.asarray(nib.load(folder / f"masks_{g}.nii.gz").dataobj)).astype(bool)
        assert dice(nifti, expected[g]) > 0.95 and dice(nifti, back[g]) > 0.95
    assert nib.load(folder / "uncertainty.nii.gz").shape == hu.shape[::-1]
    assert main([*args, "--output", str(tmp_path / "rs.dcm"), "--batch-outputs", "seg"]) == 2  # not without --batch
    assert not (tmp_path / "rs.dcm").exists()
    with pytest.raises(SystemExit):
        main([*args, "--batch", str(tmp_path / "o2"), "--batch-outputs", "seg,stl"])
