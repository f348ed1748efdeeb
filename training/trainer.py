"""The epoch loop as a small ``Trainer`` with typed state and hooks (as nnU-Net's trainer has), driven by
``training.train`` (the command line, the plan, resume and warm start).

A variant is a subclass: override ``sample_batch`` (e.g. auxiliary labels), or a hook (``on_epoch_start``,
``on_validation``, ``on_checkpoint``, ``on_epoch_end``); a new loss is an option of ``training.losses.make_loss``.

On disk, in the run folder, each epoch: ``best_dice.weights.h5`` (highest mean validation Dice) and
``best_loss.weights.h5`` (lowest validation loss), each rewritten only when its own criterion improves; one CSV row
in ``log.csv``; ``last.keras`` (model and optimiser state) and ``state.json`` (:class:`TrainState`), each replaced
atomically, so an interrupted run resumes after its last finished epoch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from service.fileio import default_file_mode, write_atomic
from service.pipeline.plan import Plan
from training.dataset import AugmentConfig, PreparedCase, one_hot, sample_patch

STATE_FILE = "state.json"
LOG_FILE = "log.csv"
LAST_MODEL = "last.keras"
Checkpoint = Literal["best_dice", "best_loss", "last"]
CHECKPOINT_FILES: dict[Checkpoint, str] = {
    "best_dice": "best_dice.weights.h5",
    "best_loss": "best_loss.weights.h5",
    "last": LAST_MODEL,
}


class TrainState(BaseModel):
    """``state.json``: where a run is and what it is. Keys a file does not have stay absent when it is written
    back (``exclude_unset``), and keys this class does not know are kept, so older and newer runs resume alike."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    epoch: int = 0  # finished epochs
    best_dice: float = -1.0
    best_loss: float = math.inf
    since_best: int = 0  # epochs since the best validation Dice (early stopping)
    # the network's shape; None in a file that predates the key (the command line's value applies then)
    architecture: Literal["residual", "attention"] | None = None
    base_filters: int | None = None
    depth: int | None = None
    max_filters: int | None = None
    loss: str | None = None
    samples_seen: int = 0
    train_seconds: float = 0.0
    init_from: dict[str, Any] | None = None  # the fine-tuning source (bundle, training summary, widening)
    augment: dict[str, Any] | None = None  # {"p_fatty": float, "background_sampling": "body" | "volume"}
    best_dice_epoch: int | None = None
    best_loss_epoch: int | None = None

    @classmethod
    def load(cls, path: Path) -> TrainState:
        return cls.model_validate(json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        text = json.dumps(self.model_dump(mode="python", exclude_unset=True), indent=2)
        write_atomic(path, text.encode(), mode=default_file_mode())


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    patience: int  # epochs without a better validation Dice before stopping
    max_minutes: float = 0.0  # training-time budget over all resumed runs (the LR schedule follows it); 0 = none
    seed: int = 20261127


class Trainer:
    """Trains ``model`` (compiled, with its optimiser) on patches of ``train_cases`` and validates each epoch on
    ``val_cases`` with ``validate(predict, cases, plan) -> {"val_loss", "val_dice_mean", ...}``."""

    def __init__(
        self,
        model: Any,
        state: TrainState,
        plan: Plan,
        train_cases: Sequence[PreparedCase],
        val_cases: Sequence[PreparedCase],
        out: Path,
        config: LoopConfig,
        augment: AugmentConfig,
        validate: Callable[[Callable[[np.ndarray], np.ndarray], list[PreparedCase], Plan], dict[str, float]],
    ) -> None:
        self.model, self.state, self.plan, self.out = model, state, plan, out
        self.config, self.augment, self._validate = config, augment, validate
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.n_classes = len(plan.labels)
        # per-epoch validation without test-time augmentation (half the cost; a fine-tuning run inherits the flag)
        self.val_plan = plan.model_copy(update={"tta_lr_flip": False})
        self.rng = np.random.default_rng(config.seed + state.epoch)

    # ------------------------------------------------------------------ hooks (no-ops; override in a variant)
    def on_epoch_start(self, epoch: int, lr: float) -> None:
        """Before the first batch of epoch ``epoch`` (0-based), after the learning rate is set."""

    def on_validation(self, epoch: int, metrics: dict[str, float]) -> None:
        """After validation, before the best checkpoints are chosen."""

    def on_checkpoint(self, kind: Checkpoint, path: Path) -> None:
        """After ``path`` (``best_dice``, ``best_loss`` or ``last``, with ``state.json``) was written."""

    def on_epoch_end(self, row: dict[str, float]) -> None:
        """After the epoch's row is in ``log.csv`` and its checkpoints are on disk."""

    # ------------------------------------------------------------------ the loop
    def progress(self) -> float:
        """Fraction of the run done: by epochs, or by accumulated training time when a budget is set."""
        frac = self.state.epoch / self.config.epochs
        budget_s = self.config.max_minutes * 60.0
        return max(frac, self.state.train_seconds / budget_s) if budget_s else frac

    def learning_rate(self) -> float:
        """Poly decay over the run's progress."""
        return self.config.lr * (1 - self.progress()) ** 0.9

    def sample_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch of (patch with a channel axis, one-hot labels)."""
        xs, ys = [], []
        for _ in range(self.config.batch_size):
            case = self.train_cases[self.rng.integers(len(self.train_cases))]
            img, lab = sample_patch(case, self.plan, self.rng, self.augment)
            xs.append(img[..., None])
            ys.append(one_hot(lab, self.n_classes))
        return np.stack(xs), np.stack(ys)

    def predict(self, x: np.ndarray) -> np.ndarray:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(self.model(x, training=False)))

    def fit(self) -> TrainState:
        """Epochs until the run's length (or time budget) is reached or validation Dice stopped improving."""
        from tqdm import tqdm

        cfg, state = self.config, self.state
        while self.progress() < 1.0 and state.since_best < cfg.patience:
            epoch = state.epoch
            lr = self.learning_rate()
            self.model.optimizer.learning_rate.assign(lr)
            self.on_epoch_start(epoch, lr)
            t0 = time.time()
            losses: list[float] = []
            desc = f"epoch {epoch + 1}/{cfg.epochs}"
            bar = tqdm(range(cfg.steps_per_epoch), desc=desc, file=sys.stderr, mininterval=10)
            for _ in bar:
                res = self.model.train_on_batch(*self.sample_batch(), return_dict=True)
                losses.append(float(res["loss"]))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            train_s = time.time() - t0
            val = self._validate(self.predict, self.val_cases, self.val_plan)
            self.on_validation(epoch, val)
            state.epoch = epoch + 1
            state.samples_seen += cfg.steps_per_epoch * cfg.batch_size
            state.train_seconds += time.time() - t0
            if val["val_dice_mean"] > state.best_dice:
                state.best_dice, state.best_dice_epoch, state.since_best = val["val_dice_mean"], epoch + 1, 0
                self._save_weights("best_dice")
            else:
                state.since_best += 1
            if val["val_loss"] < state.best_loss:
                state.best_loss, state.best_loss_epoch = val["val_loss"], epoch + 1
                self._save_weights("best_loss")
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": float(np.mean(losses)),
                **val,
                "train_s": round(train_s, 1),
                "epoch_s": round(time.time() - t0, 1),
            }
            self._append_log(row)
            self._save_last()
            print(json.dumps(row), file=sys.stderr, flush=True)
            self.on_epoch_end(row)
        return state

    # ------------------------------------------------------------------ files
    def _save_weights(self, kind: Checkpoint) -> None:
        path = self.out / CHECKPOINT_FILES[kind]
        self.model.save_weights(path)
        self.on_checkpoint(kind, path)

    def _save_last(self) -> None:
        tmp = self.out / "last.tmp.keras"  # keras picks the format from the suffix
        self.model.save(tmp)
        os.replace(tmp, self.out / LAST_MODEL)
        self.state.save(self.out / STATE_FILE)
        self.on_checkpoint("last", self.out / LAST_MODEL)

    def _append_log(self, row: dict[str, float]) -> None:
        path = self.out / LOG_FILE
        new = not path.exists()
        with path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
