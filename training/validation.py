"""Validation during training: whole-volume prediction on the model grid, hard Dice per gland, loss."""

from __future__ import annotations

import numpy as np

from service.pipeline.infer import PredictFn, predict_probabilities
from service.pipeline.plan import Plan
from training.dataset import PreparedCase


def hard_dice(pred: np.ndarray, true: np.ndarray) -> float:
    s = int(pred.sum()) + int(true.sum())
    return float(2.0 * np.logical_and(pred, true).sum() / s) if s else 1.0


def combined_loss_np(probs: np.ndarray, label: np.ndarray, n_classes: int) -> float:
    """NumPy twin of ``training.losses.CombinedLoss`` for one volume (checked against it in the tests)."""
    onehot = np.eye(n_classes, dtype=np.float32)[label]
    inter = (onehot * probs).sum(axis=(0, 1, 2))
    denom = (probs * probs).sum(axis=(0, 1, 2)) + (onehot * onehot).sum(axis=(0, 1, 2))
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    alpha = np.array([0.3, 0.35, 0.35], dtype=np.float32)[:n_classes]
    focal = (-(alpha * (1 - p) * np.log(p) * onehot).sum(axis=-1)).mean()
    return float(0.7 * (1 - dice[1:].mean()) + 0.3 * focal)


def validate(predict: PredictFn, cases: list[PreparedCase], plan: Plan) -> dict[str, float]:
    """Mean hard Dice per gland (over patients with that gland) and mean combined loss."""
    dices: dict[str, list[float]] = {n: [] for n in plan.labels[1:]}
    losses = []
    for c in cases:
        probs = predict_probabilities(predict, c.image_zyx, plan)
        pred = probs.argmax(axis=-1)
        for idx, name in enumerate(plan.labels[1:], start=1):
            if name in c.present:
                dices[name].append(hard_dice(pred == idx, c.label_zyx == idx))
        losses.append(combined_loss_np(probs, c.label_zyx, len(plan.labels)))
    out = {f"val_dice_{n}": float(np.mean(v)) if v else float("nan") for n, v in dices.items()}
    out["val_dice_mean"] = float(np.nanmean([out[f"val_dice_{n}"] for n in plan.labels[1:]]))
    out["val_loss"] = float(np.mean(losses)) if losses else float("nan")
    return out
