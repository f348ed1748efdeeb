"""Loss and metric values against hand-computed cases (training/losses.py, training/validation.py).

The expected numbers are worked out by hand in the comments (smooth = 1e-5 in the Dice terms); they are not
recomputed with the code under test. Keras runs on TensorFlow here, the serving backend.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from training.losses import (  # noqa: E402
    CombinedLoss,
    dice_loss,
    focal_loss,
    gland_metrics,
    make_loss,
    modified_dice,
    volume_loss,
)
from training.validation import combined_loss_np  # noqa: E402

LABELS = ("background", "Parotid_R", "Parotid_L")


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _case_a() -> tuple[np.ndarray, np.ndarray]:
    """Two voxels, (batch, z, y, x, C) = (1, 1, 1, 2, 3): background predicted 0.8, right parotid 0.6."""
    y_true = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32).reshape(1, 1, 1, 2, 3)
    y_pred = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2]], dtype=np.float32).reshape(1, 1, 1, 2, 3)
    return y_true, y_pred


# Case A by hand:
#   Dice_c = (2 sum p g + s) / (sum p^2 + sum g^2 + s)
#   c0: (2*0.8 + s) / (0.64 + 0.04 + 1 + s) = 1.6 / 1.68         = 0.952381
#   c1: (2*0.6 + s) / (0.01 + 0.36 + 1 + s) = 1.2 / 1.37         = 0.875913
#   c2: (0 + s)     / (0.01 + 0.04 + 0 + s) = 1e-5 / 0.05001     = 0.000200
#   dice loss = 1 - (0.875913 + 0.000200) / 2                     = 0.561943
#   focal = mean(0.30 * (1-0.8) * -ln 0.8, 0.35 * (1-0.6) * -ln 0.6)
#         = mean(0.3*0.2*0.223144, 0.35*0.4*0.510826) = mean(0.013389, 0.071516) = 0.042452
#   combined = 0.7 * 0.561943 + 0.3 * 0.042452                    = 0.406096
DICE_A = (0.952381, 0.875913, 0.000200)
DICE_LOSS_A = 0.561943
FOCAL_A = 0.042452
COMBINED_A = 0.406096


def test_modified_dice_per_class() -> None:
    y_true, y_pred = _case_a()
    np.testing.assert_allclose(_np(modified_dice(y_true, y_pred)), DICE_A, atol=2e-6)


def test_modified_dice_pools_the_batch() -> None:
    # sample 0 holds the right gland (predicted perfectly), sample 1 none: one pooled Dice of 1, not mean(1, 0)
    y_true = np.array([[0, 1, 0], [1, 0, 0]], dtype=np.float32).reshape(2, 1, 1, 1, 3)
    np.testing.assert_allclose(_np(modified_dice(y_true, y_true)), (1.0, 1.0, 1.0), atol=1e-6)
    # a gland absent from the whole batch and never predicted counts as Dice 1 (s / s), not as a miss
    assert float(_np(dice_loss(y_true, y_true))) == pytest.approx(0.0, abs=1e-6)


def test_dice_loss_excludes_background() -> None:
    y_true, y_pred = _case_a()
    assert float(_np(dice_loss(y_true, y_pred))) == pytest.approx(DICE_LOSS_A, abs=2e-6)


def test_focal_loss_gamma_and_alpha() -> None:
    y_true, y_pred = _case_a()
    assert float(_np(focal_loss(y_true, y_pred))) == pytest.approx(FOCAL_A, abs=2e-6)
    p = np.array([0.1, 0.2, 0.7], dtype=np.float32).reshape(1, 1, 1, 1, 3)
    # one voxel predicted 0.7 for its true class: alpha * (1 - 0.7)^gamma * -ln 0.7, -ln 0.7 = 0.356675
    left = np.array([0, 0, 1], dtype=np.float32).reshape(1, 1, 1, 1, 3)
    background = np.array([1, 0, 0], dtype=np.float32).reshape(1, 1, 1, 1, 3)
    p_bg = p[..., ::-1].copy()  # 0.7 on background
    assert float(_np(focal_loss(left, p))) == pytest.approx(0.35 * 0.3 * 0.356675, abs=1e-6)  # 0.037451
    assert float(_np(focal_loss(background, p_bg))) == pytest.approx(0.30 * 0.3 * 0.356675, abs=1e-6)  # 0.032101
    assert float(_np(focal_loss(left, p, gamma=2.0))) == pytest.approx(0.35 * 0.09 * 0.356675, abs=1e-6)


def test_combined_loss_value_and_defaults() -> None:
    y_true, y_pred = _case_a()
    loss = CombinedLoss()
    assert (loss.dice_weight, loss.focal_weight, loss.gamma, loss.alpha) == (0.7, 0.3, 1.0, (0.3, 0.35, 0.35))
    assert float(_np(loss(y_true, y_pred))) == pytest.approx(COMBINED_A, abs=3e-6)
    # gland 2 absent and never predicted: its Dice is s / s = 1, so a perfect prediction costs ~0
    assert float(_np(loss(y_true, y_true))) == pytest.approx(0.0, abs=1e-5)
    again = CombinedLoss.from_config(loss.get_config())
    assert float(_np(again(y_true, y_pred))) == pytest.approx(COMBINED_A, abs=3e-6)
    assert isinstance(make_loss("cce"), keras.losses.CategoricalCrossentropy)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("dice")


def test_perfect_prediction_has_near_zero_loss() -> None:
    labels = np.array([0, 1, 2, 0, 2, 1])
    y = np.eye(3, dtype=np.float32)[labels].reshape(1, 1, 2, 3, 3)
    assert float(_np(CombinedLoss()(y, y))) == pytest.approx(0.0, abs=1e-5)


def _result(metric: keras.metrics.Metric, *batches: tuple[np.ndarray, np.ndarray]) -> float:
    metric.reset_state()
    for y_true, y_pred in batches:
        metric.update_state(y_true, y_pred)
    return float(_np(metric.result()))


def test_gland_metrics_dice_iou_accuracy() -> None:
    # true [0, 1, 1, 2], argmax of the prediction [1, 1, 0, 2]
    true = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]].reshape(1, 1, 1, 4, 3)
    pred = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    pred = pred.reshape(1, 1, 1, 4, 3)
    metrics = {m.name: m for m in gland_metrics(LABELS)}
    assert list(metrics) == ["dice_Parotid_R", "iou_Parotid_R", "dice_Parotid_L", "iou_Parotid_L", "accuracy"]
    # right: predicted {0, 1}, true {1, 2}: Dice 2*1 / (2 + 2) = 0.5, IoU 1 / (2 + 2 - 1) = 1/3
    assert _result(metrics["dice_Parotid_R"], (true, pred)) == pytest.approx(0.5, abs=1e-5)
    assert _result(metrics["iou_Parotid_R"], (true, pred)) == pytest.approx(1 / 3, abs=1e-5)
    # left: predicted {3}, true {3}
    assert _result(metrics["dice_Parotid_L"], (true, pred)) == pytest.approx(1.0, abs=1e-6)
    assert _result(metrics["iou_Parotid_L"], (true, pred)) == pytest.approx(1.0, abs=1e-6)
    assert isinstance(metrics["accuracy"], keras.metrics.CategoricalAccuracy)
    assert _result(metrics["accuracy"], (true, pred)) == pytest.approx(0.5)  # voxels 1 and 3 right of 4
    # a gland neither present nor predicted scores 1 (smoothed), not 0; batches are averaged: (0.5 + 1) / 2
    none = np.eye(3, dtype=np.float32)[[0, 0, 0, 0]].reshape(1, 1, 1, 4, 3)
    assert _result(metrics["dice_Parotid_R"], (none, none)) == pytest.approx(1.0)
    assert _result(metrics["dice_Parotid_R"], (true, pred), (none, none)) == pytest.approx(0.75, abs=1e-5)
    # serialisable (the trainer resumes from a saved model): the same values after a config round trip
    again = type(metrics["iou_Parotid_R"]).from_config(metrics["iou_Parotid_R"].get_config())
    assert again.name == "iou_Parotid_R"
    assert _result(again, (true, pred)) == pytest.approx(1 / 3, abs=1e-5)


def test_combined_loss_np_matches_keras() -> None:
    y_true, y_pred = _case_a()
    assert combined_loss_np(y_pred[0], y_true[0].argmax(-1), 3) == pytest.approx(COMBINED_A, abs=3e-6)
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(6, 8, 7, 3)) * 2
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    label = rng.integers(0, 3, size=(6, 8, 7))
    label[:2] = 0
    keras_value = float(_np(CombinedLoss()(np.eye(3, dtype=np.float32)[label][None], probs[None])))
    assert combined_loss_np(probs, label, 3) == pytest.approx(keras_value, rel=1e-5)


def test_volume_term_by_hand_and_in_the_combined_loss() -> None:
    # two patches of 1 x 1 x 4 voxels, classes (background, R, L):
    #   patch 0: true R volume 2, predicted soft R volume 0.9 + 0.8 + 0.5 + 0.4 = 2.6; no L, predicted 0.1 in total
    #   patch 1: nothing true; predicted R 0.2 in total, L 0.0
    y_true = np.zeros((2, 1, 1, 4, 3), np.float32)
    y_pred = np.zeros((2, 1, 1, 4, 3), np.float32)
    y_true[0, 0, 0, :2, 1] = 1.0
    y_true[0, 0, 0, 2:, 0] = 1.0
    y_true[1, ..., 0] = 1.0
    y_pred[0, 0, 0, :, 1] = [0.9, 0.8, 0.5, 0.4]
    y_pred[0, 0, 0, 0, 2] = 0.1
    y_pred[1, 0, 0, 0, 1] = 0.2
    y_pred[..., 0] = 1.0 - y_pred[..., 1] - y_pred[..., 2]
    # terms with smooth 100: |2.6 - 2| / 102 = 0.0058824, 0.1 / 100 = 0.001, 0.2 / 100 = 0.002, 0 / 100 = 0
    expected = (0.6 / 102 + 0.001 + 0.002 + 0.0) / 4
    assert float(_np(volume_loss(y_true, y_pred))) == pytest.approx(expected, rel=1e-5)
    # smooth 1: the volume error of a small gland costs more
    assert float(_np(volume_loss(y_true, y_pred, smooth=1.0))) == pytest.approx((0.6 / 3 + 0.1 + 0.2) / 4, rel=1e-5)
    plain, with_volume = make_loss("combined"), make_loss("combined-volume")
    diff = float(_np(with_volume(y_true, y_pred))) - float(_np(plain(y_true, y_pred)))
    assert diff == pytest.approx(0.2 * expected, rel=1e-4)
    assert with_volume.get_config()["volume_weight"] == 0.2 and plain.get_config()["volume_weight"] == 0.0
    with pytest.raises(ValueError, match="combined-volume"):
        make_loss("dice")
