"""The bundle's QA calibration (``qa_calibration.json``): population statistics, the fitted quality model and the
rule thresholds, and the one function that turns a gland's signals into named concerns.

Written by ``python -m training.calibrate_qa`` (fitted on validation patients, never on the holdout), covered by
the bundle's SHA256SUMS, read by the QA at serving time. A bundle without the file gets the built-in rule
thresholds, the built-in perturbation members and no quality model (the QA report says so in its notes).

``assess_gland`` is shared by the service and the calibration command, so that the sensitivity and specificity the
command reports are those of the verdict the service gives.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.pipeline.qa_perturb import DEFAULT_PERTURBATIONS

CALIBRATION_FILE = "qa_calibration.json"
CALIBRATION_FORMAT_VERSION: Literal[1] = 1
# plausibility measurements compared with the population (z-scores); log-scaled where the spread is multiplicative
POPULATION_KEYS = (
    "log_volume",
    "log_volume_head",
    "log_lr_ratio",
    "si_extent_mm",
    "centroid_x_rel",
    "centroid_y_rel",
    "mean_hu",
    "sd_hu",
)


class PopulationStat(BaseModel):
    mean: float
    sd: float = Field(gt=0)


class Population(BaseModel):
    source: str  # e.g. "train-pats reference contours (no inference), 320 glands"
    n_glands: int
    stats: dict[str, PopulationStat]


class QualityModel(BaseModel):
    """Logistic model of P(poor gland) and a linear model of the Dice, on standardised features."""

    features: list[str]
    center: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    dice_coef: list[float]
    dice_intercept: float
    review_threshold: float = Field(ge=0, le=1)  # P(poor) at or above this raises `review`
    poor_definition: str = "Dice < 0.75 or HD95 > 8 mm against the reference contour"


class Rules(BaseModel):
    """Thresholds of the named rule concerns (each raises `review` on its own)."""

    model_config = ConfigDict(extra="forbid")

    max_abs_z: float = 3.5  # plausibility z-scores (volume, volume vs head, L/R ratio, SI extent, centroid)
    min_mean_hu_z: float = -3.0  # a gland much darker than the population: fatty gland, a known failure
    min_member_dice: float = 0.7  # a perturbation member agreeing less than this with the consensus
    max_outside_mass_fraction: float = 0.25  # probability mass outside the kept component
    soft_tissue_peak_hu: tuple[float, float] = (-60.0, 120.0)  # calibrated scanners: ~20-60 HU
    max_darkest_p1_hu: float = -800.0  # the darkest 1 % of voxels (air around the head) must be air


class QACalibration(BaseModel):
    format_version: Literal[1] = CALIBRATION_FORMAT_VERSION
    created_utc: str = ""
    bundle: str = ""
    perturbations: list[str] = Field(default_factory=lambda: list(DEFAULT_PERTURBATIONS))
    population: Population | None = None
    quality_model: QualityModel | None = None
    rules: Rules = Field(default_factory=Rules)
    validation: dict = Field(default_factory=dict)  # the cross-validated numbers, for the card and the report


def load_calibration(bundle_dir: Path) -> QACalibration | None:
    """The bundle's calibration, or None if it has none (the bundle's checksums are verified by load_bundle)."""
    path = Path(bundle_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    return QACalibration.model_validate_json(path.read_text())


def save_calibration(cal: QACalibration, bundle_dir: Path) -> Path:
    path = Path(bundle_dir) / CALIBRATION_FILE
    path.write_text(json.dumps(cal.model_dump(mode="json"), indent=2) + "\n")
    return path


def _num(v: object) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else float("nan")


def population_values(s: Mapping[str, object]) -> dict[str, float]:
    """The plausibility measurements of ``POPULATION_KEYS`` from a gland's signals (NaN where missing)."""
    vol, head = _num(s.get("volume_cc")), _num(s.get("head_width_mm"))
    return {
        "log_volume": math.log(vol) if vol > 0 else float("nan"),
        "log_volume_head": math.log(vol) - 3.0 * math.log(head / 100.0) if vol > 0 and head > 0 else float("nan"),
        "log_lr_ratio": _num(s.get("log_lr_ratio")),
        "si_extent_mm": _num(s.get("si_extent_mm")),
        "centroid_x_rel": _num(s.get("centroid_x_rel")),
        "centroid_y_rel": _num(s.get("centroid_y_rel")),
        "mean_hu": _num(s.get("mean_hu")),
        "sd_hu": _num(s.get("sd_hu")),
    }


