"""One worker-like process for ``make bench``'s size sweep: ``python -m bench.probe SERIES_DIR --runtime RT``.

Loads the model on the runtime, runs the whole pipeline (``run_segmentation`` + ``write_outputs``: RTSTRUCT, QA,
preview) once cold and ``--repeats`` times warm on the series, and prints one JSON line: warm latencies, the stage
times of the last run and the peak RSS of the process (VmHWM), so each (input size, runtime) is measured in a
fresh process whose memory peak belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__)
    p.add_argument("series", type=Path)
    p.add_argument("--runtime", default="auto")
    p.add_argument("--model", default=None)
    p.add_argument("--model-store", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    os.environ["PAROTID_RUNTIME"] = args.runtime
    from service.model_bundle import DEFAULT_STORE, load_bundle, resolve_bundle
    from service.pipeline.segment import run_segmentation, write_outputs

    store = args.model_store or DEFAULT_STORE
    loaded = load_bundle(resolve_bundle(args.model, store))
    latencies, stages = [], {}
    with tempfile.TemporaryDirectory() as out:
        for n in range(args.repeats + 1):
            t0 = time.perf_counter()
            result = run_segmentation(args.series, model=args.model, store=store)
            qa = write_outputs(result, Path(out) / "RS.dcm", Path(out) / "qa.json", Path(out) / "preview.png")
            if n:  # the first run warms the runtime (graph compilation, caches)
                latencies.append(round(time.perf_counter() - t0, 3))
            stages = dict(qa.stage_times_s)
            del result
    print(
        json.dumps(
            {
                "runtime": loaded.runtime,
                "shape_zyx": list(qa.input.grid_shape_zyx),
                "latencies_s": latencies,
                "stages_s": stages,
                "peak_rss_bytes": _vm_hwm_bytes(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
