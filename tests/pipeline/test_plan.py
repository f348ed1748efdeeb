"""The plan (preprocessing and postprocessing contract): defaults, limits, and bundles written before a field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.pipeline.plan import Plan

SHIPPED = Path(__file__).resolve().parents[2] / "model_store" / "parotid-unet3d" / "1.0.0" / "plan.json"


def test_a_plan_written_before_background_weight_loads_with_plain_argmax(tmp_path: Path) -> None:
    old = json.loads(SHIPPED.read_text())
    old.pop("background_weight", None)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(old))
    assert Plan.load(path).background_weight == 1.0


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.2])
def test_background_weight_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match="background_weight"):
        Plan.model_validate({"background_weight": bad})


def test_round_trip(tmp_path: Path) -> None:
    plan = Plan.model_validate({"background_weight": 0.7, "tta_lr_flip": True})
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
