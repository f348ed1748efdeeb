"""Resumable training loop: ``python -m training.train --train-dir ... --val-dir ... --output runs/NAME``.

Keeps three checkpoints in the output folder: ``best_dice.weights.h5`` (highest mean validation Dice),
``best_loss.weights.h5`` (lowest validation loss), each rewritten only when its own criterion improves, and
``last.keras`` + ``state.json`` (model, optimiser state, epoch, RNG) written at the end of every epoch, so an
interrupted run resumes where it stopped. Poly learning-rate decay; early stopping on validation Dice. Logs
one CSV row per epoch (``log.csv``) and shows a progress bar.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


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
    p.add_argument("--loss", choices=["combined", "cce"], default="combined")
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
    from tqdm import tqdm

    from service.pipeline.plan import Plan
    from training.checkpoint import load_arrays, seed_run
    from training.dataset import AugmentConfig, one_hot, sample_patch
    from training.losses import gland_metrics, make_loss
    from training.networks import build_unet, transfer_weights
    from training.prepare import load_split
    from training.validation import validate
    from training.widen import widen_weights

    if keras.backend.backend() == "torch" and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    if args.resume_from is not None and seed_run(args.resume_from, out):
        print(f"run folder seeded from the resume checkpoint {args.resume_from}", file=sys.stderr)
    init = _init_source(args.init_weights)
    if plan_path.exists():
        plan = Plan.load(plan_path)
    else:
        overrides: dict = {}
        if args.patch_size:
            overrides["patch_size_zyx"] = tuple(args.patch_size)
        if args.spacing_mm:
            overrides["spacing_mm_zyx"] = tuple(args.spacing_mm)
        base = Plan.load(init["plan"]) if init and init.get("plan") else Plan.model_validate({})
        plan = base.model_copy(update=overrides)
        plan.save(plan_path)
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
        print("error[BAD_TRAINING_DATA]: no usable training or validation patients", file=sys.stderr)
        return 2

    state_path = out / "state.json"
    if (out / "last.keras").exists() and state_path.exists():
        state = json.loads(state_path.read_text())
        try:
            model = keras.saving.load_model(out / "last.keras", compile=True, safe_mode=True)
        except (TypeError, ValueError) as exc:  # checkpoint from an older code version: weights only
            print(f"optimizer state not restored ({exc.__class__.__name__}); resuming from weights", file=sys.stderr)
            model = keras.saving.load_model(out / "last.keras", compile=False, safe_mode=True)
            model.compile(
                optimizer=keras.optimizers.Adam(args.lr),
                loss=make_loss(state.get("loss", args.loss)),
                metrics=gland_metrics(plan.labels),
            )
        print(f"resuming after epoch {state['epoch']}", file=sys.stderr)
    elif (out / "weights.npz").exists() and state_path.exists():  # seeded from a committed checkpoint
        state = json.loads(state_path.read_text())
        model = _build(state, args, len(plan.labels))
        model.set_weights(load_arrays(out / "weights.npz"))
        if (out / "best_dice.npz").exists() and not (out / "best_dice.weights.h5").exists():
            best = _build(state, args, len(plan.labels))
            best.set_weights(load_arrays(out / "best_dice.npz"))
            best.save_weights(out / "best_dice.weights.h5")
        model.compile(
            optimizer=keras.optimizers.Adam(args.lr),
            loss=make_loss(state.get("loss", args.loss)),
            metrics=gland_metrics(plan.labels),
        )
        print(f"resuming after epoch {state['epoch']} from float16 weights (optimiser restarted)", file=sys.stderr)
    else:
        model = build_unet(args.architecture, args.base_filters, args.depth, len(plan.labels), args.max_filters)
        if init and args.widen:
            source = keras.saving.load_model(init["model"], compile=False, safe_mode=True)
            try:
                copied = widen_weights(source, model, args.widen_noise, np.random.default_rng(args.seed))
            except ValueError as exc:
                print(
                    f"error[BAD_INIT_WEIGHTS]: {init['model']} is not a network of half this width ({exc})",
                    file=sys.stderr,
                )
                return 2
            init["summary"]["widened"] = {"layers": copied, "noise": args.widen_noise}
            print(f"widened {init['model']} ({copied} layers) to {args.base_filters} filters", file=sys.stderr)
        elif init:
            source = keras.saving.load_model(init["model"], compile=False, safe_mode=True)
            try:
                fresh = transfer_weights(source, model)
            except ValueError as exc:
                print(
                    f"error[BAD_INIT_WEIGHTS]: {init['model']} is not a single network of this width and depth, "
                    f"nor a residual network for its attention variant ({exc})",
                    file=sys.stderr,
                )
                return 2
            init["summary"]["fresh_layers"] = len(fresh)
            print(f"initialised from {init['model']} ({len(fresh)} layers not in it start fresh)", file=sys.stderr)
        model.compile(
            optimizer=keras.optimizers.Adam(args.lr), loss=make_loss(args.loss), metrics=gland_metrics(plan.labels)
        )
        state = {
            "epoch": 0,
            "best_dice": -1.0,
            "best_loss": float("inf"),
            "since_best": 0,
            "architecture": args.architecture,
            "base_filters": args.base_filters,
            "depth": args.depth,
            "max_filters": args.max_filters,
            "loss": args.loss,
            "samples_seen": 0,
            "train_seconds": 0.0,
            "init_from": init.get("summary") if init else None,
            "augment": {"p_fatty": args.p_fatty, "background_sampling": args.background_sampling},
        }
    rng = np.random.default_rng(args.seed + state["epoch"])
    aug_state = state.get("augment") or {}
    aug = AugmentConfig(
        p_fatty=aug_state.get("p_fatty", args.p_fatty),
        body_background=aug_state.get("background_sampling", args.background_sampling) == "body",
    )
    n_classes = len(plan.labels)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))

    # per-epoch validation without test-time augmentation (half the cost; a fine-tuning run inherits the TTA flag)
    val_plan = plan.model_copy(update={"tta_lr_flip": False})
    log_path = out / "log.csv"
    budget_s = args.max_minutes * 60.0

    def progress() -> float:
        """Fraction of the run done: by epochs, or by accumulated training time when a budget is set."""
        frac = state["epoch"] / args.epochs
        return max(frac, state["train_seconds"] / budget_s) if budget_s else frac

    while progress() < 1.0 and state["since_best"] < args.patience:
        epoch = state["epoch"]
        lr = args.lr * (1 - progress()) ** 0.9
        model.optimizer.learning_rate.assign(lr)
        t0 = time.time()
        losses = []
        bar = tqdm(
            range(args.steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", file=sys.stderr, mininterval=10
        )
        for _ in bar:
            xs, ys = [], []
            for _b in range(args.batch_size):
                img, lab = sample_patch(train_cases[rng.integers(len(train_cases))], plan, rng, aug)
                xs.append(img[..., None])
                ys.append(one_hot(lab, n_classes))
            res = model.train_on_batch(np.stack(xs), np.stack(ys), return_dict=True)
            losses.append(float(res["loss"]))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        train_s = time.time() - t0
        val = validate(predict, val_used, val_plan)
        state["epoch"] = epoch + 1
        state["samples_seen"] += args.steps_per_epoch * args.batch_size
        state["train_seconds"] += time.time() - t0
        improved = val["val_dice_mean"] > state["best_dice"]
        if improved:
            state["best_dice"] = val["val_dice_mean"]
            state["best_dice_epoch"] = epoch + 1
            state["since_best"] = 0
            model.save_weights(out / "best_dice.weights.h5")
        else:
            state["since_best"] += 1
        if val["val_loss"] < state["best_loss"]:
            state["best_loss"] = val["val_loss"]
            state["best_loss_epoch"] = epoch + 1
            model.save_weights(out / "best_loss.weights.h5")
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": float(np.mean(losses)),
            **val,
            "train_s": round(train_s, 1),
            "epoch_s": round(time.time() - t0, 1),
        }
        new = not log_path.exists()
        with log_path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        model.save(out / "last.tmp.keras")
        os.replace(out / "last.tmp.keras", out / "last.keras")
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, state_path)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return 0


def _build(state: dict, args: argparse.Namespace, n_classes: int):
    """The run's network, rebuilt from its recorded shape (a committed checkpoint holds weights only)."""
    from training.networks import build_unet

    return build_unet(
        state.get("architecture", args.architecture),
        state.get("base_filters", args.base_filters),
        state.get("depth", args.depth),
        n_classes,
        state.get("max_filters", args.max_filters),
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
