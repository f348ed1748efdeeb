"""Export a training run as a model bundle: ``python -m training.export --run runs/NAME --version 1.0.0``.

Writes ``<store>/<name>/<version>/`` with model.keras (the chosen checkpoint's weights in a freshly built,
uncompiled network: no optimiser state, no training-only objects), plan.json (the run's preprocessing contract),
metrics.json, MODEL_CARD.md and SHA256SUMS. The bundle is staged in a temporary folder and renamed into place.
``training.evaluate --update-bundle`` later adds the measured validation metrics to metrics.json and the card.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path


def export_bundle(
    run_dir: Path, store: Path, name: str, version: str, weights: str = "best_dice", tta_lr_flip: bool | None = None
) -> Path:
    import keras

    from service.model_bundle import write_checksums
    from service.pipeline.plan import Plan
    from training.model_card import write_model_card
    from training.networks import build_unet

    state = json.loads((run_dir / "state.json").read_text())
    plan = Plan.load(run_dir / "plan.json")
    if tta_lr_flip is not None:
        plan = plan.model_copy(update={"tta_lr_flip": tta_lr_flip})
    final = store / name / version
    if final.exists():
        raise FileExistsError(f"{final} exists: bundles are immutable, choose a new version")
    staging = store / name / f".{version}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = build_unet(state["architecture"], state["base_filters"], state.get("depth", 4), len(plan.labels))
    if weights == "last":
        trained = keras.saving.load_model(run_dir / "last.keras", compile=False, safe_mode=True)
        model.set_weights(trained.get_weights())
    else:
        model.load_weights(run_dir / f"{weights}.weights.h5")
    model.save(staging / "model.keras")
    plan.save(staging / "plan.json")
    data_report = json.loads((run_dir / "data_report.json").read_text())
    metrics = {
        "bundle": f"{name}:{version}",
        "checkpoint": weights,
        "training": {
            k: state.get(k)
            for k in (
                "architecture",
                "base_filters",
                "loss",
                "epoch",
                "samples_seen",
                "train_seconds",
                "best_dice",
                "best_dice_epoch",
                "best_loss",
                "best_loss_epoch",
            )
        },
        "training_val_dice_note": "mean hard Dice on the model grid over the per-epoch validation subset",
        "data": data_report,
        "validation": None,
    }
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log = run_dir / "log.csv"
    if log.exists():
        shutil.copy(log, staging / "training_log.csv")
    write_model_card(staging, name, version, metrics, plan)
    write_checksums(staging)
    os.replace(staging, final)
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--store", type=Path, default=Path("model_store"))
    p.add_argument("--name", default="parotid-unet3d")
    p.add_argument("--version", required=True)
    p.add_argument("--weights", choices=["best_dice", "best_loss", "last"], default="best_dice")
    p.add_argument(
        "--tta",
        choices=["on", "off"],
        default=None,
        help="write left-right flip test-time augmentation into the bundle's plan (default: as trained)",
    )
    args = p.parse_args(argv)
    tta = None if args.tta is None else args.tta == "on"
    path = export_bundle(args.run, args.store, args.name, args.version, args.weights, tta)
    print(f"exported {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
