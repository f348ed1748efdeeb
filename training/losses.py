"""Losses and metrics (``keras.ops`` only).

Combined loss (the study's): ``0.7 * (1 - modified Dice) + 0.3 * focal``.
- Modified Dice: the V-Net form ``2 sum(p g) / (sum(p^2) + sum(g^2))`` per gland class, aggregated over the
  whole batch (so a patch without a gland does not divide by zero), averaged over the gland classes (channels
  1..C-1; background excluded).
- Focal loss: ``-alpha_c (1 - p_c)^gamma log p_c`` for the true class c, averaged over voxels; gamma 1.0,
  alpha 0.3 / 0.35 / 0.35 for background / right / left.
Categorical cross-entropy is the baseline option. ``y_true`` is one-hot (batch, z, y, x, C).

``combined-volume`` (issue 13's size-bias hypothesis) adds ``VOLUME_WEIGHT`` x a per-gland volume term to the
combined loss: for each patch and gland class, ``|sum p - sum g| / (sum g + VOLUME_SMOOTH_VOXELS)`` (the soft
predicted volume against the true one, relative to the gland's size), averaged over patches and glands. A Dice
aggregated over the batch pays little for a small gland grown to a typical size or a large one shrunk to it; this
term pays per gland, relative to its own volume. The smoothing volume keeps patches without a gland bounded (they
pay ``sum p / VOLUME_SMOOTH_VOXELS`` for any false positive).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

EPS = 1e-6
VOLUME_WEIGHT = 0.2
VOLUME_SMOOTH_VOXELS = 100.0  # 4 cc at the shipped 2.5 x 4 x 4 mm grid; a parotid is 300-1500 voxels there


def modified_dice(y_true, y_pred, smooth: float = 1e-5):
    """Per-class modified Dice over the batch, shape (C,)."""
    axes = (0, 1, 2, 3)
    inter = ops.sum(y_true * y_pred, axis=axes)
    denom = ops.sum(y_pred * y_pred, axis=axes) + ops.sum(y_true * y_true, axis=axes)
    return (2.0 * inter + smooth) / (denom + smooth)


def dice_loss(y_true, y_pred):
    return 1.0 - ops.mean(modified_dice(y_true, y_pred)[1:])


def focal_loss(y_true, y_pred, gamma: float = 1.0, alpha: Sequence[float] = (0.3, 0.35, 0.35)):
    p = ops.clip(y_pred, EPS, 1.0 - EPS)
    a = ops.convert_to_tensor(list(alpha), dtype=p.dtype)
    per_class = -a * ops.power(1.0 - p, gamma) * ops.log(p) * y_true
    return ops.mean(ops.sum(per_class, axis=-1))


def volume_loss(y_true, y_pred, smooth: float = VOLUME_SMOOTH_VOXELS):
    """Mean over patches and gland classes of ``|sum p - sum g| / (sum g + smooth)``."""
    axes = (1, 2, 3)
    v_pred = ops.sum(y_pred, axis=axes)[:, 1:]
    v_true = ops.sum(y_true, axis=axes)[:, 1:]
    return ops.mean(ops.abs(v_pred - v_true) / (v_true + smooth))


@keras.saving.register_keras_serializable(package="parotid_training")
class CombinedLoss(keras.losses.Loss):
    def __init__(
        self,
        dice_weight: float = 0.7,
        focal_weight: float = 0.3,
        gamma: float = 1.0,
        alpha: Sequence[float] = (0.3, 0.35, 0.35),
        volume_weight: float = 0.0,
        name: str = "combined_dice_focal",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight
        self.focal_weight = focal_weight
        self.gamma = gamma
        self.alpha = tuple(alpha)
        self.volume_weight = volume_weight

    def call(self, y_true, y_pred):
        loss = self.dice_weight * dice_loss(y_true, y_pred) + self.focal_weight * focal_loss(
            y_true, y_pred, self.gamma, self.alpha
        )
        if self.volume_weight:
            loss = loss + self.volume_weight * volume_loss(y_true, y_pred)
        return loss

    def get_config(self):
        return {
            "dice_weight": self.dice_weight,
            "focal_weight": self.focal_weight,
            "gamma": self.gamma,
            "alpha": list(self.alpha),
            "volume_weight": self.volume_weight,
            "name": self.name,
        }


def make_loss(name: str) -> keras.losses.Loss:
    if name == "combined":
        return CombinedLoss()
    if name == "combined-volume":
        return CombinedLoss(volume_weight=VOLUME_WEIGHT, name="combined_dice_focal_volume")
    if name == "cce":
        return keras.losses.CategoricalCrossentropy()
    raise ValueError(f"unknown loss {name!r} ({', '.join(LOSSES)})")


LOSSES = ("combined", "combined-volume", "cce")


def _hard_dice(y_true, y_pred, cls: int):
    pred = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), cls), "float32")
    true = ops.cast(y_true[..., cls], "float32")
    inter = ops.sum(pred * true)
    return (2.0 * inter + 1e-5) / (ops.sum(pred) + ops.sum(true) + 1e-5)


def _hard_iou(y_true, y_pred, cls: int):
    pred = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), cls), "float32")
    true = ops.cast(y_true[..., cls], "float32")
    inter = ops.sum(pred * true)
    return (inter + 1e-5) / (ops.sum(pred) + ops.sum(true) - inter + 1e-5)


@keras.saving.register_keras_serializable(package="parotid_training")
class GlandOverlap(keras.metrics.MeanMetricWrapper):
    """Hard (argmax) Dice or IoU of one gland class, averaged over batches; serialisable for resuming."""

    def __init__(self, cls: int, kind: str = "dice", name: str | None = None, dtype=None):
        fn = _hard_dice if kind == "dice" else _hard_iou
        super().__init__(fn=fn, name=name or f"{kind}_{cls}", dtype=dtype, cls=cls)
        self.cls = cls
        self.kind = kind

    def get_config(self):
        return {"cls": self.cls, "kind": self.kind, "name": self.name, "dtype": self.dtype}


def gland_metrics(labels: Sequence[str]) -> list:
    """Dice and IoU per gland (argmax), and categorical accuracy, as Keras metrics."""
    out: list = []
    for cls in range(1, len(labels)):
        out += [GlandOverlap(cls, "dice", f"dice_{labels[cls]}"), GlandOverlap(cls, "iou", f"iou_{labels[cls]}")]
    out.append(keras.metrics.CategoricalAccuracy(name="accuracy"))
    return out
