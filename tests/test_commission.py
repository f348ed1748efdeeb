"""``parotid-seg evaluate``: a commissioning report on a folder of patients (CT + reference RTSTRUCT + RTDOSE).

Constructed patients with the oracle bundle (its contours are known exactly) give hand-checked mean doses; the
OpenKBP sample patients with their real clinical dose, written as CT + RTSTRUCT + RTDOSE, run the shipped model.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.commission_factory import write_patient
from tests.conftest import require_tool

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


@pytest.fixture(scope="module")
def constructed_report(oracle_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("constructed")
    data = _constructed_cohort(root / "data")
    out = root / "report"
    assert main(["--model-store", str(oracle_store), "evaluate", str(data), "--output", str(out), "--quiet"]) == 0
    return data, out


def test_a_second_run_resumes_and_retries_only_the_failed_patient(
    constructed_report, oracle_store: Path, capsys: pytest.CaptureFixture
) -> None:
    data, out = constructed_report
    kept = {p: (out / "patients" / f"{p}.json").stat().st_mtime_ns for p in ("p1", "p2")}
    before = json.loads((out / "summary.json").read_text())
    assert main(["--model-store", str(oracle_store), "evaluate", str(data), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "[1/3] p1: kept from an earlier run" in err and "[2/3] p2: kept from an earlier run" in err
    assert "[3/3] p3: FAILED error[BAD_REFERENCE]" in err  # retried, fails again
    assert {p: (out / "patients" / f"{p}.json").stat().st_mtime_ns for p in ("p1", "p2")} == kept
    after = json.loads((out / "summary.json").read_text())
    assert after["per_gland"] == before["per_gland"] and after["verdict"] == before["verdict"]
    # defaults: 20 patients needed, no failure allowed
    failing = {c["criterion"] for c in after["verdict"]["checks"] if c["result"] == "fail"}
    assert {"min_patients", "max_failed_patients"} <= failing


def test_the_report_renders_offline_in_headless_chromium(constructed_report, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    _, out = constructed_report
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "Content-Security-Policy" in page
    n_images = page.count("<img ")
    assert n_images == 2 + 4  # Bland-Altman volume and mean dose; 2 glands x 2 patients
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000", "--dump-dom",
         (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'data-images-loaded="{n_images}"' in proc.stdout  # every embedded figure decoded, nothing fetched
    assert "Acceptance verdict" in proc.stdout and "FAIL" in proc.stdout


def test_refusals_before_any_work(oracle_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "p1").mkdir()
    inside = oracle_store / "oracle" / "report"
    assert main(["--model-store", str(oracle_store), "evaluate", str(data), "--output", str(inside)]) == 2
    assert "error[BAD_OUTPUT_DIR]" in capsys.readouterr().err and not inside.exists()
    bad = tmp_path / "tol.json"
    for text, needle in (('{"median_dice": 0.8}', "unknown criteria"), ('{"median_dice_min": "high"}', "number")):
        bad.write_text(text)
        args = ["--model-store", str(oracle_store), "evaluate", str(data), "--output", str(tmp_path / "r")]
        assert main([*args, "--tolerances", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "error[BAD_TOLERANCES]" in err and str(bad) in err and needle in err
    assert not (tmp_path / "r").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--model-store", str(oracle_store), "evaluate", str(empty), "--output", str(tmp_path / "r")]) == 2
    assert "error[EMPTY_INPUT]" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sample_patients_with_their_clinical_dose_and_the_shipped_model(tmp_path: Path) -> None:
    """Real anatomy and real plan doses: OpenKBP samples written as CT + RTSTRUCT + RTDOSE, the promoted bundle."""
    from tests.conftest import SAMPLE_DIR, load_sample_canonical, require_samples
    from tests.dicom_factory import openkbp_to_canonical
    from tests.pipeline._rtstruct_helpers import run_dciodvfy

    require_samples()
    require_tool("dciodvfy")
    data = tmp_path / "data"
    expected = {}
    for patient in ("pt_201", "pt_204"):
        hu, spacing, left, right = load_sample_canonical(patient)
        dose = openkbp_to_canonical(np.load(SAMPLE_DIR / f"{patient}.npz")["dose_gy"])
        nz, ny, nx = hu.shape
        origin = (-(nx - 1) * spacing[2] / 2, -(ny - 1) * spacing[1] / 2, -300.0)
        write_patient(data / patient, hu, spacing, origin, {"Parotid_L": left, "Parotid_R": right}, dose)
        expected[patient] = {"Parotid_L": float(dose[left].mean()), "Parotid_R": float(dose[right].mean())}
        for obj in ("RS.dcm", "RD.dcm"):
            rc, errors, _ = run_dciodvfy(data / patient / obj)
            assert errors == [], (obj, errors)
    out = tmp_path / "report"
    assert main(["evaluate", str(data), "--output", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_patients"] == 2 and summary["failed"] == {}
    for r in _csv(out / "per_patient.csv"):
        # the reference read back from the RTSTRUCT (rasterised again) gets the clinical contour's mean dose
        assert float(r["mean_dose_ref_gy"]) == pytest.approx(expected[r["patient"]][r["gland"]], abs=0.5)
        assert 0 < float(r["mean_dose_pred_gy"]) < 80 and float(r["dice"]) > 0.5
    assert summary["cohort"]["mean_dose"]["abs_diff_gy"]["n"] == 4
    assert (out / "report.html").stat().st_size > 10_000
