"""End to end through ``parotid-seg segment`` with the oracle bundle: geometry and laterality with known masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.cli import main
from service.pipeline.rtstruct_read import read_rtstruct_masks
from service.pipeline.series import load_series
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.dicom_factory import write_ct_series

SPACING = (2.5, 4.0, 4.0)


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_oracle_bundle(store, promote=True)
    return store


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
def test_laterality_and_geometry_through_the_cli(position: str, oracle_store: Path, tmp_path: Path) -> None:
    hu, expected = oracle_phantom()
    origin = (-126.0, -130.0, 40.0)
    ct_dir = tmp_path / "ct"
    write_ct_series(ct_dir, hu, SPACING, origin, position)
    rs, qa, png = tmp_path / "rs.dcm", tmp_path / "qa.json", tmp_path / "preview.png"
    rc = main(
        [
            "--model-store",
            str(oracle_store),
            "segment",
            str(ct_dir),
            "--output",
            str(rs),
            "--qa",
            str(qa),
            "--preview",
            str(png),
            "--quiet",
        ]
    )
    assert rc == 0
    ct = load_series(ct_dir)
    got = read_rtstruct_masks(rs, ct, ["Parotid_L", "Parotid_R"])
    for name in ("Parotid_L", "Parotid_R"):
        assert np.array_equal(got[name], expected[name]), f"{position}: {name} differs from the oracle mask"
    # Parotid_L lies on the patient's left: +x in DICOM LPS, in the contour coordinates themselves
    ds = pydicom.dcmread(rs)
    names = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
    mean_x = {}
    for roi in ds.ROIContourSequence:
        pts = np.concatenate([np.array(c.ContourData, dtype=float).reshape(-1, 3) for c in roi.ContourSequence])
        mean_x[names[roi.ReferencedROINumber]] = pts[:, 0].mean()
    assert mean_x["Parotid_L"] > 0 > mean_x["Parotid_R"]
    report = json.loads(qa.read_text())
    assert report["model"] == {"name": "oracle", "version": "1.0.0"}
    assert report["input"]["patient_position"] == position
    assert report["glands"]["Parotid_L"]["centroid_lps_mm"][0] > report["glands"]["Parotid_R"]["centroid_lps_mm"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_metrics_in_qa(oracle_store: Path, tmp_path: Path) -> None:
    hu, _ = oracle_phantom()
    ct_dir = tmp_path / "ct"
    write_ct_series(ct_dir, hu, SPACING, (0.0, 0.0, 0.0), "HFS")
    first = tmp_path / "first.dcm"
    assert main(["--model-store", str(oracle_store), "segment", str(ct_dir), "--output", str(first), "--quiet"]) == 0
    qa = tmp_path / "qa.json"
    rc = main(
        [
            "--model-store",
            str(oracle_store),
            "segment",
            str(ct_dir),
            "--output",
            str(tmp_path / "rs.dcm"),
            "--qa",
            str(qa),
            "--reference",
            str(first),
            "--quiet",
        ]
    )
    assert rc == 0
    ref = json.loads(qa.read_text())["glands"]["Parotid_L"]["reference"]
    assert ref["dice"] == pytest.approx(1.0)
    assert ref["hd95_mm"] == pytest.approx(0.0)


def test_rejected_input_exits_2_with_one_line_and_writes_nothing(
    oracle_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hu, _ = oracle_phantom((8, 32, 32))  # fewer slices than the plan's minimum
    ct_dir = tmp_path / "ct"
    write_ct_series(ct_dir, hu, SPACING, (0.0, 0.0, 0.0), "HFS")
    out = tmp_path / "out"
    out.mkdir()
    rc = main(
        [
            "--model-store",
            str(oracle_store),
            "segment",
            str(ct_dir),
            "--output",
            str(out / "rs.dcm"),
            "--qa",
            str(out / "qa.json"),
            "--preview",
            str(out / "p.png"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error[TOO_FEW_SLICES]: ")
    assert list(out.iterdir()) == []


def test_unknown_model_is_a_typed_error(oracle_store: Path, tmp_path: Path, capsys) -> None:
    rc = main(
        [
            "--model-store",
            str(oracle_store),
            "segment",
            str(tmp_path),
            "--output",
            str(tmp_path / "rs.dcm"),
            "--model",
            "nope:9",
        ]
    )
    assert rc == 2
    assert capsys.readouterr().err.startswith("error[MODEL_NOT_FOUND]: ")
