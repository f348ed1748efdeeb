"""Evaluate a bundle on a split: ``python -m training.evaluate --bundle model_store/NAME/VERSION --data-dir DIR``.

Runs the service's own inference path (``load_bundle`` -> preprocess -> predict -> back to the CT grid ->
postprocess) on every patient and compares with the reference contours on the patient's native grid. Writes
``per_patient.csv``, ``summary.json`` (per gland: mean, median, SD of Dice and IoU, HD95 in both definitions, mean
surface distance, surface Dice at 2 and 3 mm, volumes; ``cohort``, both glands pooled: volume error by reference
size band and its Spearman correlation with the reference volume, the reference missed by medial / middle / lateral
third, the anterior border shortfall and, where the data carry the clinical plan dose (OpenKBP ``dose.csv``), the
mean dose and D50 to the automatic and the reference contour and their difference; see ``training.evaluate_report``)
and ``bland_altman.png`` (predicted vs reference gland volumes). Never writes into the bundle unless
``--update-bundle`` is given, and then only when ``--data-dir``/``--format`` are the split the bundle was selected
on (its metrics.json ``data``): it stores the summary in metrics.json, regenerates MODEL_CARD.md and the checksums.
Refuses OpenKBP ``test-pats`` unless ``--holdout-final-report`` is given (a one-off final report, never used for
selection or tuning).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from training.evaluate_report import DOSE_FIELDS, ROW_FIELDS, cohort_summary, gland_extras, gland_metrics


def _summary(rows: list[dict], glands: tuple[str, ...]) -> dict:
    out = {}
    for g in glands:
        r = [x for x in rows if x["gland"] == g and x["reference_present"]]
        if not r:
            continue

        def col(k: str, r=r) -> np.ndarray:
            return np.array([x[k] for x in r], dtype=float)

        d, j, h, m = col("dice"), col("iou"), col("hd95_mm"), col("msd_mm")
        out[g] = {
            "n": len(r),
            "dice_mean": float(np.mean(d)),
            "dice_median": float(np.median(d)),
            "dice_std": float(np.std(d, ddof=1)) if len(d) > 1 else 0.0,
            "iou_mean": float(np.mean(j)),
            "iou_median": float(np.median(j)),
            "iou_std": float(np.std(j, ddof=1)) if len(j) > 1 else 0.0,
            "hd95_mm_mean": float(np.nanmean(h)),
            "hd95_mm_median": float(np.nanmedian(h)),
            "msd_mm_mean": float(np.nanmean(m)),
            "msd_mm_median": float(np.nanmedian(m)),
            "volume_diff_cc_mean": float(np.mean(col("pred_cc") - col("ref_cc"))),
            **gland_extras(r),
        }
    return out


def bland_altman(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    for g, color in (("Parotid_L", "tab:blue"), ("Parotid_R", "tab:orange")):
        r = [x for x in rows if x["gland"] == g and x["reference_present"]]
        if not r:
            continue
        p = np.array([x["pred_cc"] for x in r])
        t = np.array([x["ref_cc"] for x in r])
        ax.scatter((p + t) / 2, p - t, s=18, color=color, label=g, alpha=0.8)
    allr = [x for x in rows if x["reference_present"]]
    diff = np.array([x["pred_cc"] - x["ref_cc"] for x in allr])
    if diff.size:
        mean, sd = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else 0.0
        ax.axhline(mean, color="k", lw=1, label=f"mean diff {mean:+.2f} cc")
        for s in (-1.96, 1.96):
            ax.axhline(mean + s * sd, color="k", lw=1, ls="--")
        ax.text(
            0.99,
            0.02,
            f"limits of agreement {mean - 1.96 * sd:+.1f} / {mean + 1.96 * sd:+.1f} cc",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
        )
    ax.set_xlabel("mean of predicted and reference volume (cc)")
    ax.set_ylabel("predicted - reference volume (cc)")
    ax.set_title("Bland-Altman: parotid gland volumes")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(
    bundle: Path,
    data_dir: Path,
    fmt: str,
    out_dir: Path,
    tta: bool | None = None,
    sweep_weights: tuple[float, ...] = (),
) -> dict:
    from service.model_bundle import BundleRef, load_bundle
    from service.pipeline import metrics as M
    from service.pipeline.infer import predict_probabilities, probabilities_to_ct_grid
    from service.pipeline.postprocess import postprocess
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.volume import Volume
    from training.data.case import SkipReport
    from training.prepare import iter_cases

    loaded = load_bundle(BundleRef(bundle.parent.name, bundle.name, bundle))
    plan = loaded.plan if tta is None else loaded.plan.model_copy(update={"tta_lr_flip": tta})
    glands = tuple(plan.labels[1:])
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SkipReport({})
    rows: list[dict] = []
    sweep_rows: list[dict] = []
    times = []
    for case in iter_cases(data_dir, fmt, report, with_dose=True):
        t0 = time.perf_counter()
        ct = Volume(case.hu_zyx, case.spacing_mm_zyx, (0.0, 0.0, 0.0))
        probs = predict_probabilities(loaded.predict, preprocess_volume(ct, plan), plan)
        probs_ct = probabilities_to_ct_grid(probs, plan, ct.spacing_mm_zyx, ct.shape_zyx)
        pred = postprocess(probs_ct, plan.labels, plan.background_weight)
        times.append(time.perf_counter() - t0)
        for weight in sweep_weights:  # the same probabilities under other background weights (no new inference)
            swept = pred if weight == plan.background_weight else postprocess(probs_ct, plan.labels, weight)
            for g in glands:
                if g in case.masks:
                    pm, ref = swept[g].mask_zyx, case.masks[g]
                    sweep_rows.append(
                        {
                            "weight": weight,
                            "gland": g,
                            "dice": M.dice(pm, ref),
                            "volume_diff_cc": M.volume_cc(pm, ct.spacing_mm_zyx) - M.volume_cc(ref, ct.spacing_mm_zyx),
                        }
                    )
        for g in glands:
            pm = pred[g].mask_zyx
            present = g in case.masks
            ref = case.masks.get(g, np.zeros_like(pm))
            row = {
                "patient": case.case_id,
                "gland": g,
                "reference_present": present,
                "pred_cc": M.volume_cc(pm, ct.spacing_mm_zyx),
                "ref_cc": M.volume_cc(ref, ct.spacing_mm_zyx),
            }
            if present:
                row.update(gland_metrics(pm, ref, ct.spacing_mm_zyx, g, case.dose_gy_zyx))
            rows.append(row)
        done = [r for r in rows if r["patient"] == case.case_id and r["reference_present"]]
        print(
            f"{case.case_id}: " + ", ".join(f"{r['gland']} Dice {r['dice']:.3f}" for r in done),
            file=sys.stderr,
            flush=True,
        )
    with_dose = any("mean_dose_ref_gy" in r for r in rows)
    fields = ["patient", "gland", "reference_present", *ROW_FIELDS, *(DOSE_FIELDS if with_dose else ())]
    with (out_dir / "per_patient.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    summary = {
        "bundle": f"{bundle.parent.name}:{bundle.name}",
        "data_dir": str(data_dir),
        "format": fmt,
        "n_patients": len({r["patient"] for r in rows}),
        "skipped": report.skipped,
        "grid": "each patient's native grid",
        "tta_lr_flip": plan.tta_lr_flip,
        "background_weight": plan.background_weight,
        "summary": _summary(rows, glands),
        "cohort": cohort_summary([r for r in rows if r["reference_present"]]),
        "seconds_per_patient_median": float(np.median(times)) if times else None,
    }
    if sweep_weights:
        summary["background_weight_sweep"] = _sweep_summary(sweep_rows, glands)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    bland_altman(rows, out_dir / "bland_altman.png")
    return summary


def _sweep_summary(rows: list[dict], glands: tuple[str, ...]) -> list[dict]:
    out = []
    for w in sorted({r["weight"] for r in rows}, reverse=True):
        entry: dict = {"background_weight": w}
        for g in glands:
            d = np.array([r["dice"] for r in rows if r["weight"] == w and r["gland"] == g])
            v = np.array([r["volume_diff_cc"] for r in rows if r["weight"] == w and r["gland"] == g])
            if len(d):
                entry[g] = {
                    "dice_median": float(np.median(d)),
                    "dice_mean": float(np.mean(d)),
                    "volume_diff_cc_median": float(np.median(v)),
                }
        out.append(entry)
    return out


def update_refusal(bundle: Path, data_dir: Path, fmt: str) -> str | None:
    """Why ``--update-bundle`` must not store this evaluation in the bundle, or None when it may.

    A bundle's metrics and card describe it on the split it was selected on (its ``metrics.json`` ``data.val_dir``
    and ``data.format``); an evaluation on any other data (a clinic's patients, another split) stays in
    ``--output`` and never rewrites the bundle.
    """
    from training.model_card_data import same_folder

    try:
        data = json.loads((bundle / "metrics.json").read_text()).get("data") or {}
    except (OSError, ValueError) as exc:
        return f"{bundle / 'metrics.json'}: unreadable ({exc})"
    if not data.get("val_dir") or not data.get("format"):
        return f"{bundle / 'metrics.json'} records no selection split (data.val_dir, data.format)"
    if fmt != data["format"] or not same_folder(data_dir, data["val_dir"]):
        return (
            f"the bundle was selected on {data['format']} {data['val_dir']}; {fmt} {data_dir} is other data, so its "
            "metrics stay in --output and the bundle is left as it is (use parotid-seg evaluate for a clinic's own "
            "patients)"
        )
    return None


def update_bundle(bundle: Path, summary: dict) -> None:
    from service.model_bundle import write_checksums
    from service.pipeline.plan import Plan
    from training.model_card import write_model_card

    metrics = json.loads((bundle / "metrics.json").read_text())
    metrics["validation"] = summary
    (bundle / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(bundle, bundle.parent.name, bundle.name, metrics, Plan.load(bundle / "plan.json"))
    write_checksums(bundle)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--format", choices=["openkbp", "dicom", "nifti"], default="openkbp")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--update-bundle", action="store_true")
    p.add_argument(
        "--tta",
        choices=["plan", "on", "off"],
        default="plan",
        help="left-right flip test-time augmentation: as the bundle's plan says, or forced on/off",
    )
    p.add_argument(
        "--sweep-background-weight",
        default="",
        help="comma-separated background weights to also score from the same probabilities (e.g. 1,0.8,0.6); "
        "the sweep goes into summary.json, the chosen weight into a bundle with `training.export --background-weight`",
    )
    p.add_argument("--holdout-final-report", action="store_true")
    args = p.parse_args(argv)
    if args.data_dir.name == "test-pats" and not args.holdout_final_report:
        print(
            "error[BAD_TRAINING_DATA]: test-pats is the independent holdout; use --holdout-final-report only for"
            " a one-off final report",
            file=sys.stderr,
        )
        return 2
    tta = None if args.tta == "plan" else args.tta == "on"
    if args.update_bundle and tta is not None:
        print("error: --update-bundle evaluates the bundle as it is (use --tta plan)", file=sys.stderr)
        return 2
    if args.update_bundle:
        refusal = update_refusal(args.bundle, args.data_dir, args.format)
        if refusal:
            print(f"error: --update-bundle refused: {refusal}", file=sys.stderr)
            return 2
    try:
        weights = tuple(float(w) for w in args.sweep_background_weight.split(",") if w.strip())
    except ValueError:
        print(f"error: --sweep-background-weight {args.sweep_background_weight!r}: numbers expected", file=sys.stderr)
        return 2
    if any(not 0 < w <= 1 for w in weights):
        print("error: background weights must lie in (0, 1]", file=sys.stderr)
        return 2
    summary = evaluate(args.bundle, args.data_dir, args.format, args.output, tta, weights)
    for g, s in summary["summary"].items():
        print(
            f"{g}: n={s['n']} Dice median {s['dice_median']:.3f} mean {s['dice_mean']:.3f} "
            f"SD {s['dice_std']:.3f}; HD95 median {s['hd95_mm_median']:.1f} mm",
            file=sys.stderr,
        )
    from training.evaluate_report import card_lines

    for line in card_lines(summary):
        if line:
            print(line, file=sys.stderr)
    for entry in summary.get("background_weight_sweep", []):
        parts = [f"{g} median {v['dice_median']:.3f}" for g, v in entry.items() if isinstance(v, dict)]
        print(f"background weight {entry['background_weight']}: " + ", ".join(parts), file=sys.stderr)
    if args.update_bundle:
        update_bundle(args.bundle, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
