"""``parotid-seg evaluate``: a commissioning report on a folder of patients (CT + reference RTSTRUCT + RTDOSE).

Constructed patients with the oracle bundle (its contours are known exactly) give hand-checked mean doses; the
OpenKBP sample patients with their real clinical dose, written as CT + RTSTRUCT + RTDOSE, run the shipped model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.commission_factory import write_patient

SPACING = (2.5, 4.0, 4.0)  # the default plan's grid: no resampling, so the oracle's contours are the blocks exactly


@pytest.fixture(scope="module")
def oracle_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_oracle_bundle(store, promote=True)
    return store


def _constructed_cohort(root: Path) -> Path:
    """Two constructed patients (hand-checkable doses) and one without an RTSTRUCT (must fail alone)."""
    hu, expected = oracle_phantom()
    nz, ny, nx = hu.shape
    ref_r = expected["Parotid_R"].copy()
    z, y, x = np.nonzero(expected["Parotid_R"])
    ref_r[z.min() : z.max() + 1, y.min() - 4 : y.min(), x.min() : x.max() + 1] = True  # 4 rows more anteriorly
    dose = np.zeros(hu.shape, dtype=np.float32)
    dose[:, : ny // 2, :] = 30.0  # anterior half
    dose[:, ny // 2 :, :] = 50.0  # posterior half
    refs = {"PAROTID RT": ref_r, "Parotid Lt": expected["Parotid_L"]}  # clinic ROI names: matched as synonyms
    origin = (-100.0, -120.0, -50.0)
    write_patient(root / "p1", hu, SPACING, origin, refs, dose)
    write_patient(root / "p2", hu, SPACING, origin, refs)  # no dose
    (root / "p3").mkdir()
    write_patient(root / "p3_src", hu, SPACING, origin, refs)
    (root / "p3_src" / "RS.dcm").unlink()
    (root / "p3_src" / "ct").rename(root / "p3" / "ct")
    (root / "p3_src").rmdir()
    return root


def test_constructed_cohort_report_with_hand_checked_doses(oracle_store: Path, tmp_path: Path) -> None:
    data = _constructed_cohort(tmp_path / "data")
    out = tmp_path / "report"
    tol = tmp_path / "tol.json"
    tol.write_text(
        json.dumps(
            {"min_patients": 2, "max_failed_patients": 1, "median_dice_min": 0.7, "median_surface_dice_2mm_min": 0.7}
        )
    )
    args = ["--model-store", str(oracle_store), "evaluate", str(data), "--output", str(out), "--tolerances", str(tol)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_patients"] == 2 and list(summary["failed"]) == ["p3"]
    assert "error[BAD_REFERENCE]" in summary["failed"]["p3"] and "no RTSTRUCT" in summary["failed"]["p3"]
    rows = {(r["patient"], r["gland"]): r for r in _csv(out / "per_patient.csv")}
    r = rows[("p1", "Parotid_R")]
    # the oracle's contour is the block: rows ny/2-4 .. ny/2+5, 4 at 30 Gy and 6 at 50 Gy -> 42 Gy; the reference
    # adds 4 rows at 30 Gy in front -> (8 * 30 + 6 * 50) / 14 = 38.571 Gy; difference +3.429 Gy; D50 50 vs 30 Gy
    assert float(r["mean_dose_pred_gy"]) == pytest.approx(42.0, abs=1e-3)
    assert float(r["mean_dose_ref_gy"]) == pytest.approx(540 / 14, abs=1e-3)
    assert float(r["mean_dose_diff_gy"]) == pytest.approx(42.0 - 540 / 14, abs=1e-3)
    assert float(r["d50_pred_gy"]) == pytest.approx(50.0, abs=1e-3) and float(r["d50_ref_gy"]) == pytest.approx(
        30.0, abs=1e-3
    )
    assert float(r["anterior_shortfall_mm"]) == pytest.approx(16.0)  # 4 rows of 4 mm
    assert float(r["dice"]) == pytest.approx(2 * 10 / (10 + 14), abs=1e-4)  # 10 vs 14 rows of the same block
    assert (
        float(rows[("p1", "Parotid_L")]["dice"]) == 1.0 and float(rows[("p1", "Parotid_L")]["mean_dose_diff_gy"]) == 0
    )
    assert rows[("p2", "Parotid_L")]["mean_dose_ref_gy"] == ""  # p2 has no RTDOSE
    v = summary["verdict"]
    # Dice medians 0.833 (R) / 1.0 (L) >= 0.7, surface Dice 0.757 / 1.0 >= 0.7, 2 patients, 1 failure allowed; the
    # only failure: Parotid_R's median |mean-dose difference| over the patients with a dose, 3.43 Gy > 2 Gy
    failing = [(c["criterion"], c["what"]) for c in v["checks"] if c["result"] != "pass"]
    assert failing == [("median_abs_mean_dose_diff_gy_max", "Parotid_R: median |mean_dose_diff_gy|")], v
    assert v["result"] == "fail"


def _csv(path: Path) -> list[dict]:
    import csv

    with path.open() as fh:
        return list(csv.DictReader(fh))
