"""`make evaluate` never rewrites a bundle; `--update-bundle` only on the split the bundle was selected on; model
cards name the data a bundle was actually trained and selected on (OpenKBP or clinic DICOM), with counts."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from service.model_bundle import write_checksums
from service.pipeline.plan import Plan
from tests.bundle_factory import build_test_bundle
from tests.training.test_train_smoke import _write_openkbp_patient
from training.model_card import write_model_card

REPO = Path(__file__).resolve().parents[2]


def _bundle_files(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(bundle.iterdir())}


def _make_command(target: str, **variables: str) -> list[str]:
    """The command `make TARGET` runs for training.evaluate, from `make -n` (the recipe as make expands it)."""
    out = subprocess.run(
        ["make", "-n", target, *(f"{k}={v}" for k, v in variables.items())],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [ln for ln in out.splitlines() if "-m training.evaluate" in ln]
    assert len(lines) == 1, out
    words = shlex.split(lines[0])
    assert words[0] == "KERAS_BACKEND=tensorflow" and words[1].endswith("/python")
    return [sys.executable, *words[2:]]


def _openkbp_data(meta: dict) -> dict:
    return {
        "train_dir": meta["train"],
        "val_dir": meta["val"],
        "format": "openkbp",
        "train_patients_used": 2,
        "train_patients_excluded_missing_gland": [],
        "train_skipped": {"pt_9": f"{meta['train']}/pt_9/ct.csv: missing"},
        "val_skipped": {},
        "val_patients": 1,
        "val_patients_per_epoch": 1,
    }


@pytest.fixture(scope="module")
def selected_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An untrained bundle whose metrics.json says it was selected on a (synthetic) OpenKBP validation split."""
    root = tmp_path_factory.mktemp("eval_safety")
    val = root / "data" / "validation-pats"
    other = root / "data" / "other-pats"
    _write_openkbp_patient(val / "pt_1", seed=1)
    _write_openkbp_patient(other / "pt_2", seed=2)
    # a clinical dose for pt_1: 20 Gy on every voxel the CT holds, 60 Gy in the right gland (RightParotid.csv)
    ct_idx = [int(r.split(",")[0]) for r in (val / "pt_1" / "ct.csv").read_text().splitlines()[1:]]
    right = {int(r.split(",")[0]) for r in (val / "pt_1" / "RightParotid.csv").read_text().splitlines()[1:]}
    rows = "".join(f"{i},{60.0 if i in right else 20.0}\n" for i in ct_idx)
    (val / "pt_1" / "dose.csv").write_text(",data\n" + rows)
    bundle = build_test_bundle(root / "store", name="safety", version="0.1.0", promote=False)
    meta = {"train": str(root / "data" / "train-pats"), "val": str(val), "other": str(other)}
    metrics = {"bundle": "safety:0.1.0", "training": {"architecture": "residual", "base_filters": 2}}
    metrics["data"] = _openkbp_data(meta)
    metrics["validation"] = None
    (bundle / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(bundle, "safety", "0.1.0", metrics, Plan.load(bundle / "plan.json"))
    write_checksums(bundle)
    return bundle, meta


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(900)
def test_make_evaluate_leaves_the_bundle_byte_identical(selected_bundle, tmp_path: Path) -> None:
    bundle, meta = selected_bundle
    before = _bundle_files(bundle)
    for data_dir in (meta["val"], meta["other"]):  # neither the selection split nor other data rewrites it
        cmd = _make_command("evaluate", BUNDLE=str(bundle), VAL_DIR=data_dir, EVAL_OUT=str(tmp_path / "e"))
        assert "--update-bundle" not in cmd
        proc = _run(cmd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((tmp_path / "e" / "summary.json").read_text())
        assert summary["n_patients"] == 1 and "hd95_pooled_mm_median" in summary["summary"]["Parotid_L"]
        assert _bundle_files(bundle) == before
    # the selection split carries a dose: the clinical contours' mean doses are the constructed 20 and 60 Gy
    cohort = json.loads((tmp_path / "e" / "summary.json").read_text())["cohort"]
    assert "mean_dose" not in cohort  # the last run (other-pats) has no dose.csv
    proc = _run(_make_command("evaluate", BUNDLE=str(bundle), VAL_DIR=meta["val"], EVAL_OUT=str(tmp_path / "d")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import csv

    with (tmp_path / "d" / "per_patient.csv").open() as fh:
        rows = {r["gland"]: r for r in csv.DictReader(fh)}
    assert float(rows["Parotid_R"]["mean_dose_ref_gy"]) == pytest.approx(60.0)
    assert float(rows["Parotid_L"]["mean_dose_ref_gy"]) == pytest.approx(20.0)
    assert float(rows["Parotid_L"]["d50_ref_gy"]) == pytest.approx(20.0)
    for key in ("surface_dice_2mm", "hd95_pooled_mm", "missed_medial", "anterior_shortfall_mm", "volume_error_pct"):
        assert key in rows["Parotid_L"]
    assert (
        json.loads((tmp_path / "d" / "summary.json").read_text())["cohort"]["mean_dose"]["ref_mean_dose_gy"]["n"] == 2
    )
    assert _bundle_files(bundle) == before


@pytest.mark.timeout(900)
def test_update_is_refused_on_other_data_and_allowed_on_the_selection_split(selected_bundle, tmp_path: Path) -> None:
    bundle, meta = selected_bundle
    before = _bundle_files(bundle)
    cmd = _make_command("evaluate-update", BUNDLE=str(bundle), VAL_DIR=meta["other"], EVAL_OUT=str(tmp_path / "o"))
    assert cmd[-1] == "--update-bundle"
    refused = _run(cmd)
    assert refused.returncode == 2 and "--update-bundle refused" in refused.stderr
    assert meta["val"] in refused.stderr  # names the split it would accept
    dicom = _run([*cmd[:-1], "--format", "dicom", "--update-bundle"])  # another format
    assert dicom.returncode == 2 and "--update-bundle refused" in dicom.stderr
    assert _bundle_files(bundle) == before

    cmd = _make_command("evaluate-update", BUNDLE=str(bundle), VAL_DIR=meta["val"], EVAL_OUT=str(tmp_path / "v"))
    done = _run(cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    from service.model_bundle import BundleRef, verify_bundle

    verify_bundle(BundleRef("safety", "0.1.0", bundle))
    stored = json.loads((bundle / "metrics.json").read_text())["validation"]
    assert stored["n_patients"] == 1 and stored["data_dir"] == meta["val"]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "Measured with `make evaluate` on 1 OpenKBP `validation-pats` patients" in card
    assert "also used for checkpoint selection" in card


def _card(tmp_path: Path, data: dict, init_from: dict | None = None) -> str:
    bundle = tmp_path / "b"
    bundle.mkdir(exist_ok=True)
    metrics = {"training": {"architecture": "residual", "base_filters": 8, "init_from": init_from}, "data": data}
    write_model_card(bundle, "card", "1.0.0", metrics, Plan())
    return (bundle / "MODEL_CARD.md").read_text()


def test_card_of_an_openkbp_bundle_names_openkbp_its_splits_and_counts(tmp_path: Path) -> None:
    meta = {"train": "data/provided-data/train-pats", "val": "data/provided-data/validation-pats"}
    card = _card(tmp_path, _openkbp_data(meta))
    assert "OpenKBP grand-challenge dataset" in card
    assert "`train-pats` (OpenKBP, folder `data/provided-data/train-pats`), 2 patients used" in card
    assert "`validation-pats` (folder `data/provided-data/validation-pats`), 1 patients" in card
    assert "1 of these patients had no `ct.csv`" in card  # counted from the skipped list, not template text
    assert "`test-pats` is an independent holdout" in card
    assert "4 MiB" not in card and "54 of the 340" not in card


def test_card_of_a_dicom_retrained_bundle_names_the_clinic_data_not_openkbp(tmp_path: Path) -> None:
    data = {
        "train_dir": "/data/clinic/train",
        "val_dir": "/data/clinic/val",
        "format": "dicom",
        "train_patients_used": 41,
        "train_patients_excluded_missing_gland": ["p7", "p9"],
        "train_skipped": {"p3": "no RTSTRUCT"},
        "val_skipped": {},
        "val_patients": 10,
        "val_patients_per_epoch": 10,
    }
    prior = {
        "bundle": "parotid-unet3d:1.1.0",
        "training": {"epoch": 21, "samples_seen": 6300, "train_seconds": 6665.0, "architecture": "residual"},
        "data": {
            "format": "openkbp",
            "train_dir": ".cache/openkbp/provided-data/train-pats",
            "val_dir": ".cache/openkbp/provided-data/validation-pats",
            "train_patients_used": 160,
        },
    }
    card = _card(tmp_path, data, init_from=prior)
    data_section = card.split("## Data and splits")[1].split("## Preprocessing")[0]
    assert "OpenKBP" not in data_section and "test-pats" not in data_section and "4 MiB" not in card
    assert "clinic DICOM (CT series + RTSTRUCT), folder `/data/clinic/train`), 41 patients used" in data_section
    assert "2 left out because a parotid was not contoured" in data_section and "1 unreadable" in data_section
    assert "`val` (folder `/data/clinic/val`), 10 patients" in data_section
    assert "No independent holdout" in data_section
    # the starting model's own data is named, not "same data and splits"
    assert "same data and splits" not in card
    assert "Fine-tuned from parotid-unet3d:1.1.0" in card and "OpenKBP `train-pats`, 160 patients" in card
    assert "OpenKBP's coarse resolution" not in card and "Trained on 41 patients" in card
    assert "Not yet evaluated" in card


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_evaluate_leaves_the_shipped_bundle_byte_identical(tmp_path: Path) -> None:
    """The promoted bundle, evaluated by `make evaluate`'s command on two sample patients in OpenKBP format."""
    from service.model_bundle import resolve_bundle
    from tests.training.test_contract import write_openkbp_csv

    bundle = resolve_bundle(None).path
    before = _bundle_files(bundle)
    data = tmp_path / "validation-pats"
    for patient in ("pt_201", "pt_202"):
        write_openkbp_csv(patient, data / patient)
    cmd = _make_command("evaluate", BUNDLE=str(bundle), VAL_DIR=str(data), EVAL_OUT=str(tmp_path / "e"))
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["n_patients"] == 2 and summary["cohort"]["n_glands"] == 4
    assert _bundle_files(bundle) == before
    # asked to update from these two patients (not its selection split): refused, still untouched
    refused = _run(
        _make_command("evaluate-update", BUNDLE=str(bundle), VAL_DIR=str(data), EVAL_OUT=str(tmp_path / "u"))
    )
    assert refused.returncode == 2 and "--update-bundle refused" in refused.stderr
    assert _bundle_files(bundle) == before
