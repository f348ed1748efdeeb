"""Model-stage cost of the QA perturbation members: ``python -m bench.qa_members_cost [--runtime RT]``.

On the benchmark's clinical input (the sample patient pt_201 resampled to 512 x 512 x 154, ``bench.data``) with
the promoted bundle: the model grid, the body box and the glands' region where the extra members run
(``qa_perturb.glands_region``), and the model stage (median of ``--repeats`` warm runs) for the plan's passes
only (what the contours come from) and with the bundle's extra members. Reads no OpenKBP split.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.qa_members_cost", description=__doc__)
    p.add_argument("--runtime", default="auto", help="PAROTID_RUNTIME value")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    os.environ["PAROTID_RUNTIME"] = args.runtime

    from bench.data import CLINICAL, load_sample_hu, resample_to_grid
    from service.model_bundle import load_bundle, resolve_bundle
    from service.pipeline.infer import body_box, predict_probabilities
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.qa_calibration import load_calibration
    from service.pipeline.qa_perturb import DEFAULT_PERTURBATIONS, predict_with_members
    from service.pipeline.volume import Volume

    ref = resolve_bundle(None)
    loaded = load_bundle(ref)
    plan = loaded.plan
    cal = load_calibration(ref.path)
    extra = tuple(cal.perturbations) if cal else DEFAULT_PERTURBATIONS
    hu, spacing = load_sample_hu("pt_201")
    ct_hu = resample_to_grid(hu, spacing, CLINICAL)
    ct = Volume(ct_hu, (CLINICAL.slice_mm, CLINICAL.pixel_mm, CLINICAL.pixel_mm), (0.0, 0.0, 0.0))
    x = preprocess_volume(ct, plan)
    box = body_box(x, plan)
    region = predict_with_members(loaded.predict, x, plan, extra).region  # also the warm-up

    def size(slices: tuple[slice, ...] | None) -> str:
        return "none" if slices is None else " x ".join(str(s.stop - s.start) for s in slices)

    print(f"bundle {ref.name}:{ref.version} on {loaded.runtime}; CT {ct.shape_zyx}, model grid {x.shape}")
    print(f"body box {size(box)}; glands' region (extra members) {size(region)}; extras {', '.join(extra)}")
    rows = []
    for label, fn in (
        ("plan only (identity + LR mirror)", lambda: predict_probabilities(loaded.predict, x, plan)),
        (f"with the extra members ({len(extra)})", lambda: predict_with_members(loaded.predict, x, plan, extra)),
    ):
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        rows.append(statistics.median(ts))
        print(f"{label}: median {rows[-1]:.2f} s (runs {', '.join(f'{t:.2f}' for t in ts)})", flush=True)
    print(f"the extra members add {100.0 * (rows[1] / rows[0] - 1.0):.0f} % to the model stage")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
