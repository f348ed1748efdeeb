"""The shipped (promoted) bundle in model_store/ on real sample patients.

- it loads and predicts with the TensorFlow backend in a process that imports only serving code;
- its model card says what it is (data, splits, metrics, research use);
- ``parotid-seg segment`` on sample patients' DICOM series writes an RTSTRUCT that dciodvfy accepts, that
  plastimatch rasterizes back to the written masks (Dice >= 0.97 on these 4-5 mm grids), and whose glands agree
  with the clinical contours (a regression floor, well below the measured validation medians in the card).
The sample patients come from OpenKBP validation-pats, which was used for model selection: this is a regression
check, not an accuracy claim (the accuracy claim is the model card's `make evaluate` table).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.model_bundle import DEFAULT_STORE, promoted_spec, resolve_bundle
from service.pipeline.metrics import dice
from service.pipeline.rtstruct import write_rtstruct
from service.pipeline.segment import run_segmentation, write_outputs
from service.pipeline.series import load_series
from tests.conftest import require_tool
from tests.pipeline._rtstruct_helpers import plastimatch_rasterize, run_dciodvfy

REPO = Path(__file__).resolve().parents[1]
CLINICAL_DICE_FLOOR = 0.65  # regression floor; pt_203 (large glands) measures 0.70 L / 0.75 R


def test_a_bundle_is_promoted_and_verifies() -> None:
    spec = promoted_spec(DEFAULT_STORE)
    assert spec is not None, "model_store/PROMOTED must name the shipped bundle"
    ref = resolve_bundle(None)
    assert ref.spec == spec


def test_loads_and_predicts_in_tensorflow_with_serving_imports_only() -> None:
    code = (
        "import os, sys, numpy as np\n"
        "os.environ['KERAS_BACKEND'] = 'tensorflow'\n"
        "from service.model_bundle import resolve_bundle, load_bundle\n"
        "m = load_bundle(resolve_bundle(None))\n"
        "import keras\n"
        "assert keras.backend.backend() == 'tensorflow'\n"
        "assert not any(k == 'training' or k.startswith('training.') for k in sys.modules), 'imported training'\n"
        "assert 'torch' not in sys.modules\n"
        "p = m.predict(np.zeros((1, 32, 64, 64, 1), np.float32))\n"
        "assert p.shape == (1, 32, 64, 64, 3) and np.allclose(p.sum(-1), 1, atol=1e-4)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_model_card_states_data_splits_metrics_and_use() -> None:
    ref = resolve_bundle(None)
    card = (ref.path / "MODEL_CARD.md").read_text()
    for needle in (
        "Research use only",
        "not for clinical decisions",
        "OpenKBP",
        "train-pats",
        "validation-pats",
        "test-pats",
        "Dice median",
        "Known limitations",
    ):
        assert needle.lower() in card.lower(), needle
    metrics = json.loads((ref.path / "metrics.json").read_text())
    val = metrics["validation"]
    assert val["n_patients"] >= 20
    assert set(val["summary"]) == {"Parotid_L", "Parotid_R"}


@pytest.mark.parametrize("patient", ["pt_201", "pt_202"])
def test_samples_rtstruct_valid_round_trips_and_matches_clinical(
    patient: str, sample_series_factory, tmp_path: Path
) -> None:
    require_tool("dciodvfy")
    require_tool("plastimatch")
    s = sample_series_factory(patient)
    ct = load_series(s.ct_dir)
    ref_rs = tmp_path / "clinical.dcm"
    write_rtstruct(
        ct,
        {"Parotid_L": s.parotid_l_zyx, "Parotid_R": s.parotid_r_zyx},
        ref_rs,
        model_name="clinical",
        model_version="reference",
    )
    result = run_segmentation(s.ct_dir, reference=ref_rs)
    rs, qa_path = tmp_path / "rs.dcm", tmp_path / "qa.json"
    write_outputs(result, rs, qa_path)
    _, errors, _ = run_dciodvfy(rs)
    assert errors == []
    back = plastimatch_rasterize(rs, s.ct_dir, tmp_path / "pm", ct)
    for name, g in result.glands.items():
        assert dice(back[name], g.mask_zyx) >= 0.97, name
    qa = json.loads(qa_path.read_text())
    for name in ("Parotid_L", "Parotid_R"):
        assert qa["glands"][name]["reference"]["dice"] >= CLINICAL_DICE_FLOOR, (name, qa["glands"][name])
    assert qa["status"] in ("ok", "review")


def test_cli_on_a_sample_patient(sample_series_factory, tmp_path: Path) -> None:
    s = sample_series_factory("pt_203", "FFS")
    out = tmp_path / "rs.dcm"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "segment",
            str(s.ct_dir),
            "--output",
            str(out),
            "--qa",
            str(tmp_path / "qa.json"),
            "--preview",
            str(tmp_path / "p.png"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[100.0%] done" in proc.stderr
    ct = load_series(s.ct_dir)
    from service.pipeline.rtstruct_read import read_rtstruct_masks

    got = read_rtstruct_masks(out, ct, ["Parotid_L", "Parotid_R"])
    assert dice(got["Parotid_L"], s.parotid_l_zyx) >= CLINICAL_DICE_FLOOR
    assert dice(got["Parotid_R"], s.parotid_r_zyx) >= CLINICAL_DICE_FLOOR
