"""Warm starts and ensemble compatibility: weights copied by layer name, and what ensemble members must share."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

from service.pipeline.plan import Plan
from training.export import _contract, export_bundle
from training.networks import build_unet, transfer_weights


def _tiny(architecture: str, filters: int = 2):
    return build_unet(architecture, base_filters=filters, depth=2, n_classes=3)


def test_residual_weights_warm_start_the_attention_variant_with_open_gates() -> None:
    source, target = _tiny("residual"), _tiny("attention")
    fresh = transfer_weights(source, target)
    assert fresh and all(name.endswith("_cbam") for name in fresh)
    for layer in source.layers:
        for a, b in zip(layer.get_weights(), target.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # fresh CBAM blocks scale their input by sigmoid(3)^2 whatever the input: the copied function is kept
    cbam = target.get_layer(fresh[0])
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 4, 2)).astype("float32")
    gate = 1.0 / (1.0 + np.exp(-3.0))
    np.testing.assert_allclose(np.asarray(cbam(x)), x * gate**2, rtol=1e-5, atol=1e-6)


def test_same_architecture_copies_everything() -> None:
    source, target = _tiny("attention"), _tiny("attention")
    assert transfer_weights(source, target) == []
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(source.predict(x, verbose=0), target.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    ("source", "target", "layer"),
    [
        (("attention", 2), ("residual", 2), "_cbam"),  # attention blocks have nowhere to go
        (("residual", 4), ("residual", 2), "enc0_c1"),  # another width
    ],
)
def test_a_source_not_contained_in_the_target_is_refused_naming_the_layer(source, target, layer) -> None:
    with pytest.raises(ValueError, match=layer):
        transfer_weights(_tiny(*source), _tiny(*target))


def test_ensemble_members_may_differ_in_serving_choices_but_not_in_preprocessing(tmp_path: Path) -> None:
    base = Plan.model_validate({})
    served = base.model_copy(update={"tta_lr_flip": not base.tta_lr_flip, "patch_size_zyx": (16, 32, 32)})
    served = Plan.model_validate({**served.model_dump(), "background_weight": 0.8})
    assert _contract(served) == _contract(base)
    for change in ({"spacing_mm_zyx": (3.0, 4.0, 4.0)}, {"hu_clip": (-200.0, 200.0)}, {"hu_scale": 200.0}):
        assert _contract(base.model_copy(update=change)) != _contract(base), change
    # export refuses a member with another preprocessing contract before it reads any weights
    first, other = tmp_path / "a", tmp_path / "b"
    for run, plan in ((first, base), (other, base.model_copy(update={"spacing_mm_zyx": (3.0, 4.0, 4.0)}))):
        run.mkdir()
        plan.save(run / "plan.json")
    with pytest.raises(ValueError, match="another preprocessing contract"):
        export_bundle([first, other], tmp_path / "store", "x", "0.0.1")
    assert not (tmp_path / "store" / "x").exists()


def test_the_model_card_says_when_the_architecture_changed_in_a_warm_start() -> None:
    from training.model_card import _fine_tune_lines

    prior = {"architecture": "residual", "epoch": 21, "samples_seen": 6300, "train_seconds": 100.0}
    tr = {"architecture": "attention", "train_seconds": 50.0}
    tr["init_from"] = {"bundle": "parotid-unet3d:1.1.0", "training": prior, "fresh_layers": 9}
    text = " ".join(_fine_tune_lines(tr))
    assert "Fine-tuned from parotid-unet3d:1.1.0" in text and "150 s of training in total" in text
    assert "residual network" in text and "9 attention blocks started fresh" in text
    same = {**tr, "architecture": "residual"}
    assert "copied by layer name" not in " ".join(_fine_tune_lines(same))
