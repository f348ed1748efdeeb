"""``training.qa_second_opinion`` (issue 14 experiment): two bundles on an OpenKBP-format split give one row per
reference gland with the Dice between their masks and the truth, and a report with the AUROCs; test-pats is
refused."""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path

from tests.bundle_factory import build_test_bundle
from tests.training.test_train_smoke import _write_openkbp_patient
from training.qa_second_opinion import main


def test_two_bundles_on_a_split(tmp_path: Path) -> None:
    split = tmp_path / "validation-pats"
    for i in (1, 2):
        _write_openkbp_patient(split / f"pt_{i}", seed=i)
    a = build_test_bundle(tmp_path / "store", name="a", version="1.0.0")
    out = tmp_path / "report.json"
    assert main(["--bundle", str(a), "--second", str(a), "--data-dir", str(split), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n_glands"] == 4 and len(report["rows"]) == 4
    assert {r["patient"] for r in report["rows"]} == {"pt_1", "pt_2"}
    # the same bundle twice: the two opinions agree wherever the bundle segments anything
    assert all(r["dice_ab"] == 1.0 or r["dice_ab"] != r["dice_ab"] for r in report["rows"])
    assert set(report["1 - dice_ab"]) == {"auroc", "ci95"}


def test_test_pats_is_refused(tmp_path: Path) -> None:
    a = tmp_path / "x"
    code = main(["--bundle", str(a), "--second", str(a), "--data-dir", str(tmp_path / "test-pats"), "--output",
                 str(tmp_path / "r.json")])  # fmt: skip
    assert code == 2 and not (tmp_path / "r.json").exists()
