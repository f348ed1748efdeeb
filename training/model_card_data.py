"""The model card's data-dependent sections, generated from the bundle's recorded data report and evaluation.

Nothing here is template text about a particular data set: the source (OpenKBP, clinic DICOM, NIfTI), the folders,
the patient counts and the skipped patients all come from ``metrics.json`` (``data``: written by ``training.train``
into ``data_report.json`` and copied by ``training.export``; ``validation``: written by
``training.evaluate --update-bundle``).
"""

from __future__ import annotations

from pathlib import Path

SOURCES = {
    "openkbp": "OpenKBP",
    "dicom": "clinic DICOM (CT series + RTSTRUCT)",
    "nifti": "NIfTI image/mask",
}


def _fmt(x: object, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def split_name(folder: object) -> str:
    """The last component of a recorded folder (``.../validation-pats`` -> ``validation-pats``)."""
    return Path(str(folder)).name if folder else "?"


def _absent_files(skipped: dict) -> int:
    return sum(1 for why in skipped.values() if "ct.csv: missing" in str(why))


def data_lines(data: dict) -> list[str]:
    """'Data and splits': what the network was trained and selected on, with counts, as recorded."""
    fmt = data.get("format")
    if not data or fmt not in SOURCES:
        return ["The training data were not recorded with this bundle (no `data` in metrics.json)."]
    train, val = data.get("train_dir"), data.get("val_dir")
    excluded = data.get("train_patients_excluded_missing_gland", [])
    t_skip, v_skip = data.get("train_skipped", {}), data.get("val_skipped", {})
    lines: list[str] = []
    if fmt == "openkbp":
        lines += [
            "OpenKBP grand-challenge dataset (Babier et al., Med. Phys. 48 (2021) 5549-5561;",
            "github.com/ababier/open-kbp), head-and-neck cancer patients treated with IMRT, CT stored at about",
            "3.8-5.4 mm in-plane and 1.5-3.3 mm between slices, clinical contours from the source clinics.",
        ]
    elif fmt == "dicom":
        lines += [
            "Clinic data: one DICOM CT series and one RTSTRUCT per patient folder, the parotid ROIs matched by name",
            "through the ROI-name synonym list; contours from the clinic's own contouring convention.",
        ]
    else:
        lines += ["NIfTI image/mask pairs, one folder per case (CT in HU, binary parotid masks or a label map)."]
    lines += [
        f"- Training: `{split_name(train)}` ({SOURCES[fmt]}, folder `{train}`), {data.get('train_patients_used')} "
        f"patients used; {len(excluded)} left out because a parotid was not contoured (a missing gland must not be "
        f"learnt as background); {len(t_skip)} unreadable or unusable (reasons in metrics.json `data.train_skipped`).",
        f"- Model selection (best validation Dice checkpoint) and early stopping: `{split_name(val)}` (folder "
        f"`{val}`), {data.get('val_patients')} patients with a contoured parotid ({data.get('val_patients_per_epoch')} "
        f"per epoch); {len(v_skip)} unreadable or unusable.",
    ]
    if fmt == "openkbp":
        absent = _absent_files(t_skip) + _absent_files(v_skip)
        if absent:
            lines.append(f"- In the copy of OpenKBP used, {absent} of these patients had no `ct.csv` (file absent).")
        if "test-pats" not in (split_name(train), split_name(val)):
            lines.append("- `test-pats` is an independent holdout: it was never read by training, tuning or selection.")
    else:
        lines.append(
            "- No independent holdout was set aside by training: measure the bundle on patients it has not seen "
            "with `parotid-seg evaluate` (docs/commissioning.md)."
        )
    return lines


def same_folder(a: object, b: object) -> bool:
    """Whether two recorded folder paths name the same folder (relative paths: from the working directory)."""
    if not a or not b:
        return False
    return str(a) == str(b) or Path(str(a)).resolve() == Path(str(b)).resolve()


def same_data(a: dict | None, b: dict | None) -> bool:
    """Whether two recorded data reports name the same format and training and validation folders."""
    if not a or not b or a.get("format") != b.get("format"):
        return False
    return same_folder(a.get("train_dir"), b.get("train_dir")) and same_folder(a.get("val_dir"), b.get("val_dir"))


def data_brief(data: dict | None) -> str:
    """One phrase for another model's training data (a fine-tuning's starting point)."""
    if not data or data.get("format") not in SOURCES:
        return "training data not recorded"
    return (
        f"{SOURCES[data['format']]} `{split_name(data.get('train_dir'))}`, {data.get('train_patients_used')} "
        f"patients, selected on `{split_name(data.get('val_dir'))}`"
    )


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


def measured_lines(val: dict | None, data: dict) -> list[str]:
    """'Measured performance': the evaluation stored in the bundle, naming the data it was measured on."""
    if not val:
        return ["Not yet evaluated (run `make evaluate-update`, which evaluates on the selection split)."]
    fmt = val.get("format", "openkbp")
    folder = val.get("data_dir")
    selection = bool(data) and fmt == data.get("format") and same_folder(folder, data.get("val_dir"))
    lines = [
        f"Measured with `make evaluate` on {val['n_patients']} {SOURCES.get(fmt, fmt)} `{split_name(folder)}` "
        f"patients (folder `{folder}`), on each patient's native grid, after postprocessing (the same code path as "
        "the service).",
        "",
        _validation_table(val),
        "",
    ]
    from training.evaluate_report import card_lines

    lines += card_lines(val)
    if selection:
        lines.append(
            "This split was also used for checkpoint selection, so these numbers are optimistic by the selection "
            "effect."
        )
    if fmt == "openkbp":
        lines.append("No test-set numbers are reported: test-pats is kept as a holdout.")
    return lines


def limitation_lines(data: dict) -> list[str]:
    fmt = data.get("format") if data else None
    lines = []
    if fmt == "openkbp":
        lines += [
            "- Trained and evaluated at OpenKBP's coarse resolution (~4 mm in-plane); boundary accuracy on 1 mm",
            "  clinical CT is bounded by that. The published study (median Dice 0.88 L / 0.87 R) used 1 mm data.",
            "- Contouring conventions of the OpenKBP source clinics (e.g. inclusion of the deep lobe, vessels).",
        ]
    elif fmt in SOURCES:
        lines += [
            f"- Trained on {data.get('train_patients_used')} patients of one data source ({SOURCES[fmt]}): it follows "
            "that source's scanners, protocols and contouring convention; commission it on each site's own patients.",
        ]
    lines += [
        "- Head-and-neck CT only, adult anatomy; unusual anatomy (resected glands, large tumours invading the",
        "  gland, metal artefacts) is not represented and is flagged for review only through the QA checks.",
        "- Fatty (low-density, about -100 HU) glands are segmented poorly or not at all where the training data hold",
        "  few of them (QA flags a gland under `min_volume_cc` for review, an empty one as `fail`).",
        "- The QA checks (volume, laterality, components, probability) catch gross failures, not subtle ones.",
    ]
    return lines
