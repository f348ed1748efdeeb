"""Training that outlives a machine: widen a bundle (Net2WiderNet) into a new run, write a committable float16
resume checkpoint, seed a fresh run folder from it (as on a new machine), go on, and export the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.model_bundle import resolve_bundle, verify_bundle
from tests.training.test_train_smoke import REPO, _export, _train, _write_openkbp_patient


@pytest.mark.timeout(900)
def test_widen_checkpoint_and_resume_on_a_new_machine(tmp_path: Path) -> None:
    import keras

    data = tmp_path / "data"
    for n, split in ((0, "train-pats"), (1, "validation-pats")):
        _write_openkbp_patient(data / split / f"pt_{n}", seed=n)
    base = ["--train-dir", str(data / "train-pats"), "--val-dir", str(data / "validation-pats"), "--threads", "1"]
    base += ["--steps-per-epoch", "2", "--depth", "2"]
    narrow_run = tmp_path / "narrow"
    first = _train([*base, "--output", str(narrow_run), "--base-filters", "2", "--epochs", "1"])
    assert first.returncode == 0, first.stderr[-3000:]
    store = tmp_path / "store"
    assert (
        _export(["--run", str(narrow_run), "--store", str(store), "--name", "n", "--version", "1.0.0"]).returncode == 0
    )
    bundle = resolve_bundle("n:1.0.0", store).path

    # widened with lr 0 and no noise: the wide network computes the bundle's function
    wide_run = tmp_path / "wide"
    wide_args = [*base, "--output", str(wide_run), "--base-filters", "4", "--max-filters", "64", "--lr", "0"]
    wide_args += ["--init-weights", str(bundle), "--widen", "--widen-noise", "0"]
    wide = _train([*wide_args, "--epochs", "1"])
    assert wide.returncode == 0, wide.stderr[-3000:]
    state = json.loads((wide_run / "state.json").read_text())
    assert state["base_filters"] == 4 and state["max_filters"] == 64 and state["init_from"]["widened"]["layers"] > 0
    x = np.random.default_rng(0).normal(size=(1, 16, 32, 32, 1)).astype(np.float32)
    narrow_model = keras.saving.load_model(bundle / "model.keras", compile=False)
    wide_model = keras.saving.load_model(wide_run / "last.keras", compile=False)
    # (exact in real arithmetic; this 2-filter net's layer norms over 2 channels amplify float32 rounding, so the
    # tolerance is loose here: tests/training/test_widen.py checks the function tightly)
    unrelated = keras.saving.load_model(narrow_run / "last.keras", compile=False)
    widened = np.asarray(wide_model(x))
    np.testing.assert_allclose(widened, np.asarray(narrow_model(x)), atol=0.02)
    assert wide_model.count_params() > 3 * unrelated.count_params()
    # a network that is not half as wide is refused with a typed error, no traceback
    bad_args = [*base, "--output", str(tmp_path / "bad"), "--base-filters", "6", "--init-weights", str(bundle)]
    bad = _train([*bad_args, "--widen", "--epochs", "1"])
    assert bad.returncode == 2 and "BAD_INIT_WEIGHTS" in bad.stderr and "Traceback" not in bad.stderr

    # the committable checkpoint: float16 weights + the run's records, then a new machine resumes from it
    ckpt = tmp_path / "checkpoints" / "wide"
    saved = subprocess.run(
        [sys.executable, "-m", "training.checkpoint", str(wide_run), str(ckpt)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert saved.returncode == 0, saved.stderr[-3000:]
    assert {p.name for p in ckpt.iterdir()} >= {"weights.npz", "best_dice.npz", "state.json", "plan.json", "log.csv"}
    with np.load(ckpt / "weights.npz") as d:
        assert all(d[k].dtype == np.float16 for k in d.files)
    fresh_run = tmp_path / "fresh"  # an empty run folder: nothing of the old machine but the checkpoint
    resumed = _train([*wide_args, "--output", str(fresh_run), "--epochs", "2", "--resume-from", str(ckpt)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "seeded from the resume checkpoint" in resumed.stderr and "resuming after epoch 1" in resumed.stderr
    assert json.loads((fresh_run / "state.json").read_text())["epoch"] == 2
    assert len((fresh_run / "log.csv").read_text().strip().splitlines()) == 3  # header + both epochs
    again = keras.saving.load_model(fresh_run / "last.keras", compile=False)  # lr 0: float16-rounded weights
    for got, kept in zip(again.get_weights(), wide_model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, kept.astype(np.float16).astype(np.float32))
    # the resumed run exports (its best checkpoint came from the float16 copy) and the bundle verifies
    exp = _export(["--run", str(fresh_run), "--store", str(store), "--name", "w", "--version", "2.0.0"])
    assert exp.returncode == 0, exp.stderr[-3000:]
    verify_bundle(resolve_bundle("w:2.0.0", store))
