"""Peak Python-heap memory (tracemalloc) of ``run_segmentation`` per CT voxel on the oracle bundle: the figures
behind ``service/pipeline/budget.py``. Run: ``.venv/bin/python -m bench.memory_per_voxel`` (about a minute; the
network's weights and window activations are outside tracemalloc and bounded by the plan's window)."""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

from service.pipeline.budget import model_grid_shape
from service.pipeline.segment import run_segmentation
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.dicom_factory import write_ct_series

CASES = [(40, 128, (2.5, 4.0, 4.0)), (40, 256, (2.5, 1.0, 1.0)), (80, 256, (1.25, 1.0, 1.0))]


def main() -> None:
    d = Path(tempfile.mkdtemp())
    store = d / "store"
    build_oracle_bundle(store, promote=True)
    for nz, ny, spacing in CASES:
        hu, _ = oracle_phantom((nz, ny, ny))
        files = write_ct_series(d / f"ct{nz}_{ny}_{spacing[1]}", hu, spacing, (0, 0, 0), "HFS")
        tracemalloc.start()
        run_segmentation(files, store=store)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ct_vox = nz * ny * ny
        model_vox = int(np.prod(model_grid_shape((nz, ny, ny), spacing, (2.5, 4.0, 4.0))))
        print(
            f"{nz}x{ny}x{ny} @ {spacing}: CT {ct_vox} vox, model {model_vox} vox, peak {peak / 2**20:.1f} MiB, "
            f"{peak / ct_vox:.1f} B/CT voxel"
        )


if __name__ == "__main__":
    main()
