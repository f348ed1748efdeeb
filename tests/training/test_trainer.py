"""``training.trainer``: the run state keeps the on-disk format of ``state.json``; the loop calls its hooks and
writes the same files (``log.csv``, ``last.keras``, ``state.json``, best checkpoints) a resumed run reads."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from service.pipeline.plan import Plan  # noqa: E402
from training.dataset import AugmentConfig, PreparedCase  # noqa: E402
from training.trainer import LoopConfig, Trainer, TrainState  # noqa: E402
from training.validation import validate  # noqa: E402

# a state.json as the loop wrote it before the Trainer (a run resuming from it must keep every key and value)
OLD_STATE = {
    "epoch": 21,
    "best_dice": 0.7712,
    "best_loss": 0.1834,
    "since_best": 2,
    "architecture": "residual",
    "base_filters": 8,
    "depth": 4,
    "max_filters": 128,
    "loss": "combined",
    "samples_seen": 6300,
    "train_seconds": 6665.2,
    "init_from": None,
    "augment": {"p_fatty": 0.15, "background_sampling": "body"},
    "best_dice_epoch": 19,
    "best_loss_epoch": 19,
}


def test_state_round_trips_the_files_of_older_runs(tmp_path: Path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(OLD_STATE, indent=2))
    TrainState.load(path).save(path)
    assert json.loads(path.read_text()) == OLD_STATE

    # an early run: no best-loss yet (Infinity), no depth/max_filters keys, a key this code does not know
    early = {"epoch": 0, "best_dice": -1.0, "best_loss": math.inf, "since_best": 0, "architecture": "attention"}
    path.write_text(json.dumps({**early, "future_key": [1, 2]}))
    state = TrainState.load(path)
    assert state.depth is None and state.best_dice_epoch is None  # absent: the command line's value applies
    state.save(path)
    assert json.loads(path.read_text()) == {**early, "future_key": [1, 2]}
    state.best_dice_epoch = 1
    state.save(path)
    assert json.loads(path.read_text())["best_dice_epoch"] == 1


def _case(case_id: str, seed: int) -> PreparedCase:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.1, (12, 12, 12)).astype(np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[3:6, 3:6, 6:9] = 1
    label[3:6, 3:6, 2:5] = 2
    image[label > 0] += 1.0
    return PreparedCase(case_id, image, label, ("Parotid_L", "Parotid_R"))


class Recording(Trainer):
    calls: list[tuple]

    def on_epoch_start(self, epoch: int, lr: float) -> None:
        self.calls.append(("start", epoch, round(lr, 6)))

    def on_validation(self, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append(("validation", epoch, sorted(metrics)[:1]))

    def on_checkpoint(self, kind: str, path: Path) -> None:
        assert path.exists()
        self.calls.append(("checkpoint", kind))

    def on_epoch_end(self, row: dict[str, float]) -> None:
        self.calls.append(("end", row["epoch"]))


def test_the_loop_calls_its_hooks_and_writes_the_run_files(tmp_path: Path):
    import keras

    plan = Plan.model_validate({}).model_copy(update={"patch_size_zyx": (8, 8, 8)})
    model = keras.Sequential([keras.Input((None, None, None, 1)), keras.layers.Conv3D(3, 1, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    state = TrainState(epoch=0, best_dice=-1.0, best_loss=math.inf, since_best=0, architecture="residual")
    config = LoopConfig(epochs=2, steps_per_epoch=2, batch_size=1, lr=1e-2, patience=5, seed=1)
    trainer = Recording(
        model, state, plan, [_case("a", 0)], [_case("v", 1)], tmp_path, config, AugmentConfig(), validate
    )
    trainer.calls = []
    final = trainer.fit()

    assert final.epoch == 2 and final.samples_seen == 4 and final.train_seconds > 0
    starts = [c for c in trainer.calls if c[0] == "start"]
    assert starts == [("start", 0, 0.01), ("start", 1, round(1e-2 * 0.5**0.9, 6))]  # poly decay over the epochs
    kinds = [c[1] for c in trainer.calls if c[0] == "checkpoint"]
    assert kinds[0] == "best_dice" and kinds.count("last") == 2 and "best_loss" in kinds
    assert [c[0] for c in trainer.calls][-2:] == ["checkpoint", "end"]  # 'last' is on disk before the epoch ends
    with (tmp_path / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"] and {"lr", "train_loss", "val_dice_mean", "epoch_s"} <= set(rows[0])
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["epoch"] == 2 and saved["best_dice_epoch"] in (1, 2) and "depth" not in saved
    for name in ("last.keras", "best_dice.weights.h5", "best_loss.weights.h5"):
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.glob("*.tmp*"))
