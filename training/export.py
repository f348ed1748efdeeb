"""Export a training run as a model bundle: ``python -m training.export --run runs/NAME --version 1.0.0``.

Writes ``<store>/<name>/<version>/`` with model.keras (the chosen checkpoint's weights in a freshly built,
uncompiled network: no optimiser state, no training-only objects), model.onnx (the same network for the optimized
CPU runtimes, ``training.onnx_export``; ``--no-onnx`` leaves it out), plan.json (the run's preprocessing contract),
metrics.json, MODEL_CARD.md and SHA256SUMS. The bundle is staged in a temporary folder and renamed into place.
Repeat ``--run`` to export an ensemble of runs (one model averaging their softmax outputs); an ensemble member
may also be an exported single-network bundle folder.
``training.evaluate --update-bundle`` later adds the measured validation metrics to metrics.json and the card.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any


def export_bundle(
    run_dir: Path | list[Path],
    store: Path,
    name: str,
    version: str,
    weights: str = "best_dice",
    tta_lr_flip: bool | None = None,
    background_weight: float | None = None,
    onnx: bool = True,
) -> Path:
    """Export one run, or several (an ensemble: the bundle's model averages their softmax outputs).

    Ensemble members must share the preprocessing contract (see ``_contract``) so that they see the same input;
    the first run's plan is written, with ``tta_lr_flip`` and ``background_weight`` as given here.
    """
    from service.model_bundle import write_checksums
    from service.pipeline.plan import Plan
    from training.model_card import write_model_card
    from training.networks import average_models

    runs = [run_dir] if isinstance(run_dir, Path) else list(run_dir)
    plan = Plan.load(runs[0] / "plan.json")
    for other in runs[1:]:
        if _contract(Plan.load(other / "plan.json")) != _contract(plan):
            raise ValueError(f"{other} was trained with another preprocessing contract than {runs[0]}")
    chosen = {"tta_lr_flip": tta_lr_flip, "background_weight": background_weight}
    plan = Plan.model_validate({**plan.model_dump(), **{k: v for k, v in chosen.items() if v is not None}})
    final = store / name / version
    if final.exists():
        raise FileExistsError(f"{final} exists: bundles are immutable, choose a new version")
    staging = store / name / f".{version}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    members = [
        _trained_network(r, weights, len(plan.labels), f"member{i}" if len(runs) > 1 else None)
        for i, r in enumerate(runs)
    ]
    model = members[0] if len(members) == 1 else average_models(members)
    model.save(staging / "model.keras")
    if onnx:  # the optimized CPU runtimes' copy of the same network (service.runtimes), checked against Keras
        from training.onnx_export import TOLERANCE, export_onnx, max_difference

        export_onnx(model, staging / "model.onnx")
        diff = max_difference(model, staging / "model.onnx")
        if not diff <= TOLERANCE:
            raise ValueError(f"ONNX export differs from the Keras network by {diff:.2e} > {TOLERANCE:g}")
    plan.save(staging / "plan.json")
    summaries = [_run_summary(r) for r in runs]
    metrics: dict[str, Any] = {
        "bundle": f"{name}:{version}",
        "checkpoint": weights,
        "training": summaries[0],
        "training_val_dice_note": "mean hard Dice on the model grid over the per-epoch validation subset",
        "data": _data_report(runs[0]),
        "validation": None,
    }
    if len(runs) > 1:
        metrics["ensemble_members"] = [{"run": str(r), **t} for r, t in zip(runs, summaries, strict=True)]
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log = runs[0] / "log.csv"
    if log.exists():
        shutil.copy(log, staging / "training_log.csv")
    write_model_card(staging, name, version, metrics, plan)
    write_checksums(staging)
    os.replace(staging, final)
    return final


def _contract(plan) -> dict:
    """What ensemble members must share: the input preprocessing and the labels. The training patch size and the
    serving choices made at export (test-time flip, background weight) may differ between members."""
    return plan.model_dump(exclude={"patch_size_zyx", "tta_lr_flip", "background_weight"})


def _trained_network(run_dir: Path, weights: str, n_classes: int, name: str | None):
    """The run's chosen checkpoint in a freshly built, uncompiled network."""
    import keras

    from training.networks import build_unet

    state = _run_summary(run_dir)
    model = build_unet(
        state["architecture"],
        state["base_filters"],
        state.get("depth") or 4,
        n_classes,
        max_filters=state.get("max_filters") or 128,
        name=name,
    )
    if _is_bundle(run_dir):  # an exported single network joins an ensemble as it is
        trained = keras.saving.load_model(run_dir / "model.keras", compile=False, safe_mode=True)
        model.set_weights(trained.get_weights())
    elif weights == "last":
        trained = keras.saving.load_model(run_dir / "last.keras", compile=False, safe_mode=True)
        model.set_weights(trained.get_weights())
    else:
        model.load_weights(run_dir / f"{weights}.weights.h5")
    return model


def _data_report(folder: Path) -> dict:
    if _is_bundle(folder):
        return json.loads((folder / "metrics.json").read_text())["data"]
    return json.loads((folder / "data_report.json").read_text())


def _is_bundle(folder: Path) -> bool:
    return (folder / "model.keras").is_file() and not (folder / "state.json").is_file()


def _run_summary(run_dir: Path) -> dict:
    if _is_bundle(run_dir):
        state = json.loads((run_dir / "metrics.json").read_text())["training"]
    else:
        state = json.loads((run_dir / "state.json").read_text())
    keys = (
        "architecture",
        "base_filters",
        "depth",
        "max_filters",
        "loss",
        "epoch",
        "samples_seen",
        "train_seconds",
        "best_dice",
        "best_dice_epoch",
        "best_loss",
        "best_loss_epoch",
        "init_from",
        "augment",
    )
    return {k: state.get(k) for k in keys}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__)
    p.add_argument(
        "--run",
        type=Path,
        required=True,
        action="append",
        help="run folder; repeat it to export an ensemble (a member may also be a single-network bundle folder)",
    )
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
    p.add_argument(
        "--background-weight",
        type=float,
        default=None,
        help="postprocessing weight of the background probability in (0, 1] (default: as trained, 1 = argmax)",
    )
    p.add_argument("--no-onnx", action="store_true", help="no model.onnx (the bundle then serves on TensorFlow)")
    args = p.parse_args(argv)
    tta = None if args.tta is None else args.tta == "on"
    runs = args.run if len(args.run) > 1 else args.run[0]
    try:
        path = export_bundle(
            runs, args.store, args.name, args.version, args.weights, tta, args.background_weight, not args.no_onnx
        )
    except (ValueError, FileExistsError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
