"""Issue 14 experiment: does a second, independently trained network flag the shipped model's poor glands?

``python -m training.qa_second_opinion --bundle A --second B --data-dir VALIDATION_SPLIT --output OUT.json``

For every patient of the split, both bundles segment the CT through the service's own stages (probabilities, the
glands' boxes, the clean-up), and per gland of bundle A: Dice between A's and B's masks, A's volume relative to B's,
and the truth (A's Dice and HD95 against the reference). The report gives the AUROC (with a 95 % patient bootstrap
interval) of ``1 - Dice(A, B)`` and of ``|log(vol A / vol B)|`` for a poor gland (Dice < 0.75 or HD95 > 8 mm, the
QA's definition), next to the QA's best single signals. Refuses OpenKBP ``test-pats``. Nothing is written into
either bundle.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.qa_second_opinion", description=__doc__)
    p.add_argument("--bundle", type=Path, required=True, help="the bundle whose glands are judged")
    p.add_argument("--second", type=Path, required=True, help="the second opinion")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--format", default="openkbp")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    if "test-pats" in args.data_dir.parts:
        print("refused: test-pats is the independent holdout", file=sys.stderr)
        return 2
    from service.model_bundle import BundleRef, load_bundle
    from service.pipeline import metrics as M
    from service.pipeline.gland_boxes import postprocess_on_ct_grid
    from service.pipeline.infer import predict_probabilities
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.volume import Volume
    from training.calibrate_qa import is_poor
    from training.data.case import SkipReport
    from training.prepare import iter_cases
    from training.qa_fit import auroc, bootstrap_auroc_ci

    models = [load_bundle(BundleRef(b.parent.name, b.name, b)) for b in (args.bundle, args.second)]
    rows: list[dict[str, Any]] = []
    for case in iter_cases(args.data_dir, args.format, SkipReport({})):
        ct = Volume(case.hu_zyx, case.spacing_mm_zyx, (0.0, 0.0, 0.0))
        masks = []
        for m in models:
            probs = predict_probabilities(m.predict, preprocess_volume(ct, m.plan), m.plan)
            masks.append(postprocess_on_ct_grid(probs, m.plan, ct.spacing_mm_zyx, ct.shape_zyx))
        for g, ref in case.masks.items():
            if g not in masks[0]:
                continue
            a, b = masks[0][g].mask_zyx, masks[1][g].mask_zyx
            hd95, _ = M.surface_metrics_mm(a, ref, ct.spacing_mm_zyx)
            va, vb = int(a.sum()), int(b.sum())
            rows.append(
                {
                    "patient": case.case_id,
                    "gland": g,
                    "dice": M.dice(a, ref),
                    "hd95_mm": hd95,
                    "dice_ab": M.dice(a, b),
                    "abs_log_vol_ab": abs(math.log(va / vb)) if va and vb else float("inf"),
                    "dice_second": M.dice(b, ref),
                }
            )
        print(f"{case.case_id}: " + ", ".join(f"{r['gland']} {r['dice_ab']:.3f}" for r in rows[-2:]), file=sys.stderr)
    poor = np.array([is_poor(r) for r in rows])
    groups = np.array([r["patient"] for r in rows])
    report: dict[str, object] = {"bundle": str(args.bundle), "second": str(args.second), "n_glands": len(rows),
                                 "n_poor": int(poor.sum())}  # fmt: skip
    for name, scores in (
        ("1 - dice_ab", np.array([1.0 - r["dice_ab"] for r in rows])),
        ("abs_log_vol_ab", np.array([min(r["abs_log_vol_ab"], 10.0) for r in rows])),
    ):
        area = auroc(scores, poor)  # NaN unless both poor and good glands are present
        ci = list(bootstrap_auroc_ci(scores, poor, groups)) if math.isfinite(area) else [float("nan")] * 2
        report[name] = {"auroc": area, "ci95": ci}
    report["median_dice"] = {
        "bundle": float(np.median([r["dice"] for r in rows])),
        "second": float(np.median([r["dice_second"] for r in rows])),
    }
    report["rows"] = rows
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, default=float))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
