"""The QA report's schema (versioned pydantic models, written as JSON next to every RTSTRUCT).

``service.pipeline.qa`` fills it in; the checks and how ``status`` is decided are described there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal["1.1"] = "1.1"  # 1.1: signals, quality estimate, input checks, calibration
Status = Literal["ok", "review", "fail"]
XYZ = tuple[float, float, float]


class QAThresholds(BaseModel):
    """Operator-tunable limits for the plausibility flags."""

    model_config = ConfigDict(extra="forbid")

    min_volume_cc: float = Field(default=5.0, ge=0)
    max_volume_cc: float = Field(default=80.0, gt=0)
    min_lr_volume_ratio: float = Field(default=0.5, gt=0)
    max_lr_volume_ratio: float = Field(default=2.0, gt=0)
    max_components_before: int = Field(default=3, ge=1)
    min_largest_component_fraction: float = Field(default=0.8, ge=0, le=1)
    min_mean_probability: float = Field(default=0.6, ge=0, le=1)
    body_threshold_hu: float = -500.0
    # with a reference: tolerances that raise `review` (the calibration's definition of a poor gland, and volume)
    reference_min_dice: float = Field(default=0.75, ge=0, le=1)
    reference_max_hd95_mm: float = Field(default=8.0, gt=0)
    reference_max_volume_error_pct: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> QAThresholds:
        if self.min_volume_cc >= self.max_volume_cc:
            raise ValueError("min_volume_cc must be < max_volume_cc")
        if self.min_lr_volume_ratio >= self.max_lr_volume_ratio:
            raise ValueError("min_lr_volume_ratio must be < max_lr_volume_ratio")
        return self


class QAFlag(BaseModel):
    severity: Literal["review", "fail"]
    code: str  # stable, e.g. "empty_gland", "laterality_swapped", "volume_out_of_range"
    gland: str | None = None
    message: str
    signal: str | None = None  # the measured signal behind the flag, when there is one
    value: float | None = None
    threshold: float | None = None


class InputSummary(BaseModel):
    series_instance_uid: str | None
    num_slices: int
    grid_shape_zyx: tuple[int, int, int]
    spacing_mm_zyx: XYZ
    origin_lps_mm: XYZ  # centre of voxel [0, 0, 0]: the most right, anterior, inferior corner of the grid
    patient_position: str | None  # (0018,5100) Patient Position, e.g. HFS


class ModelInfo(BaseModel):
    name: str
    version: str


class ReferenceComparison(BaseModel):
    """The gland against a reference mask on the CT grid (NaN metrics are written as null)."""

    reference_roi: str
    reference_volume_cc: float
    dice: float | None
    iou: float | None
    hd95_mm: float | None
    mean_surface_distance_mm: float | None
    volume_difference_cc: float  # predicted - reference
    volume_difference_pct: float | None  # 100 * (predicted - reference) / reference; null if reference empty


class GlandQuality(BaseModel):
    """The bundle's calibrated quality estimate (``qa_calibration.json``) for one gland."""

    p_poor: float  # estimated probability that Dice < 0.75 or HD95 > 8 mm against a clinical contour
    predicted_dice: float
    review_threshold: float  # p_poor at or above this raises `review`
    features: dict[str, float]  # the model's inputs


class UncertainSlice(BaseModel):
    z_index: int  # canonical index (0 = most inferior slice)
    z_mm: float  # LPS z of the slice
    score: float  # summed uncertainty around the gland on that slice


class GlandQA(BaseModel):
    name: str  # the model's label (the key of ``QAReport.glands``)
    roi_name: str | None = None  # (3006,0026) ROI Name in the RTSTRUCT and the preview (the structure template's)
    display_color_rgb: tuple[int, int, int] | None = None  # (3006,002A) ROI Display Color, also the preview's
    empty: bool
    voxel_count: int
    volume_cc: float
    centroid_lps_mm: XYZ | None
    extent_min_lps_mm: XYZ | None  # bounding box of the voxel centres, LPS
    extent_max_lps_mm: XYZ | None
    components_before_cleanup: int
    largest_component_fraction: float
    mean_probability: float  # 0.0 if empty
    touches_fov_edge: bool
    fov_edges_touched: list[str]  # of right/left/anterior/posterior/inferior/superior
    flags: list[str]  # codes of the QAFlags raised for this gland
    reference: ReferenceComparison | None = None
    quality: GlandQuality | None = None  # null: the bundle has no calibration, or the gland is empty
    signals: dict[str, float | None] = Field(default_factory=dict)  # every QA signal (qa_signals), null = n/a
    uncertain_slices: list[UncertainSlice] = Field(default_factory=list)  # where to look first, largest first


class LateralityCheck(BaseModel):
    left: str
    right: str
    left_minus_right_x_mm: float | None  # > 0 when the left gland is on the patient's left of the right one
    body_midline_x_mm: float | None
    left_on_left_side: bool | None
    right_on_right_side: bool | None
    passed: bool | None  # None: not evaluable (a gland empty/missing)


class PairQA(BaseModel):
    left: str
    right: str
    lr_volume_ratio: float | None  # volume(left) / volume(right); null if either is empty
    laterality: LateralityCheck


class InputChecks(BaseModel):
    blanked_slices: list[int]  # canonical z indices blanked to air inside the body
    blanked_slices_near_glands: list[int]
    soft_tissue_peak_hu: float | None
    body_cut_sides: list[str]  # sides where the field of view cuts the body on the gland slices


class CalibrationSummary(BaseModel):
    """How well the bundle's `review` verdict predicted poor glands in cross-validation (from the bundle)."""

    bundle: str
    n_glands: int
    auroc: float
    auroc_ci95: tuple[float, float]
    verdict_sensitivity: float
    verdict_specificity: float
    poor_definition: str


STATUS_MEANING = (
    "ok: no automatic concern found (not a statement that the contour is correct); review: at least one named "
    "concern, each with its value and threshold; fail: gross failure (empty or missing gland, laterality)"
)


class QAReport(BaseModel):
    schema_version: Literal["1.1"] = SCHEMA_VERSION
    generated_utc: str
    intended_use: str = "Research use only. Automatic contours: every contour must be reviewed before clinical use."
    input: InputSummary
    model: ModelInfo
    glands: dict[str, GlandQA]
    pairs: list[PairQA]
    status: Status
    reasons: list[QAFlag]
    notes: list[str] = Field(default_factory=list)
    stage_times_s: dict[str, float]
    thresholds: QAThresholds
    status_meaning: str = STATUS_MEANING
    input_checks: InputChecks | None = None
    calibration: CalibrationSummary | None = None

    def summary_line(self) -> str:
        """One line for a preview title or a log: model, version, status and the flag codes."""
        codes = sorted({f"{f.code}({f.gland})" if f.gland else f.code for f in self.reasons})
        tail = f": {', '.join(codes)}" if codes else ""
        return f"{self.model.name} {self.model.version} | QA {self.status.upper()}{tail}"
