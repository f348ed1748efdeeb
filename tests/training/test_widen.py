"""Function-preserving widening (Net2WiderNet): the twice-as-wide network computes the trained network's function."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

from training.networks import build_unet
from training.widen import widen_weights


def _net(filters: int, depth: int = 2, architecture: str = "residual"):
    return build_unet(architecture, base_filters=filters, depth=depth, n_classes=3, max_filters=8 * filters)


def _randomise(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:  # non-trivial weights everywhere, layer-norm gains and biases included
            layer.set_weights([rng.normal(0.5 if w.ndim == 1 else 0.0, 0.3, w.shape).astype("float32") for w in ws])


@pytest.mark.parametrize("depth", [2, 3])
def test_the_widened_network_computes_the_same_probabilities(depth: int) -> None:
    narrow, wide = _net(2, depth), _net(4, depth)
    _randomise(narrow, 1)
    _randomise(wide, 2)
    x = np.random.default_rng(3).normal(size=(2, 16, 16, 16, 1)).astype("float32")
    before = wide.predict(x, verbose=0)
    assert widen_weights(narrow, wide) == sum(1 for layer in narrow.layers if layer.get_weights())
    expected = narrow.predict(x, verbose=0)
    assert np.abs(before - expected).max() > 0.05  # the check can fail: another network gives other outputs
    np.testing.assert_allclose(
        wide.predict(x, verbose=0), expected, rtol=1e-3, atol=3e-4
    )  # float32 sums in another order


def test_noise_breaks_the_symmetry_of_the_copies_but_keeps_the_function_close() -> None:
    narrow, wide = _net(2), _net(4)
    _randomise(narrow, 4)
    _randomise(wide, 6)
    x = np.random.default_rng(5).normal(size=(1, 16, 16, 16, 1)).astype("float32")
    unrelated = np.abs(wide.predict(x, verbose=0) - narrow.predict(x, verbose=0)).max()
    widen_weights(narrow, wide, noise=0.01)
    kernel = wide.get_layer("enc0_c2").get_weights()[0]
    assert not np.allclose(kernel[..., :2], kernel[..., 2:])  # the two copies of each channel now differ
    diff = np.abs(wide.predict(x, verbose=0) - narrow.predict(x, verbose=0)).max()
    assert 0 < diff < unrelated / 2


def test_a_target_that_is_not_twice_as_wide_is_refused_naming_the_layer() -> None:
    with pytest.raises(ValueError, match="enc0_c1"):
        widen_weights(_net(2), _net(6))
