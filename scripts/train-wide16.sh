#!/usr/bin/env bash
# Issue 13 long run: parotid-unet3d 1.1.0 widened to 16 filters (Net2WiderNet) and trained on, on one core.
# Resumable: run it again after an interruption; on a new machine it starts from the committed checkpoint
# checkpoints/wide16 (float16 weights + state; refresh it with `make checkpoint RUN=runs/wide16`).
cd "$(dirname "$0")/.."
KERAS_BACKEND=torch exec .venv/bin/python -m training.train \
  --train-dir .cache/openkbp/provided-data/train-pats --val-dir .cache/openkbp/provided-data/validation-pats \
  --format openkbp --output runs/wide16 --architecture residual --base-filters 16 --max-filters 256 \
  --epochs 1000 --steps-per-epoch 300 --max-minutes 480 --lr 5e-4 --patience 20 --val-cases 12 \
  --init-weights model_store/parotid-unet3d/1.1.0 --widen --p-fatty 0.15 --threads 1 \
  --resume-from checkpoints/wide16
