"""How large a series the pipeline may take: a memory budget per job, divided by the memory it needs per voxel.

``load_series`` holds the CT as float32 and the pipeline adds, on the CT grid, the label probabilities resampled
back (float32 per label), the masks and their temporaries; on the model grid (the plan's spacing), the normalised
input and the sliding-window accumulators (the window's own activations are bounded by the plan's
``inference_window_zyx``, not by the series). Measured with tracemalloc around ``run_segmentation`` on the oracle
bundle, three series of 0.65 to 5.2 M CT voxels (docs/service.md, "Memory budget"): peak ~45 B per CT voxel and
~17 B per model voxel; the constants round them up.

The check runs on the headers only (``check_series_headers``), at the door (API upload, listener submission) and
again in the worker, so a series that cannot fit is refused with ``TOO_LARGE`` before any pixel is decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

CT_BYTES_PER_VOXEL = 48
MODEL_BYTES_PER_VOXEL = 24
DEFAULT_MEMORY_BUDGET_MB = 8192  # 170 M CT voxels: e.g. 512 x 512 x 650 slices
BUDGET_ENV = "PAROTID_MEMORY_BUDGET_MB"


def memory_budget_bytes() -> int:
    """The per-job memory budget: ``PAROTID_MEMORY_BUDGET_MB`` (the service's ``memory_budget_mb`` setting exports
    it to workers), else the default."""
    raw = os.environ.get(BUDGET_ENV, "")
    try:
        mb = float(raw) if raw.strip() else DEFAULT_MEMORY_BUDGET_MB
    except ValueError:
        mb = DEFAULT_MEMORY_BUDGET_MB
    return int(max(mb, 1.0) * 2**20)


def model_grid_shape(
    shape_zyx: Sequence[int], spacing_in: Sequence[float], spacing_out: Sequence[float]
) -> tuple[int, ...]:
    """``preprocess.target_shape`` without importing scipy: voxels per axis on the plan's grid."""
    return tuple(
        int((n - 1) * si / so + 1e-6) + 1 for n, si, so in zip(shape_zyx, spacing_in, spacing_out, strict=True)
    )


def estimated_bytes(ct_voxels: int, model_voxels: int) -> int:
    return ct_voxels * CT_BYTES_PER_VOXEL + model_voxels * MODEL_BYTES_PER_VOXEL
