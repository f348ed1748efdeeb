"""The box path (``postprocess_on_ct_grid``) gives exactly the whole-grid path's glands
(``postprocess(probabilities_to_ct_grid(...))``): synthetic fields on several grids, and the shipped model's
probabilities for sample patients on their own grid and on a clinical 1 mm x 2.5 mm grid. The QA's signals
computed in the boxes (``gland_probabilities(min_threshold=UNCERTAIN_LOW)``) equal their whole-grid values, and
the uncertainty map in its box (``map_to_ct_grid``) is the whole grid's above its floor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from service.pipeline.gland_boxes import (
    BoxedMap,
    back_scale,
    clean_glands,
    gland_box,
    gland_probabilities,
    map_to_ct_grid,
    postprocess_on_ct_grid,
    support_threshold,
    whole_grid,
)
from service.pipeline.infer import probabilities_to_ct_grid
from service.pipeline.plan import Plan
from service.pipeline.postprocess import GlandMask, postprocess
from service.pipeline.preprocess import linear_resample_box, resample_back, target_shape
from service.pipeline.qa_collect import collect_gland_signals
from service.pipeline.qa_signals import UNCERTAIN_LOW, uncertain_slices

LABELS = ("background", "Parotid_R", "Parotid_L")


def _assert_same(box: dict[str, GlandMask], whole: dict[str, GlandMask]) -> None:
    assert list(box) == list(whole)
    for name in whole:
        a, b = box[name], whole[name]
        assert np.array_equal(a.mask_zyx, b.mask_zyx), f"{name}: masks differ"
        assert a.components_before == b.components_before, name
        assert a.largest_component_fraction == b.largest_component_fraction, name
        assert a.mean_probability == pytest.approx(b.mean_probability, rel=1e-12, abs=1e-12), name


def _whole_grid(probs: np.ndarray, plan: Plan, spacing, shape) -> dict[str, GlandMask]:
    return postprocess(probabilities_to_ct_grid(probs, plan, spacing, shape), plan.labels, plan.background_weight)


def _blobs(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Softmax of smooth random logits with two glands, one touching the grid's upper edges, plus speckle."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    logits = np.zeros((*shape, 3), dtype=np.float32)
    centres = [(0.5, 0.4, 0.3), (0.9, 0.95, 0.97)]
    for c, (fz, fy, fx) in enumerate(centres, start=1):
        r2 = ((zz - fz * shape[0]) / 4) ** 2 + ((yy - fy * shape[1]) / 5) ** 2 + ((xx - fx * shape[2]) / 5) ** 2
        logits[..., c] = 4.0 - 2.0 * r2
    logits += ndimage.gaussian_filter(rng.normal(size=logits.shape).astype(np.float32), (1, 1, 1, 0)) * 6.0
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _synthetic_grids(ct_spacing, background_weight: float) -> tuple[Plan, tuple[int, int, int], tuple[int, ...]]:
    """A plan, a 24 x 30 x 32 model grid and the CT grid of ``ct_spacing`` over the same extent."""
    plan = Plan(labels=LABELS, background_weight=background_weight)
    model_shape = (24, 30, 32)
    extent = [(n - 1) * s for n, s in zip(model_shape, plan.spacing_mm_zyx, strict=True)]
    return plan, model_shape, tuple(int(e // s) + 1 for e, s in zip(extent, ct_spacing, strict=True))


@pytest.mark.parametrize("background_weight", [1.0, 0.6])
@pytest.mark.parametrize(
    "ct_spacing",
    [(2.5, 1.0, 1.0), (3.0, 1.17, 1.17), (2.0, 4.0, 4.0), (5.0, 5.5, 5.5)],
    ids=["clinical", "odd", "same-inplane", "coarser"],
)
def test_box_path_equals_whole_grid_on_synthetic_fields(ct_spacing, background_weight: float) -> None:
    plan, model_shape, ct_shape = _synthetic_grids(ct_spacing, background_weight)
    for seed in range(3):
        probs = _blobs(model_shape, seed)
        got = postprocess_on_ct_grid(probs, plan, ct_spacing, ct_shape)
        _assert_same(got, _whole_grid(probs, plan, ct_spacing, ct_shape))
        assert any(not g.is_empty for g in got.values())


def test_empty_gland_gives_an_empty_mask_and_no_box() -> None:
    plan = Plan(labels=LABELS)
    probs = np.zeros((16, 16, 16, 3), dtype=np.float32)
    probs[..., 0] = 0.7
    probs[..., 1] = 0.3  # never above the threshold 1/3
    probs[4:8, 4:8, 4:8] = (0.1, 0.8, 0.1)
    scale = back_scale(plan, (2.5, 2.0, 2.0))
    assert gland_box(probs[..., 2], scale, (16, 32, 32), support_threshold(1.0, 2)) is None
    got = postprocess_on_ct_grid(probs, plan, (2.5, 2.0, 2.0), (16, 32, 32))
    _assert_same(got, _whole_grid(probs, plan, (2.5, 2.0, 2.0), (16, 32, 32)))
    assert got["Parotid_L"].is_empty and got["Parotid_L"].mean_probability == 0.0
    assert not got["Parotid_R"].is_empty


def test_resampling_inside_a_box_is_the_whole_grid_there_and_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((20, 26, 30), dtype=np.float32)
    scale = [1.0, 0.27, 0.31]
    out_shape = target_shape(a.shape, [1.0, 1.0, 1.0], scale)
    whole = linear_resample_box(a, scale, out_shape)
    ref = ndimage.affine_transform(a, np.asarray(scale), output_shape=out_shape, order=1, mode="nearest", prefilter=0)
    assert np.allclose(whole, ref, atol=1e-5)
    for box in [(slice(3, 9), slice(10, 50), slice(0, 7)), (slice(15, 20), slice(80, out_shape[1]), slice(90, 97))]:
        assert np.array_equal(linear_resample_box(a, scale, out_shape, box), whole[box])
    ints = (a * 1000).astype(np.int16)
    assert np.array_equal(
        linear_resample_box(ints, scale, out_shape), linear_resample_box(ints.astype(np.float32), scale, out_shape)
    )


@pytest.mark.slow
@pytest.mark.parametrize("patient", ["pt_201", "pt_203"])
def test_box_path_equals_whole_grid_with_the_shipped_model(patient: str) -> None:
    """Real probabilities (the shipped bundle, TTA included) on sample patients: identical glands on the patient's
    own grid and on a clinical 512-pixel-like grid (1 mm, 2.5 mm slices) over the same extent."""
    from service.model_bundle import load_bundle, resolve_bundle
    from service.pipeline.infer import predict_probabilities
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.volume import Volume
    from tests.conftest import load_sample_canonical

    hu, spacing, _, _ = load_sample_canonical(patient)
    loaded = load_bundle(resolve_bundle(None))
    plan = loaded.plan
    probs = predict_probabilities(loaded.predict, preprocess_volume(Volume(hu, spacing, (0.0, 0.0, 0.0)), plan), plan)
    extent = [(n - 1) * s for n, s in zip(hu.shape, spacing, strict=True)]
    for ct_spacing in (spacing, (2.5, 1.0, 1.0)):
        ct_shape = tuple(int(e // s) + 1 for e, s in zip(extent, ct_spacing, strict=True))
        got = postprocess_on_ct_grid(probs, plan, ct_spacing, ct_shape)
        _assert_same(got, _whole_grid(probs, plan, ct_spacing, ct_shape))
        assert all(not g.is_empty for g in got.values()), f"{patient}: a gland is empty"


def _assert_same_qa(probs: np.ndarray, unc_model: np.ndarray, plan: Plan, spacing, shape, floor: float) -> None:
    """Signals and uncertain slices from the boxes equal those from the whole grid; the boxed map is the whole
    grid's map above ``floor`` and zero (instead of <= floor) elsewhere."""
    hu = np.random.default_rng(0).normal(30.0, 20.0, size=shape).astype(np.float32)
    origin = (0.0, 0.0, 0.0)
    boxed = gland_probabilities(probs, plan, spacing, shape, min_threshold=UNCERTAIN_LOW)
    glands = clean_glands(boxed, plan.background_weight, shape)
    whole_probs = probabilities_to_ct_grid(probs, plan, spacing, shape)
    _assert_same(glands, postprocess(whole_probs, plan.labels, plan.background_weight))
    pairs = (("Parotid_L", "Parotid_R"),)
    got = collect_gland_signals(hu, spacing, origin, glands, boxed, None, plan.background_weight, pairs)
    want = collect_gland_signals(
        hu, spacing, origin, glands, whole_grid(whole_probs, plan.labels), None, plan.background_weight, pairs
    )
    for name in want:
        for key, value in want[name].items():
            assert got[name][key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (name, key)
    unc_whole = resample_back(unc_model, plan.spacing_mm_zyx, spacing, shape)
    unc = map_to_ct_grid(unc_model, plan, spacing, shape, floor)
    full = unc.full()
    inside = full > 0
    assert np.array_equal(full[inside], unc_whole[inside]) and np.all(unc_whole[~inside] <= floor * 1.001)
    assert np.array_equal(unc.at_least(0.5), unc_whole >= 0.5)
    for name, g in glands.items():
        a = uncertain_slices(unc, g.mask_zyx)
        b = uncertain_slices(BoxedMap.whole(unc_whole), g.mask_zyx)
        assert [k for k, _ in a] == [k for k, _ in b], name
        assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-3, abs=0.1), name


