"""The preprocessing plan: the one contract shared by training and serving.

Training writes it into the model bundle (``plan.json``); serving reads it back. Every value that shapes the
network's input lives here, never as a constant in serving or training code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PLAN_FORMAT_VERSION = 1


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = PLAN_FORMAT_VERSION
    # canonical array order: index increases along +z (superior), +y (posterior), +x (patient's left)
    axis_order: Literal["zyx_lps"] = "zyx_lps"
    spacing_mm_zyx: tuple[float, float, float] = (2.5, 4.0, 4.0)
    hu_clip: tuple[float, float] = (-250.0, 250.0)
    # normalised = (clip(hu) - hu_center) / hu_scale
    hu_center: float = 0.0
    hu_scale: float = 250.0
    # label index -> ROI name; index 0 is background. Softmax channel order.
    labels: tuple[str, ...] = ("background", "Parotid_R", "Parotid_L")
    # training patch size
    patch_size_zyx: tuple[int, int, int] = (32, 96, 96)
    # sliding-window inference: the largest window passed to the network at once, and the window overlap
    inference_window_zyx: tuple[int, int, int] = (128, 160, 160)
    overlap: float = Field(default=0.5, ge=0.0, lt=1.0)
    # test-time augmentation: average with the prediction of the left-right mirrored volume (gland labels swapped)
    tta_lr_flip: bool = False
    # postprocessing: the background probability is multiplied by this before the per-voxel argmax; below 1 it
    # grows the glands (set at export from a sweep on validation-pats, to remove a systematic under-segmentation)
    background_weight: float = Field(default=1.0, gt=0.0, le=1.0)
    # every patch dimension must be divisible by this (2 ** number of poolings)
    size_divisor: int = 16
    min_slices: int = Field(default=16, ge=1)

    @field_validator("spacing_mm_zyx")
    @classmethod
    def _positive_spacing(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("spacing must be positive")
        return v

    @field_validator("patch_size_zyx", "inference_window_zyx")
    @classmethod
    def _positive_patch(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(s <= 0 for s in v):
            raise ValueError("patch size must be positive")
        return v

    def label_index(self, roi_name: str) -> int:
        return self.labels.index(roi_name)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Plan:
        return cls.model_validate_json(path.read_text())
