"""The QA calibration's statistics and its fit on synthetic glands whose quality a signal does / does not predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.pipeline.qa_calibration import CALIBRATION_FILE, load_calibration, quality_estimate
from training.calibrate_qa import calibrate, population_stats, restrict_members
from training.qa_fit import auroc, bootstrap_auroc_ci, fit_logistic, operating_point, sens_spec

REPO = Path(__file__).resolve().parents[2]


def test_auroc_known_values_and_bootstrap() -> None:
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1], bool)) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1], bool)) == 0.5
    rng = np.random.default_rng(1)
    y = np.repeat([False, True], 40)
    s = y + rng.normal(0, 0.7, 80)
    lo, hi = bootstrap_auroc_ci(s, y, [f"p{i // 2}" for i in range(80)], n_boot=300)
    assert lo < auroc(s, y) < hi and hi - lo < 0.4


def test_logistic_fit_and_operating_point() -> None:
    x = np.linspace(-2, 2, 40)[:, None]
    y = x[:, 0] > 0.3
    w, b = fit_logistic(x, y, l2=0.1)
    p = 1 / (1 + np.exp(-(x[:, 0] * w[0] + b)))
    assert w[0] > 0 and auroc(p, y) == 1.0
    t = operating_point(p, y, 0.8)
    sens, spec = sens_spec(p >= t, y)
    assert sens >= 0.8 and spec == 1.0


def _rows(n: int, informative: bool, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        poor = i % 3 == 0
        dis = (0.15 if poor else 0.03) + rng.normal(0, 0.01) if informative else rng.uniform(0.02, 0.1)
        for g in ("Parotid_L", "Parotid_R"):
            rows.append(
                {"patient": f"p{i}", "gland": g, "reference_present": True, "volume_cc": 25.0,
                 "head_width_mm": 150.0, "log_lr_ratio": 0.0, "si_extent_mm": 50.0, "centroid_x_rel": 0.4,
                 "centroid_y_rel": 0.0, "mean_hu": 20.0, "sd_hu": 30.0, "member_dice_mean": 1 - dis,
                 "member_dice_min": 1 - 2 * dis, "member_volume_cv": dis, "band_entropy": 0.3, "band_margin": 0.7,
                 "uncertain_fraction": 0.5, "outside_mass_fraction": 0.0, "mean_probability": 0.85,
                 "dice": 0.6 if poor else 0.85, "hd95_mm": 10.0 if poor else 5.0}
            )  # fmt: skip
    return rows


def test_calibrate_finds_an_informative_signal_and_not_a_noise_one() -> None:
    pop = population_stats(_rows(30, True), "synthetic")
    cal, rep = calibrate(_rows(30, True), pop, [], 2, 1.0, "x:1", 5, ["member_disagreement"])
    assert rep["auroc"] > 0.95 and rep["verdict_sensitivity"] >= 0.8 and rep["model_specificity"] > 0.9
    assert cal.quality_model is not None and cal.quality_model.features == ["member_disagreement"]
    good = quality_estimate({"member_disagreement": 0.03}, cal.quality_model)
    bad = quality_estimate({"member_disagreement": 0.15}, cal.quality_model)
    assert good is not None and bad is not None and good[0] < cal.quality_model.review_threshold <= bad[0]
    assert good[1] > bad[1]  # predicted Dice
    _, noise = calibrate(_rows(30, False, seed=3), pop, [], 2, 1.0, "x:1", 5, ["member_disagreement"])
    assert noise["auroc"] < 0.8  # no signal, no claim


def test_restrict_members_recomputes_from_the_named_members() -> None:
    row = {"member_dice_by_name": {"identity": 0.9, "lr_flip": 0.9, "shift:1,1,1": 0.5, "scale:0.9": 0.8},
           "member_voxels_by_name": {"identity": 100, "lr_flip": 100, "shift:1,1,1": 50, "scale:0.9": 100}}  # fmt: skip
    r = restrict_members(row, ["scale:0.9"])
    assert r["member_dice_min"] == 0.8 and r["member_volume_cv"] == 0.0 and r["n_members"] == 3.0
    assert restrict_members(row, ["shift:1,1,1"])["member_dice_min"] == 0.5


def test_shipped_bundle_carries_its_calibration_in_its_checksums() -> None:
    bundle = REPO / "model_store" / "parotid-unet3d" / "1.1.0"
    cal = load_calibration(bundle)
    assert cal is not None and cal.quality_model is not None and cal.population is not None
    assert CALIBRATION_FILE in (bundle / "SHA256SUMS").read_text()
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["qa_calibration"]["auroc"] == pytest.approx(cal.validation["auroc"])
    assert "QA calibration" in (bundle / "MODEL_CARD.md").read_text()
