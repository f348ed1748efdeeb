"""MODEL_CARD.md for a bundle, generated from its metrics.json and plan (never hand-edited numbers)."""

from __future__ import annotations

from pathlib import Path

from service.pipeline.plan import Plan
from training.model_card_data import data_brief, data_lines, limitation_lines, measured_lines, same_data, split_name


def _fmt(x: object, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def write_model_card(bundle: Path, name: str, version: str, metrics: dict, plan: Plan) -> None:
    tr = metrics.get("training", {})
    data = metrics.get("data", {})
    val = metrics.get("validation")
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
            else "0.7 x (1 - modified Dice) + 0.3 x focal (gamma 1, alpha 0.3/0.35/0.35) + 0.2 x per-gland relative "
            "volume error |sum p - sum g| / (sum g + 100 voxels)."
            if tr.get("loss") == "combined-volume"
            else f"{tr.get('loss')}."
        ),
        "",
        "## Data and splits",
        *data_lines(data),
        "",
        "## Preprocessing contract (plan.json)",
        f"Resampled to {plan.spacing_mm_zyx} mm (z, y, x), HU clipped to {plan.hu_clip} and scaled by "
        f"1/{plan.hu_scale}; training patches {plan.patch_size_zyx}; inference window "
        f"{plan.inference_window_zyx} on the body's bounding box; postprocessing keeps the largest connected "
        "component per gland and fills holes."
        + (
            f" Before the per-voxel argmax the background probability is multiplied by {plan.background_weight} "
            f"(chosen by a sweep on `{split_name(data.get('val_dir'))}`: the plain argmax under-segmented the glands)."
            if plan.background_weight != 1.0
            else ""
        ),
        "",
        "## Training",
        *_training_lines(metrics),
        "",
        "## Measured performance",
    ]
    lines += measured_lines(val, data)
    lines += [
        "",
        "## Known limitations",
        *limitation_lines(data),
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
            + " ".join(_fine_tune_lines(tr, metrics.get("data")))
        )
    return lines


def _total_seconds(tr: dict) -> float:
    """Training time of a run plus that of the runs it was fine-tuned from, recursively."""
    prior = (tr.get("init_from") or {}).get("training") or {}
    return float(tr.get("train_seconds") or 0) + (_total_seconds(prior) if prior else 0.0)


def _fine_tune_lines(tr: dict, data: dict | None = None) -> list[str]:
    """Where a run started from another model's weights, say so, with what is known of that model's training."""
    lines = []
    init = tr.get("init_from")
    if init:
        prior = init.get("training") or {}
        total = _total_seconds(tr)
        prior_data = init.get("data")
        where = "same data and splits" if same_data(prior_data, data) else data_brief(prior_data)
        lines.append(
            f"Fine-tuned from {init.get('bundle') or init.get('source')} (itself trained {prior.get('epoch')} epochs, "
            f"{prior.get('samples_seen')} patches, {_fmt(prior.get('train_seconds'), 0)} s, {where}); "
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
