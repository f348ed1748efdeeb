"""Time the review cache (``service.review.cache``) on a clinical-size CT: the OpenKBP sample pt_201 resampled to
512 x 512 pixels of 1 mm and 2.5 mm slices (``bench.data.CLINICAL``), with an RTSTRUCT of two box "glands".

    .venv/bin/python -m bench.review_cache [--repeats 3]

Prints the median seconds of the whole build and of its parts (reading the series again, rasterizing the
RTSTRUCT, writing ct.nii.gz) and the size of ct.nii.gz. This is the time a job spends in stage review_cache.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.data import CLINICAL, write_series


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from service.pipeline.rtstruct import write_rtstruct
    from service.pipeline.rtstruct_read import read_rtstruct_masks
    from service.pipeline.series import load_series
    from service.review.cache import REVIEW_DIR, build_review_cache
    from service.review.nifti import nifti_bytes

    root = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        series = write_series(root / "input", CLINICAL)
        ct = load_series(series.folder)
        assert ct.info is not None
        nz, ny, nx = ct.shape_zyx
        masks = {name: np.zeros(ct.shape_zyx, dtype=bool) for name in ("Parotid_L", "Parotid_R")}
        masks["Parotid_L"][nz // 2 - 10 : nz // 2 + 10, ny // 2 - 20 : ny // 2 + 20, nx // 2 + 60 : nx // 2 + 100] = (
            True
        )
        masks["Parotid_R"][nz // 2 - 10 : nz // 2 + 10, ny // 2 - 20 : ny // 2 + 20, nx // 2 - 100 : nx // 2 - 60] = (
            True
        )
        rs = root / "rtstruct.dcm"
        write_rtstruct(ct, masks, rs, model_name="bench", model_version="0")
        times: dict[str, list[float]] = {"total": [], "read_series": [], "rasterize": [], "write_ct_nifti": []}
        for _ in range(args.repeats):
            shutil.rmtree(root / REVIEW_DIR, ignore_errors=True)
            t0 = time.perf_counter()
            build_review_cache(root, series.folder, rs, series_uid=ct.info.series_instance_uid)
            times["total"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = load_series(series.folder)
            times["read_series"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            read_rtstruct_masks(rs, again, list(masks))
            times["rasterize"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            nifti_bytes(again.array_zyx.astype(np.int16), again.spacing_mm_zyx, again.origin_lps)
            times["write_ct_nifti"].append(time.perf_counter() - t0)
        size_mib = (root / REVIEW_DIR / "ct.nii.gz").stat().st_size / 2**20
        print(f"review cache, {nz} x {ny} x {nx} CT, median of {args.repeats}:")
        for name, values in times.items():
            print(f"  {name:15s} {statistics.median(values):6.2f} s")
        print(f"  ct.nii.gz       {size_mib:6.1f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