@pytest.mark.parametrize("background_weight", [1.0, 0.6])
@pytest.mark.parametrize("ct_spacing", [(2.5, 1.0, 1.0), (5.0, 5.5, 5.5)], ids=["clinical", "coarser"])
def test_qa_signals_in_boxes_equal_the_whole_grid_on_synthetic_fields(ct_spacing, background_weight: float) -> None:
    plan, model_shape, ct_shape = _synthetic_grids(ct_spacing, background_weight)
    for seed in range(2):
        probs = _blobs(model_shape, seed)
        unc = (1.0 - probs.max(axis=-1)).astype(np.float32)  # high at the gland borders, near 0 far from them
        _assert_same_qa(probs, unc, plan, ct_spacing, ct_shape, floor=0.01)


def test_boxed_map_crop_full_and_empty() -> None:
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    m = BoxedMap((8, 9, 10), (slice(2, 6), slice(3, 8), slice(4, 10)), arr)
    full = m.full()
    assert full.shape == (8, 9, 10) and np.array_equal(full[2:6, 3:8, 4:10], arr) and full.sum() == arr.sum()
    region = (slice(0, 3), slice(0, 9), slice(5, 7))
    assert np.array_equal(m.crop(region), full[region])
    assert not m.crop((slice(6, 8), slice(0, 9), slice(0, 10))).any()
    empty = BoxedMap((3, 3, 3), None, None)
    assert not empty.full().any() and not empty.at_least(0.1).any()
    assert np.array_equal(BoxedMap.whole(full).crop(region), full[region])


@pytest.mark.slow
def test_qa_signals_in_boxes_equal_the_whole_grid_with_the_shipped_model() -> None:
    """The shipped bundle's probabilities and QA uncertainty (its perturbation members) on pt_201, on a clinical
    1 mm x 2.5 mm grid over the patient's extent."""
    from service.model_bundle import load_bundle, resolve_bundle
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.qa_perturb import UNCERTAINTY_FLOOR, predict_with_members
    from service.pipeline.volume import Volume
    from tests.conftest import load_sample_canonical

    hu, spacing, _, _ = load_sample_canonical("pt_201")
    loaded = load_bundle(resolve_bundle(None))
    plan = loaded.plan
    mp = predict_with_members(loaded.predict, preprocess_volume(Volume(hu, spacing, (0.0, 0.0, 0.0)), plan), plan)
    extent = [(n - 1) * s for n, s in zip(hu.shape, spacing, strict=True)]
    ct_spacing = (2.5, 1.0, 1.0)
    ct_shape = tuple(int(e // s) + 1 for e, s in zip(extent, ct_spacing, strict=True))
    _assert_same_qa(mp.probs_zyxc, mp.uncertainty_zyx, plan, ct_spacing, ct_shape, UNCERTAINTY_FLOOR)
