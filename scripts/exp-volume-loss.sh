#!/usr/bin/env bash
# Issue 13, size-bias hypothesis: a short controlled pair of fine-tuning runs from the shipped 1.1.0, identical
# except for the loss (the study's combined loss against combined-volume, training/losses.py), one core each,
# the same seed and budget. Usage: scripts/exp-volume-loss.sh MINUTES (runs/exp-combined, runs/exp-volume).
# Then: python -m training.export --run runs/exp-X --store runs/store --version ... and training.evaluate.
cd "$(dirname "$0")/.."
MINUTES=${1:-60}
common=(--train-dir .cache/openkbp/provided-data/train-pats --val-dir .cache/openkbp/provided-data/validation-pats
  --format openkbp --architecture residual --base-filters 8 --epochs 1000 --steps-per-epoch 150
  --max-minutes "$MINUTES" --lr 5e-4 --patience 20 --val-cases 12 --init-weights model_store/parotid-unet3d/1.1.0
  --patch-size 32 64 64 --p-fatty 0.15 --seed 13 --threads 1)
KERAS_BACKEND=torch .venv/bin/python -m training.train "${common[@]}" --output runs/exp-combined --loss combined \
  > runs/exp-combined.log 2>&1 &
KERAS_BACKEND=torch .venv/bin/python -m training.train "${common[@]}" --output runs/exp-volume --loss combined-volume \
  > runs/exp-volume.log 2>&1 &
wait
