"""Issue 13's evaluation metrics on constructed cases whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.pipeline import metrics as M
from service.pipeline.metrics_regional import anterior_shortfall_mm, dose_in_mask, missed_by_third
from training.evaluate_report import card_lines, cohort_summary, gland_metrics


def test_both_hd95_definitions_and_surface_dice_by_hand() -> None:
    d_ab, d_ba = np.array([0.0, 1.0, 3.0]), np.array([2.5, 4.0])
    # directed P95s (linear interpolation): [0, 1, 3] -> 1 + 0.9 * 2 = 2.8; [2.5, 4] -> 2.5 + 0.95 * 1.5 = 3.925
    assert M._hd95(d_ab, d_ba) == pytest.approx(3.925)
    # pooled: sorted [0, 1, 2.5, 3, 4], rank 0.95 * 4 = 3.8 -> 3 + 0.8 * 1 = 3.8 (never above the max definition)
    assert M.hd95_pooled_mm(d_ab, d_ba) == pytest.approx(3.8)
    assert M.surface_dice(d_ab, d_ba, 2.0) == pytest.approx(2 / 5)  # 0, 1 within 2 mm; none of B's
    assert M.surface_dice(d_ab, d_ba, 3.0) == pytest.approx(4 / 5)  # 0, 1, 3 and 2.5
    assert math.isnan(M.surface_dice(np.zeros(0), d_ba, 2.0)) and math.isnan(M.hd95_pooled_mm(d_ab, np.zeros(0)))


def test_surface_report_on_masks() -> None:
    a = np.zeros((10, 10, 10), dtype=bool)
    a[3:7, 3:7, 3:7] = True
    same = M.surface_report_mm(a, a, (1.0, 1.0, 1.0))
    assert same == {"hd95_mm": 0.0, "hd95_pooled_mm": 0.0, "msd_mm": 0.0, "surface_dice_2mm": 1.0,
                    "surface_dice_3mm": 1.0}  # fmt: skip
    b = np.roll(a, 3, axis=2)  # shifted 3 voxels of 1 mm along x: the far faces are 3 mm apart
    rep = M.surface_report_mm(a, b, (1.0, 1.0, 1.0))
    assert rep["hd95_pooled_mm"] <= rep["hd95_mm"] == pytest.approx(3.0)
    assert 0 < rep["surface_dice_2mm"] < rep["surface_dice_3mm"] == 1.0


def _block(shape=(4, 12, 12)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def test_missed_by_third_follows_the_midline_of_each_side() -> None:
    ref = _block()
    ref[:, 2:6, 0:9] = True  # x 0..8: thirds x 0-2, 3-5, 6-8
    pred = _block()
    pred[:, 2:6, 0:6] = True  # covers x 0..5
    pred[:, 2:4, 3:6] = False  # ...but only half (in y) of x 3..5
    # Parotid_R lies on the patient's right (small x): its medial third is the one at larger x
    assert missed_by_third(pred, ref, "Parotid_R") == {"medial": 1.0, "middle": 0.5, "lateral": 0.0}
    assert missed_by_third(pred, ref, "Parotid_L") == {"medial": 0.0, "middle": 0.5, "lateral": 1.0}
    assert all(math.isnan(v) for v in missed_by_third(pred, _block(), "Parotid_L").values())
    with pytest.raises(ValueError, match="side"):
        missed_by_third(pred, ref, "Mandible")


def test_anterior_shortfall_in_mm() -> None:
    ref = _block()
    ref[:, 2:10, 4:8] = True  # anterior-most row y = 2 (y runs anterior -> posterior)
    pred = _block()
    pred[:, 5:10, 4:8] = True  # starts at y = 5: 3 rows short
    assert anterior_shortfall_mm(pred, ref, (2.5, 4.0, 4.0)) == pytest.approx(12.0)
    pred[1, 1, 5] = True  # one voxel beyond the reference's border
    assert anterior_shortfall_mm(pred, ref, (2.5, 4.0, 4.0)) == pytest.approx(-4.0)
    assert math.isnan(anterior_shortfall_mm(_block(), ref, (2.5, 4.0, 4.0)))


def test_mean_dose_and_d50_by_hand() -> None:
    dose = np.zeros((2, 2, 2), dtype=np.float32)
    dose.reshape(-1)[:] = [10, 20, 30, 60, 0, 0, 70, 5]
    mask = np.zeros((2, 2, 2), dtype=bool)
    mask.reshape(-1)[:4] = True
    assert dose_in_mask(dose, mask) == (pytest.approx(30.0), pytest.approx(25.0))  # mean 120/4; median (20+30)/2
    other = np.zeros_like(mask)
    other.reshape(-1)[[2, 3, 6]] = True  # 30, 60, 70
    row = gland_metrics(other, mask, (1.0, 1.0, 1.0), "Parotid_L", dose)
    assert row["mean_dose_pred_gy"] == pytest.approx(160 / 3) and row["mean_dose_ref_gy"] == pytest.approx(30.0)
    assert row["mean_dose_diff_gy"] == pytest.approx(160 / 3 - 30) and row["d50_diff_gy"] == pytest.approx(60 - 25)
    assert row["volume_error_pct"] == pytest.approx(-25.0) and row["dice"] == pytest.approx(4 / 7)
    assert all(math.isnan(v) for v in dose_in_mask(dose, np.zeros_like(mask)))


def test_cohort_summary_size_bands_spearman_thirds_and_dose() -> None:
    ref_cc = [10.0, 15.0, 25.0, 30.0, 40.0, 50.0]
    err = [40.0, 20.0, 5.0, -5.0, -20.0, -30.0]  # larger glands under-contoured: rho = -1
    rows = []
    for i, (r, e) in enumerate(zip(ref_cc, err, strict=True)):
        rows.append({
            "reference_present": True, "ref_cc": r, "pred_cc": r * (1 + e / 100), "volume_error_pct": e,
            "missed_medial": 0.3, "missed_middle": 0.1, "missed_lateral": 0.2 if i % 2 else 0.0,
            "anterior_shortfall_mm": [2.0, 4.0, 8.0, 12.0, 6.0, -4.0][i],
            "mean_dose_pred_gy": 30.0 + [1, -3, 0.5, 2.5, -1, 13][i], "mean_dose_ref_gy": 30.0,
            "mean_dose_diff_gy": [1, -3, 0.5, 2.5, -1, 13][i], "d50_diff_gy": 0.0,
        })  # fmt: skip
    c = cohort_summary(rows)
    bands = c["volume_error_pct_by_reference_size"]
    assert bands["< 20 cc"]["n"] == 2 and bands["< 20 cc"]["median"] == pytest.approx(30.0)
    assert bands["20-35 cc"]["n"] == 2 and bands["20-35 cc"]["median"] == pytest.approx(0.0)
    assert bands[">= 35 cc"]["n"] == 2 and bands[">= 35 cc"]["min"] == pytest.approx(-30.0)
    assert c["spearman_ref_volume_vs_volume_error"]["rho"] == pytest.approx(-1.0)
    assert c["missed_fraction_by_third"]["medial"]["mean"] == pytest.approx(0.3)
    assert c["missed_fraction_by_third"]["lateral"]["mean"] == pytest.approx(0.1)
    assert c["anterior_shortfall_mm"]["median"] == pytest.approx(5.0)  # sorted -4 2 4 6 8 12
    assert c["anterior_shortfall_mm"]["n_at_least_8mm"] == 2
    d = c["mean_dose"]
    assert d["abs_diff_gy"]["median"] == pytest.approx(1.75)  # sorted 0.5 1 1 2.5 3 13
    assert d["abs_diff_gy"]["max"] == pytest.approx(13.0)
    assert d["n_over_2gy"] == 3  # 3, 2.5, 13
    text = "\n".join(card_lines({"cohort": c}))
    assert "Spearman rho between reference volume and volume error -1.00" in text
    assert "median |mean-dose difference| automatic vs reference contour 1.75 Gy" in text
