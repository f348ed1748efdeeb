"""Resampling: the pipeline's separable passes against SimpleITK (``python -m bench.resampling``).

The two resamplings of the pipeline on the bench's clinical grid (512 x 512 x 154 at 1 x 1 x 2.5 mm, the model
grid at 4 x 4 x 2.5 mm): the CT onto the model grid (preprocess), and one probability channel back onto the CT
grid, over the whole grid and inside one gland-sized box (what the service does since the box path). SimpleITK's
``Resample`` (linear, multi-threaded ITK) runs on the same arrays with the same geometry (shared origin); the
maximum difference between the two is printed with the times (median of ``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from service.pipeline.preprocess import linear_resample_box, resample_back, resample_to_spacing, target_shape

CT_SHAPE = (154, 512, 512)
CT_SPACING = (2.5, 1.0, 1.0)
MODEL_SPACING = (2.5, 4.0, 4.0)
BOX = (slice(40, 100), slice(180, 300), slice(90, 190))  # about one parotid with margins, CT voxels


def _median_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    assert out is not None
    return statistics.median(times), out


def _sitk_resample(array_zyx: np.ndarray, spacing_in, spacing_out, shape_out, index0=(0, 0, 0)) -> np.ndarray:
    """SimpleITK linear resampling, origin shared; ``index0`` (z, y, x) starts the output at that voxel."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_in)))
    origin = tuple(float(i * s) for i, s in zip(reversed(index0), reversed(spacing_out), strict=True))
    out = sitk.Resample(
        img,
        [int(n) for n in reversed(shape_out)],
        sitk.Transform(),
        sitk.sitkLinear,
        origin,
        tuple(float(s) for s in reversed(spacing_out)),
        img.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.resampling", description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    ct = rng.normal(0.0, 300.0, size=CT_SHAPE).astype(np.float32)
    model_shape = target_shape(CT_SHAPE, CT_SPACING, MODEL_SPACING)
    prob = rng.random(model_shape, dtype=np.float32)
    box_shape = tuple(s.stop - s.start for s in BOX)
    scale_back = [c / m for m, c in zip(MODEL_SPACING, CT_SPACING, strict=True)]
    cases = {
        "CT -> model grid": (
            lambda: resample_to_spacing(ct, CT_SPACING, MODEL_SPACING),
            lambda: _sitk_resample(ct, CT_SPACING, MODEL_SPACING, model_shape),
        ),
        "probabilities -> CT grid, whole grid": (
            lambda: resample_back(prob, MODEL_SPACING, CT_SPACING, CT_SHAPE),
            lambda: _sitk_resample(prob, MODEL_SPACING, CT_SPACING, CT_SHAPE),
        ),
        "probabilities -> CT grid, one gland box": (
            lambda: linear_resample_box(prob, scale_back, CT_SHAPE, BOX),
            lambda: _sitk_resample(prob, MODEL_SPACING, CT_SPACING, box_shape, tuple(s.start for s in BOX)),
        ),
    }
    rows = []
    for name, (ours, theirs) in cases.items():
        t_ours, a = _median_time(ours, args.repeats)
        t_sitk, b = _median_time(theirs, args.repeats)
        # ITK clamps nothing at the upper edge (it samples outside as the default 0): compare the interior only
        inner = tuple(slice(0, n - 4) for n in a.shape)
        rows.append(
            {
                "case": name,
                "separable_s": round(t_ours, 4),
                "simpleitk_s": round(t_sitk, 4),
                "max_abs_diff_interior": float(np.abs(a[inner] - b[inner]).max()),
            }
        )
    info = {
        "threads_simpleitk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "cores": os.cpu_count(),
        "load_before": round(os.getloadavg()[0], 2),
        "results": rows,
    }
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
