"""Resumable training: ``python -m training.train --train-dir ... --val-dir ... --output runs/NAME``.

This module is the command line and the set-up of a run: the plan (inherited from a fine-tuning source, or the
run folder's when resuming), the data, and the model and its state (resumed from ``last.keras`` + ``state.json``,
seeded from a committed checkpoint, warm-started, widened or new). The epoch loop is ``training.trainer.Trainer``:
it keeps three checkpoints in the output folder, ``best_dice.weights.h5`` (highest mean validation Dice),
``best_loss.weights.h5`` (lowest validation loss), each rewritten only when its own criterion improves, and
``last.keras`` + ``state.json`` (model, optimiser state, epoch) written at the end of every epoch, so an
interrupted run resumes where it stopped. Poly learning-rate decay; early stopping on validation Dice. Logs
one CSV row per epoch (``log.csv``) and shows a progress bar.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from service.pipeline.plan import Plan
from training.dataset import AugmentConfig
from training.trainer import LAST_MODEL, STATE_FILE, TrainState


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    p.add_argument("--train-dir", type=Path, required=True)
    p.add_argument("--val-dir", type=Path, required=True)
    p.add_argument("--format", choices=["openkbp", "dicom", "nifti"], default="openkbp")
    p.add_argument("--output", type=Path, required=True, help="run folder (checkpoints, logs, cache)")
    p.add_argument(
        "--roi-synonyms",
        type=Path,
        default=None,
        help='DICOM format: JSON {"Parotid_L": [...], "Parotid_R": [...]} added to the default names',
    )
    p.add_argument("--architecture", choices=["residual", "attention"], default="residual")
    p.add_argument("--base-filters", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--max-filters", type=int, default=128, help="cap on the filters of the deepest levels")
    p.add_argument(
        "--loss",
        choices=["combined", "combined-volume", "cce"],
        default="combined",
        help="combined = 0.7 Dice + 0.3 focal (the study's); combined-volume adds 0.2 x a per-gland relative "
        "volume term (training/losses.py)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=10, help="early stopping, in epochs without a better val Dice")
    p.add_argument("--val-cases", type=int, default=16, help="validation patients used each epoch (0 = all)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=0,
        help="training-time budget over all resumed runs; the LR schedule follows it; 0 = none",
    )
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    p.add_argument("--spacing-mm", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"))
    p.add_argument(
        "--init-weights",
        type=Path,
        default=None,
        help="fine-tune: start a new run from a bundle folder (its plan and model.keras) or a .keras model file",
    )
    p.add_argument(
        "--widen",
        action="store_true",
        help="with --init-weights: the bundle's network is half as wide; start from it widened (Net2WiderNet)",
    )
    p.add_argument("--widen-noise", type=float, default=0.01, help="relative noise on the widened kernels")
    p.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        help="a committed resume checkpoint (python -m training.checkpoint) to seed an empty run folder from",
    )
    p.add_argument("--p-fatty", type=float, default=0.0, help="probability of the fatty-gland augmentation per gland")
    p.add_argument(
        "--background-sampling",
        choices=["body", "volume"],
        default="body",
        help="where patches not centred on a gland are centred: inside the body, or anywhere in the volume",
    )
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from training.checkpoint import seed_run
    from training.trainer import LoopConfig, Trainer
    from training.validation import validate

    if keras.backend.backend() == "torch" and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    if args.resume_from is not None and seed_run(args.resume_from, out):
        print(f"run folder seeded from the resume checkpoint {args.resume_from}", file=sys.stderr)
    init = _init_source(args.init_weights)
    plan = _run_plan(args, out, init)
    data = _load_data(args, plan, out)
    if data is None:
        print("error[BAD_TRAINING_DATA]: no usable training or validation patients", file=sys.stderr)
        return 2
    train_cases, val_used = data
    restored = _restore_or_build(args, plan, out, init)
    if isinstance(restored, str):
        print(restored, file=sys.stderr)
        return 2
    model, state = restored
    aug_state = state.augment or {}
    augment = AugmentConfig(
        p_fatty=aug_state.get("p_fatty", args.p_fatty),
        body_background=aug_state.get("background_sampling", args.background_sampling) == "body",
    )
    config = LoopConfig(
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )
    Trainer(model, state, plan, train_cases, val_used, out, config, augment, validate).fit()
    return 0


def _run_plan(args: argparse.Namespace, out: Path, init: dict | None) -> Plan:
    """The run's plan: the one in the run folder (a resumed run), else the fine-tuning source's (or the default)
    with the command line's patch size and spacing, saved into the run folder."""
    plan_path = out / "plan.json"
    if plan_path.exists():
        return Plan.load(plan_path)
    overrides: dict = {}
    if args.patch_size:
        overrides["patch_size_zyx"] = tuple(args.patch_size)
    if args.spacing_mm:
        overrides["spacing_mm_zyx"] = tuple(args.spacing_mm)
    base = Plan.load(init["plan"]) if init and init.get("plan") else Plan.model_validate({})
    plan = base.model_copy(update=overrides)
    plan.save(plan_path)
    return plan


