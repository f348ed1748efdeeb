"""MODEL_CARD.md for a bundle, generated from its metrics.json and plan (never hand-edited numbers)."""

from __future__ import annotations

from pathlib import Path

from service.pipeline.plan import Plan


def _fmt(x: object, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _validation_table(val: dict) -> str:
    rows = [
        "| gland | n | Dice mean | Dice median | Dice SD | IoU mean | IoU median | HD95 mm median | MSD mm median |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for gland, s in val["summary"].items():
        rows.append(
            f"| {gland} | {s['n']} | {_fmt(s['dice_mean'])} | {_fmt(s['dice_median'])} | {_fmt(s['dice_std'])} | "
            f"{_fmt(s['iou_mean'])} | {_fmt(s['iou_median'])} | {_fmt(s['hd95_mm_median'], 1)} | "
            f"{_fmt(s['msd_mm_median'], 2)} |"
        )
    return "\n".join(rows)


def write_model_card(bundle: Path, name: str, version: str, metrics: dict, plan: Plan) -> None:
    tr = metrics.get("training", {})
    data = metrics.get("data", {})
    val = metrics.get("validation")
    excluded = data.get("train_patients_excluded_missing_gland", [])
    lines = [
        f"# Model card: {name} {version}",
        "",
        "**Research use only. Not for clinical decisions.** Every contour must be reviewed and approved by a",
        "qualified person before any use in treatment planning.",
        "",
        "## What it does",
        "Segments the left and right parotid glands (TG-263 `Parotid_L`, `Parotid_R`) on head-and-neck CT.",
        f"Network: {_network_kind(metrics)} (Keras 3), {tr.get('base_filters')} base filters, layer",
        "normalisation, softmax over background / Parotid_R / Parotid_L. Loss: "
        + (
            "0.7 x (1 - modified Dice) + 0.3 x focal (gamma 1, alpha 0.3/0.35/0.35)."
            if tr.get("loss") == "combined"
            else f"{tr.get('loss')}."
        ),
        "",
        "## Data and splits",
        "OpenKBP grand-challenge dataset (Babier et al., Med. Phys. 48 (2021) 5549-5561; github.com/ababier/open-kbp),",
        "head-and-neck cancer patients treated with IMRT, CT stored at about 3.8-5.4 mm in-plane and 1.5-3.3 mm",
        "between slices, clinical contours from the source clinics.",
        f"- Training: `train-pats`, {data.get('train_patients_used')} patients used; "
        f"{len(excluded)} left out because a parotid was not contoured (a missing gland must not be learnt as "
        f"background); unreadable/absent in the copy used: {len(data.get('train_skipped', {}))}.",
        f"- Model selection (best validation Dice checkpoint) and early stopping: `validation-pats` "
        f"({data.get('val_patients_per_epoch')} patients per epoch).",
        "- `test-pats` is an independent holdout: it was never read by training, tuning or selection.",
        "- The copy of OpenKBP available to us lacks files of 4 MiB and more: 54 of the 340 CTs are absent.",
        "",
        "## Preprocessing contract (plan.json)",
        f"Resampled to {plan.spacing_mm_zyx} mm (z, y, x), HU clipped to {plan.hu_clip} and scaled by "
        f"1/{plan.hu_scale}; training patches {plan.patch_size_zyx}; inference window "
        f"{plan.inference_window_zyx} on the body's bounding box; postprocessing keeps the largest connected "
        "component per gland and fills holes."
        + (
            f" Before the per-voxel argmax the background probability is multiplied by {plan.background_weight} "
            "(chosen by a sweep on `validation-pats`: the plain argmax under-segmented the glands)."
            if plan.background_weight != 1.0
            else ""
        ),
        "",
        "## Training",
        *_training_lines(metrics),
        "",
        "## Measured performance",
    ]
    if val:
        lines += [
            f"Measured with `make evaluate` on {val['n_patients']} OpenKBP `validation-pats` patients, on each "
            "patient's native OpenKBP grid, after postprocessing (the same code path as the service).",
            "",
            _validation_table(val),
            "",
            "The validation set was also used for checkpoint selection, so these numbers are optimistic by the",
            "selection effect; no test-set numbers are reported because test-pats is kept as a holdout.",
        ]
    else:
        lines.append("Not yet evaluated (run `make evaluate` with `--update-bundle`).")
    lines += [
        "",
        "## Known limitations",
        "- Trained and evaluated at OpenKBP's coarse resolution (~4 mm in-plane); boundary accuracy on 1 mm",
        "  clinical CT is bounded by that. The published study (median Dice 0.88 L / 0.87 R) used 1 mm data.",
        "- Contouring conventions of the OpenKBP source clinics (e.g. inclusion of the deep lobe, vessels).",
        "- Head-and-neck CT only, adult anatomy; unusual anatomy (resected glands, large tumours invading the",
        "  gland, metal artefacts) is not represented and is flagged for review only through the QA checks.",
        "- Fatty (low-density, about -100 HU) glands are segmented poorly or not at all: the training data hold few",
        "  of them, and the fatty-gland augmentation, where a run used it, did not fix it (the one such validation",
        "  patient gets glands of a few cc or none; QA flags a gland under `min_volume_cc` for review, an empty one",
        "  as `fail`).",
        "- The QA checks (volume, laterality, components, probability) catch gross failures, not subtle ones.",
        "",
        *_qa_lines(metrics.get("qa_calibration")),
    ]
    (bundle / "MODEL_CARD.md").write_text("\n".join(lines))


def _network_kind(metrics: dict) -> str:
    members = metrics.get("ensemble_members") or [metrics.get("training", {})]
    kinds = sorted({str(m.get("architecture")) for m in members})
    if len(members) == 1:
        return f"{kinds[0]} 3D U-Net"
    return f"ensemble of {len(members)} {'/'.join(kinds)} 3D U-Nets"


def _training_lines(metrics: dict) -> list[str]:
    members = metrics.get("ensemble_members") or [metrics.get("training", {})]
    lines = []
    if len(members) > 1:
        lines += [
            f"The bundle's model is an ensemble: the mean of the softmax outputs of {len(members)} networks trained "
            "as follows (inference takes about that many times longer than one network).",
            "",
        ]
    for i, tr in enumerate(members):
        prefix = f"- Member {i + 1} (`{tr.get('run')}`): " if len(members) > 1 else ""
        lines.append(
            f"{prefix}Epochs: {tr.get('epoch')}, patches seen: {tr.get('samples_seen')}, training wall time: "
            f"{_fmt(tr.get('train_seconds'), 0)} s on a 2-core CPU machine (PyTorch backend); best per-epoch "
            f"validation Dice (model grid, subset) {_fmt(tr.get('best_dice'))} at epoch {tr.get('best_dice_epoch')}. "
            + " ".join(_fine_tune_lines(tr))
        )
    return lines


def _total_seconds(tr: dict) -> float:
    """Training time of a run plus that of the runs it was fine-tuned from, recursively."""
    prior = (tr.get("init_from") or {}).get("training") or {}
    return float(tr.get("train_seconds") or 0) + (_total_seconds(prior) if prior else 0.0)


def _fine_tune_lines(tr: dict) -> list[str]:
    """Where a run started from another model's weights, say so, with what is known of that model's training."""
    lines = []
    init = tr.get("init_from")
    if init:
        prior = init.get("training") or {}
        total = _total_seconds(tr)
        lines.append(
            f"Fine-tuned from {init.get('bundle') or init.get('source')} (itself trained {prior.get('epoch')} epochs, "
            f"{prior.get('samples_seen')} patches, {_fmt(prior.get('train_seconds'), 0)} s, same data and splits); "
            f"these figures are for the fine-tuning alone, {_fmt(total, 0)} s of training in total."
        )
        if prior.get("architecture") and prior.get("architecture") != tr.get("architecture"):
            lines.append(
                f"That model is a {prior['architecture']} network: its weights were copied by layer name into this "
                f"{tr.get('architecture')} network, whose {init.get('fresh_layers')} attention blocks started fresh "
                f"(gates open)."
            )
    aug = tr.get("augment") or {}
    if aug:
        from training.dataset import AugmentConfig

        lo, hi = AugmentConfig().fatty_hu
        lines.append(
            f"Augmentation: rotation, scaling, intensity jitter, left-right flip with label swap; background patches "
            f"centred {'inside the body' if aug.get('background_sampling') == 'body' else 'anywhere in the volume'}; "
            f"fatty-gland simulation (gland darkened by {-hi:.0f}-{-lo:.0f} HU) with probability "
            f"{aug.get('p_fatty', 0)} per gland."
        )
    return lines


def _qa_lines(qa: dict | None) -> list[str]:
    """The QA calibration (``training.calibrate_qa``): how well `review` predicts a poor gland."""
    if not qa:
        return ["## QA calibration", "Not calibrated (run `python -m training.calibrate_qa`).", ""]
    nested = qa.get("nested_selection") or {}
    lines = [
        "## QA calibration (qa_calibration.json)",
        f"Fitted with `python -m training.calibrate_qa` on {qa['n_patients']} `validation-pats` patients "
        f"({qa['n_glands']} glands, {qa['n_poor']} poor: {qa['poor_definition']}); {qa['cv']}. Population "
        f"statistics: {qa['population']}. Test-time perturbation members: identity, left-right mirror, "
        f"{', '.join(qa['perturbations']) or 'none'}.",
        "",
        f"- Quality model features: {', '.join(qa['features_final'])}; cross-validated AUROC for a poor gland "
        f"{_fmt(qa['auroc'])} (95 % patient bootstrap {_fmt(qa['auroc_ci95'][0])}-{_fmt(qa['auroc_ci95'][1])}).",
    ]
    if nested:
        lines.append(
            f"- With the feature selection nested in the cross-validation (the unbiased estimate; the fixed features "
            f"were chosen on these patients): AUROC {_fmt(nested['auroc'])} "
            f"({_fmt(nested['auroc_ci95'][0])}-{_fmt(nested['auroc_ci95'][1])})."
        )
    lines += [
        f"- Operating point P(poor) >= {_fmt(qa['review_threshold'])}: sensitivity {_fmt(qa['model_sensitivity'], 2)},"
        f" specificity {_fmt(qa['model_specificity'], 2)}. The service's whole `review` verdict (model + rules): "
        f"sensitivity {_fmt(qa['verdict_sensitivity'], 2)}, specificity {_fmt(qa['verdict_specificity'], 2)}.",
        f"- Predicted Dice: mean absolute error {_fmt(qa['predicted_dice_mae'])} out of fold.",
        "- The goal (AUROC >= 0.85; >= 80 % of poor glands caught while flagging <= 25 % of good ones) is "
        + (
            "met."
            if qa["auroc"] >= 0.85 and qa["verdict_specificity"] >= 0.75
            else "NOT met: the signals available "
            "(perturbation disagreement, probability structure, plausibility against the population, input sanity) "
            "separate poor from good glands only weakly on this data; `review` is a broad net, not a triage."
        ),
        "",
    ]
    return lines
