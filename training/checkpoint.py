"""A resume checkpoint small enough to commit, so that a training run outlives the machine it runs on.

``save`` writes, from a run folder, the weights of ``last.keras`` and ``best_dice.weights.h5`` as float16 arrays
(``weights.npz``, ``best_dice.npz``) next to copies of ``state.json``, ``plan.json``, ``log.csv`` and
``data_report.json``. ``seed_run`` lays such a checkpoint into an empty run folder; ``python -m training.train``
then builds the network from the state's architecture and loads the weights (the optimiser restarts: its moments
are not kept, which costs a few hundred steps of warm-up, not the learned weights). The float16 rounding changes
the probabilities by about 1e-3, far below the differences between checkpoints.

``python -m training.checkpoint RUN_DIR DEST_DIR`` writes one (replacing DEST_DIR's previous content).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

KEPT = ("state.json", "plan.json", "log.csv", "data_report.json")


def _save_arrays(weights: list[np.ndarray], path: Path) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, *[w.astype(np.float16) for w in weights])
    os.replace(tmp, path)


def load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as d:
        return [d[f"arr_{i}"].astype(np.float32) for i in range(len(d.files))]


def save(run: Path, dest: Path) -> None:
    import keras

    from training.networks import build_unet

    state = json.loads((run / "state.json").read_text())
    model = keras.saving.load_model(run / "last.keras", compile=False, safe_mode=True)
    dest.mkdir(parents=True, exist_ok=True)
    _save_arrays(model.get_weights(), dest / "weights.npz")
    best = run / "best_dice.weights.h5"
    if best.is_file():
        twin = build_unet(
            state["architecture"],
            state["base_filters"],
            state.get("depth", 4),
            model.output_shape[-1],
            max_filters=state.get("max_filters") or 128,
        )
        twin.load_weights(best)
        _save_arrays(twin.get_weights(), dest / "best_dice.npz")
    for name in KEPT:
        if (run / name).is_file():
            shutil.copyfile(run / name, dest / name)


def seed_run(src: Path, run: Path) -> bool:
    """Copy a committed checkpoint's files into ``run`` unless the run already has its own; True if seeded."""
    if (run / "last.keras").exists() or (run / "weights.npz").exists() or not (src / "weights.npz").is_file():
        return False
    run.mkdir(parents=True, exist_ok=True)
    for name in (*KEPT, "weights.npz", "best_dice.npz"):
        if (src / name).is_file():
            shutil.copyfile(src / name, run / name)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.checkpoint", description=__doc__)
    p.add_argument("run", type=Path, help="training run folder (last.keras, state.json, ...)")
    p.add_argument("dest", type=Path, help="checkpoint folder to (re)write, e.g. checkpoints/<run name>")
    args = p.parse_args(argv)
    if not (args.run / "last.keras").is_file() or not (args.run / "state.json").is_file():
        print(f"error[BAD_TRAINING_DATA]: {args.run} has no last.keras + state.json", file=sys.stderr)
        return 2
    os.environ.setdefault("KERAS_BACKEND", "torch")
    save(args.run, args.dest)
    print(f"resume checkpoint written to {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
