"""The measurement half of ``training.calibrate_qa``: QA signals + truth per gland, cached as JSON lines.

- ``measure_predictions``: runs the bundle (the service's own path, plus the QA perturbation members) on every
  patient of a split and writes one row per gland: every signal of ``service.pipeline.qa_collect`` and the truth
  (Dice, HD95 against the reference contour). Patients already in the output file are skipped, so an interrupted
  run resumes.
- ``measure_population``: the plausibility measurements of the *reference* contours of a split (no inference),
  the population the plausibility z-scores are taken against.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.pipeline.qa import LR_PAIRS


def _clean(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


def _done_patients(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {json.loads(line)["patient"] for line in path.read_text().splitlines() if line.strip()}


def measure_predictions(bundle: Path, data_dir: Path, fmt: str, out_path: Path, perturbations: Sequence[str]) -> None:
    from service.model_bundle import BundleRef, load_bundle
    from service.pipeline import metrics as M
    from service.pipeline.gland_boxes import clean_glands, gland_probabilities
    from service.pipeline.postprocess import GlandMask, weighted_argmax
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.qa_collect import collect_gland_signals, collect_input_signals, gland_z_range
    from service.pipeline.qa_perturb import predict_with_members
    from service.pipeline.qa_signals import UNCERTAIN_LOW
    from training.data.case import SkipReport
    from training.prepare import iter_cases

    loaded = load_bundle(BundleRef(bundle.parent.name, bundle.name, bundle))
    plan = loaded.plan
    done = _done_patients(out_path)
    report = SkipReport({})
    for case in iter_cases(data_dir, fmt, report):
        if case.case_id in done:
            continue
        t0 = time.perf_counter()
        from service.pipeline.volume import Volume

        ct = Volume(case.hu_zyx, case.spacing_mm_zyx, (0.0, 0.0, 0.0))
        mp = predict_with_members(loaded.predict, preprocess_volume(ct, plan), plan, perturbations)
        # the service's own stages (run_segmentation): each gland's probabilities in its box, then the clean-up
        boxed = gland_probabilities(mp.probs_zyxc, plan, ct.spacing_mm_zyx, ct.shape_zyx, min_threshold=UNCERTAIN_LOW)
        glands: dict[str, GlandMask] = clean_glands(boxed, plan.background_weight, ct.shape_zyx)
        signals = collect_gland_signals(
            case.hu_zyx, ct.spacing_mm_zyx, ct.origin_lps, glands, boxed, mp, plan.background_weight, LR_PAIRS
        )
        z_range = gland_z_range([g.mask_zyx for g in glands.values()], ct.shape_zyx[0])
        inp = collect_input_signals(case.hu_zyx, ct.spacing_mm_zyx, z_range, -500.0)
        seconds = time.perf_counter() - t0
        rows = []
        for name, g in glands.items():
            row: dict[str, object] = {"patient": case.case_id, "gland": name, "seconds": seconds}
            row.update({k: _clean(v) for k, v in signals[name].items()})
            row.update({f"input_{k}": _clean(v) for k, v in inp.items()})
            c = plan.labels.index(name)
            cons = weighted_argmax(mp.probs_zyxc, plan.background_weight) == c
            # per member (so that calibration can score smaller member sets without new inference)
            row["member_dice_by_name"] = {
                n: _clean(M.dice(lab == c, cons)) for n, lab in zip(mp.member_names, mp.member_labels, strict=True)
            }
            row["member_voxels_by_name"] = {
                n: int((lab == c).sum()) for n, lab in zip(mp.member_names, mp.member_labels, strict=True)
            }
            if name in case.masks:
                ref = case.masks[name]
                hd95, msd = M.surface_metrics_mm(g.mask_zyx, ref, ct.spacing_mm_zyx)
                row.update(
                    reference_present=True,
                    dice=_clean(M.dice(g.mask_zyx, ref)),
                    hd95_mm=_clean(hd95),
                    ref_volume_cc=M.volume_cc(ref, ct.spacing_mm_zyx),
                )
            else:
                row["reference_present"] = False
            rows.append(row)
        with out_path.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        print(
            f"{case.case_id}: {seconds:.0f} s, "
            + ", ".join(f"{r['gland']} Dice {r.get('dice') or float('nan'):.3f}" for r in rows),
            file=sys.stderr,
            flush=True,
        )


def measure_population(data_dir: Path, fmt: str, out_path: Path) -> None:
    from service.pipeline.qa_signals import body_landmarks, gland_geometry
    from training.data.case import SkipReport
    from training.prepare import iter_cases

    report = SkipReport({})
    rows = []
    for case in iter_cases(data_dir, fmt, report):
        names = [n for pair in LR_PAIRS for n in pair]
        if not all(n in case.masks for n in names):
            continue
        union = np.zeros(case.hu_zyx.shape, dtype=bool)
        for n in names:
            union |= case.masks[n]
        ks = np.flatnonzero(union.any(axis=(1, 2)))
        body = body_landmarks(case.hu_zyx, case.spacing_mm_zyx, (0.0, 0.0, 0.0), (int(ks[0]), int(ks[-1])))
        geo = {n: gland_geometry(case.hu_zyx, case.masks[n], case.spacing_mm_zyx, (0.0, 0.0, 0.0), body) for n in names}
        for left, right in LR_PAIRS:
            ratio = math.log(geo[left]["volume_cc"] / geo[right]["volume_cc"])
            geo[left]["log_lr_ratio"], geo[right]["log_lr_ratio"] = ratio, -ratio
        for n in names:
            rows.append({"patient": case.case_id, "gland": n, **{k: _clean(v) for k, v in geo[n].items()}})
    out_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"population: {len(rows)} glands from {data_dir}; skipped {len(report.skipped)}", file=sys.stderr)