def _load_data(args: argparse.Namespace, plan: Plan, out: Path) -> tuple[list, list] | None:
    """(training patients with both glands, validation patients used each epoch), with ``data_report.json``
    written; None when either is empty."""
    from training.prepare import load_split

    syn = args.roi_synonyms
    train_cases, train_report = load_split(args.train_dir, args.format, plan, out / "cache" / "train", syn)
    val_cases, val_report = load_split(args.val_dir, args.format, plan, out / "cache" / "val", syn)
    glands = tuple(plan.labels[1:])
    excluded = [c.case_id for c in train_cases if set(c.present) != set(glands)]
    train_cases = [c for c in train_cases if set(c.present) == set(glands)]
    val_all = [c for c in val_cases if c.present]
    val_used = val_all if args.val_cases <= 0 else val_all[: args.val_cases]
    data_report = {
        "train_dir": str(args.train_dir),
        "val_dir": str(args.val_dir),
        "format": args.format,
        "train_patients_used": len(train_cases),
        "train_patients_excluded_missing_gland": excluded,
        "train_skipped": train_report.skipped,
        "val_skipped": val_report.skipped,
        "val_patients": len(val_all),
        "val_patients_per_epoch": len(val_used),
    }
    (out / "data_report.json").write_text(json.dumps(data_report, indent=2))
    print(
        f"train: {len(train_cases)} patients ({len(excluded)} left out: a gland not contoured; "
        f"{len(train_report.skipped)} unreadable); validation: {len(val_all)} ({len(val_used)} per epoch)",
        file=sys.stderr,
    )
    if not train_cases or not val_used:
        return None
    return train_cases, val_used


def _compile(model: Any, args: argparse.Namespace, plan: Plan, loss: str | None) -> None:
    import keras

    from training.losses import gland_metrics, make_loss

    model.compile(
        optimizer=keras.optimizers.Adam(args.lr), loss=make_loss(loss or args.loss), metrics=gland_metrics(plan.labels)
    )


