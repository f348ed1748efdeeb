"""Time ``load_series`` on a synthetic 512 x 512 x N CT series (default 160 slices), optionally compressed.

Usage: .venv/bin/python scripts/time_load_series.py [--slices 160] [--syntax native|rle|j2k] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.pipeline.series import load_series  # noqa: E402
from tests.dicom_factory import write_ct_series  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=160)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--syntax", choices=["native", "rle", "j2k"], default="native")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=(args.slices, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = write_ct_series(Path(tmp), hu, (2.0, 0.9765625, 0.9765625), (-250.0, -250.0, -100.0), "HFS")
        if args.syntax != "native":
            syntax = RLELossless if args.syntax == "rle" else JPEG2000Lossless
            for path in files:
                ds = pydicom.dcmread(path)
                ds.compress(syntax)
                ds.save_as(path)
        print(f"wrote {len(files)} files ({args.syntax}) in {time.perf_counter() - t0:.1f} s")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            volume = load_series(Path(tmp))
            elapsed = time.perf_counter() - t0
            same = np.array_equal(volume.array_zyx, hu)
            print(f"load_series: {volume.shape_zyx} in {elapsed:.2f} s (array equal: {same})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