def derive_features(s: Mapping[str, object], population: Population | None) -> dict[str, float]:
    """Candidate model features from raw signals: disagreement and uncertainty (larger = worse) and, with a
    population, z-scores (``z_<key>``) and their absolute values (``abs_z_<key>``)."""
    f = {
        "member_disagreement": 1.0 - _num(s.get("member_dice_mean")),
        "member_worst": 1.0 - _num(s.get("member_dice_min")),
        "member_volume_cv": _num(s.get("member_volume_cv")),
        "band_entropy": _num(s.get("band_entropy")),
        "band_uncertainty": 1.0 - _num(s.get("band_margin")),
        "uncertain_fraction": _num(s.get("uncertain_fraction")),
        "outside_mass_fraction": _num(s.get("outside_mass_fraction")),
        "low_mean_probability": 1.0 - _num(s.get("mean_probability")),
    }
    if population is not None:
        for key, value in population_values(s).items():
            st = population.stats.get(key)
            z = (value - st.mean) / st.sd if st is not None else float("nan")
            f[f"z_{key}"] = z
            f[f"abs_z_{key}"] = abs(z)
    return f


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))


def quality_estimate(features: Mapping[str, float], model: QualityModel) -> tuple[float, float] | None:
    """``(P(poor), predicted Dice)``; None if a feature the model needs is not a number (e.g. empty gland)."""
    x = [features.get(name, float("nan")) for name in model.features]
    if not all(math.isfinite(v) for v in x):
        return None
    zs = [(v - c) / s for v, c, s in zip(x, model.center, model.scale, strict=True)]
    p = _sigmoid(model.intercept + sum(b * z for b, z in zip(model.coef, zs, strict=True)))
    dice = model.dice_intercept + sum(b * z for b, z in zip(model.dice_coef, zs, strict=True))
    return p, min(max(dice, 0.0), 1.0)


@dataclass(frozen=True)
class Concern:
    """A named reason to review a gland: the signal, its value and the threshold it crossed."""

    code: str
    signal: str
    value: float
    threshold: float
    message: str


_Z_LABELS = {
    "log_volume": "volume",
    "log_volume_head": "volume for the head size",
    "log_lr_ratio": "volume relative to the other gland",
    "si_extent_mm": "superior-inferior extent",
    "centroid_x_rel": "left-right position in the head",
    "centroid_y_rel": "anterior-posterior position in the head",
}