def _restore_or_build(
    args: argparse.Namespace, plan: Plan, out: Path, init: dict | None
) -> tuple[Any, TrainState] | str:
    """The compiled model and its state: resumed from ``last.keras`` + ``state.json``, or from a committed float16
    checkpoint (``weights.npz``), or a new network (fine-tuned, widened or fresh). A string: the error line."""
    import keras

    from training.checkpoint import load_arrays
    from training.networks import build_unet, transfer_weights
    from training.widen import widen_weights

    state_path = out / STATE_FILE
    n_classes = len(plan.labels)
    if (out / LAST_MODEL).exists() and state_path.exists():
        state = TrainState.load(state_path)
        try:
            model = keras.saving.load_model(out / LAST_MODEL, compile=True, safe_mode=True)
        except (TypeError, ValueError) as exc:  # checkpoint from an older code version: weights only
            print(f"optimizer state not restored ({exc.__class__.__name__}); resuming from weights", file=sys.stderr)
            model = keras.saving.load_model(out / LAST_MODEL, compile=False, safe_mode=True)
            _compile(model, args, plan, state.loss)
        print(f"resuming after epoch {state.epoch}", file=sys.stderr)
        return model, state
    if (out / "weights.npz").exists() and state_path.exists():  # seeded from a committed checkpoint
        state = TrainState.load(state_path)
        model = _build(state, args, n_classes)
        model.set_weights(load_arrays(out / "weights.npz"))
        if (out / "best_dice.npz").exists() and not (out / "best_dice.weights.h5").exists():
            best = _build(state, args, n_classes)
            best.set_weights(load_arrays(out / "best_dice.npz"))
            best.save_weights(out / "best_dice.weights.h5")
        _compile(model, args, plan, state.loss)
        print(f"resuming after epoch {state.epoch} from float16 weights (optimiser restarted)", file=sys.stderr)
        return model, state
    model = build_unet(args.architecture, args.base_filters, args.depth, n_classes, args.max_filters)
    if init and args.widen:
        source = keras.saving.load_model(init["model"], compile=False, safe_mode=True)
        try:
            copied = widen_weights(source, model, args.widen_noise, np.random.default_rng(args.seed))
        except ValueError as exc:
            return f"error[BAD_INIT_WEIGHTS]: {init['model']} is not a network of half this width ({exc})"
        init["summary"]["widened"] = {"layers": copied, "noise": args.widen_noise}
        print(f"widened {init['model']} ({copied} layers) to {args.base_filters} filters", file=sys.stderr)
    elif init:
        source = keras.saving.load_model(init["model"], compile=False, safe_mode=True)
        try:
            fresh = transfer_weights(source, model)
        except ValueError as exc:
            return (
                f"error[BAD_INIT_WEIGHTS]: {init['model']} is not a single network of this width and depth, "
                f"nor a residual network for its attention variant ({exc})"
            )
        init["summary"]["fresh_layers"] = len(fresh)
        print(f"initialised from {init['model']} ({len(fresh)} layers not in it start fresh)", file=sys.stderr)
    _compile(model, args, plan, args.loss)
    state = TrainState(
        epoch=0,
        best_dice=-1.0,
        best_loss=float("inf"),
        since_best=0,
        architecture=args.architecture,
        base_filters=args.base_filters,
        depth=args.depth,
        max_filters=args.max_filters,
        loss=args.loss,
        samples_seen=0,
        train_seconds=0.0,
        init_from=init.get("summary") if init else None,
        augment={"p_fatty": args.p_fatty, "background_sampling": args.background_sampling},
    )
    return model, state


def _build(state: TrainState, args: argparse.Namespace, n_classes: int) -> Any:
    """The run's network, rebuilt from its recorded shape (a committed checkpoint holds weights only)."""
    from training.networks import build_unet

    return build_unet(
        state.architecture if state.architecture is not None else args.architecture,
        state.base_filters if state.base_filters is not None else args.base_filters,
        state.depth if state.depth is not None else args.depth,
        n_classes,
        state.max_filters if state.max_filters is not None else args.max_filters,
    )


def _init_source(path: Path | None) -> dict | None:
    """Where a fine-tuning run starts: the model file, the plan to inherit, and what is known of its training."""
    if path is None:
        return None
    if path.is_dir():
        model, plan, metrics = path / "model.keras", path / "plan.json", path / "metrics.json"
        if not model.is_file():
            raise SystemExit(f"error[BAD_INIT_WEIGHTS]: {path} has no model.keras")
        summary: dict = {"source": str(path)}
        if metrics.is_file():
            prior = json.loads(metrics.read_text())
            summary["bundle"] = prior.get("bundle")
            summary["training"] = prior.get("training")
            data = prior.get("data") or {}  # what the starting model was trained on, for the model card
            summary["data"] = {k: data.get(k) for k in ("format", "train_dir", "val_dir", "train_patients_used")}
        return {"model": model, "plan": plan if plan.is_file() else None, "summary": summary}
    if path.suffix != ".keras" or not path.is_file():
        raise SystemExit(f"error[BAD_INIT_WEIGHTS]: {path} is neither a bundle folder nor a .keras file")
    return {"model": path, "plan": None, "summary": {"source": str(path)}}


if __name__ == "__main__":
    raise SystemExit(main())