def assess_gland(
    name: str, signals: Mapping[str, object], cal: QACalibration
) -> tuple[dict[str, float], tuple[float, float] | None, list[Concern]]:
    """Features, quality estimate and the concerns raised for one non-empty gland."""
    rules = cal.rules
    feats = derive_features(signals, cal.population)
    concerns: list[Concern] = []
    est = quality_estimate(feats, cal.quality_model) if cal.quality_model else None
    if est is not None and cal.quality_model is not None and est[0] >= cal.quality_model.review_threshold:
        th = cal.quality_model.review_threshold
        concerns.append(
            Concern(
                "quality_model",
                "p_poor",
                est[0],
                th,
                f"{name}: estimated probability of a poor contour {est[0]:.2f} >= {th:.2f} "
                f"(predicted Dice {est[1]:.2f})",
            )
        )
    for key, label in _Z_LABELS.items():
        z = feats.get(f"z_{key}", float("nan"))
        if math.isfinite(z) and abs(z) > rules.max_abs_z:
            concerns.append(
                Concern(
                    "implausible_" + key.replace("log_", ""),
                    f"z_{key}",
                    z,
                    rules.max_abs_z,
                    f"{name}: {label} is {z:+.1f} SD from the training population (limit {rules.max_abs_z:g} SD)",
                )
            )
    z_hu = feats.get("z_mean_hu", float("nan"))
    if math.isfinite(z_hu) and z_hu < rules.min_mean_hu_z:
        concerns.append(
            Concern(
                "low_gland_hu",
                "z_mean_hu",
                z_hu,
                rules.min_mean_hu_z,
                f"{name}: mean HU {_num(signals.get('mean_hu')):.0f} is {z_hu:+.1f} SD from the training population "
                f"(limit {rules.min_mean_hu_z:g} SD): fatty gland, a known failure mode",
            )
        )
    dmin = _num(signals.get("member_dice_min"))
    if math.isfinite(dmin) and dmin < rules.min_member_dice:
        concerns.append(
            Concern(
                "perturbation_disagreement",
                "member_dice_min",
                dmin,
                rules.min_member_dice,
                f"{name}: a perturbed prediction agrees with the contour with Dice {dmin:.2f} only "
                f"(< {rules.min_member_dice:g})",
            )
        )
    om = _num(signals.get("outside_mass_fraction"))
    if math.isfinite(om) and om > rules.max_outside_mass_fraction:
        concerns.append(
            Concern(
                "probability_outside_contour",
                "outside_mass_fraction",
                om,
                rules.max_outside_mass_fraction,
                f"{name}: {100 * om:.0f}% of the gland's probability mass lies outside the contour "
                f"(> {100 * rules.max_outside_mass_fraction:.0f}%)",
            )
        )
    return feats, est, concerns


def assess_input(inp: Mapping[str, object], cal: QACalibration) -> list[Concern]:
    """Input-sanity concerns: blanked slices near the glands, the body cut by the field of view, an unusual
    soft-tissue HU peak (calibration)."""
    concerns: list[Concern] = []
    near = inp.get("blanked_slices_near_glands") or []
    if isinstance(near, Sequence) and near:
        frac = _num(inp.get("max_blanked_fraction"))
        concerns.append(
            Concern(
                "blanked_slices",
                "blanked_slices_near_glands",
                float(len(near)),
                0.0,
                f"{len(near)} axial slice(s) near the glands (z index {', '.join(str(k) for k in near[:6])}) are "
                f"blanked to air inside the body (up to {100 * frac:.0f}% of the cross-section)",
            )
        )
    cut = inp.get("body_cut_sides") or []
    if isinstance(cut, Sequence) and cut:
        concerns.append(
            Concern(
                "fov_cuts_body",
                "body_cut_sides",
                float(len(cut)),
                0.0,
                f"the field of view cuts the body on the {'/'.join(str(c) for c in cut)} side on the gland slices",
            )
        )
    dark = inp.get("darkest_p1_hu")
    if isinstance(dark, int | float) and dark > cal.rules.max_darkest_p1_hu:
        concerns.append(
            Concern(
                "unusual_hu_calibration",
                "darkest_p1_hu",
                float(dark),
                cal.rules.max_darkest_p1_hu,
                f"the darkest 1% of the CT is at {dark:.0f} HU, above {cal.rules.max_darkest_p1_hu:g} HU: no air "
                "in the image, or the rescale slope/intercept was not applied",
            )
        )
    peak = inp.get("soft_tissue_peak_hu")
    lo, hi = cal.rules.soft_tissue_peak_hu
    if isinstance(peak, int | float) and not lo <= peak <= hi:
        concerns.append(
            Concern(
                "unusual_hu_calibration",
                "soft_tissue_peak_hu",
                float(peak),
                lo if peak < lo else hi,
                f"the body's soft-tissue HU peak is at {peak:.0f} HU, outside [{lo:g}, {hi:g}] HU: check the "
                "rescale slope/intercept",
            )
        )
    return concerns
