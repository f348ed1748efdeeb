"""QA signals, each on constructed cases: the pure functions, then the verdict of ``build_qa`` on a phantom whose
segmentation is over-segmented, under-segmented, shifted, fatty or has a blanked slice (each flag fires), and a
clean case that stays ``ok``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.pipeline.gland_boxes import BoxedMap, whole_grid
from service.pipeline.postprocess import postprocess
from service.pipeline.qa import build_qa
from service.pipeline.qa_calibration import (
    POPULATION_KEYS,
    Population,
    PopulationStat,
    QACalibration,
    QualityModel,
    assess_gland,
    assess_input,
    population_values,
    quality_estimate,
)
from service.pipeline.qa_collect import collect_gland_signals, collect_input_signals
from service.pipeline.qa_perturb import _shift, _zoom_about_centre, parse_perturbation
from service.pipeline.qa_signals import (
    blanked_slices,
    body_cut_by_fov,
    boundary_band,
    member_disagreement,
    member_disagreement_map,
    probability_structure,
    soft_tissue_peak_hu,
    uncertain_slices,
)
from service.pipeline.volume import Volume
from tests.bundle_factory import oracle_phantom

SPACING = (2.5, 4.0, 4.0)
ORIGIN = (-126.0, -130.0, 40.0)
LABELS = ("background", "Parotid_R", "Parotid_L")
# population spread used with the phantom: ~10 % in volume, 5 mm in extent, 3 % of the head in position
SPREAD = {
    "log_volume": 0.1,
    "log_volume_head": 0.1,
    "log_lr_ratio": 0.1,
    "si_extent_mm": 5.0,
    "centroid_x_rel": 0.03,
    "centroid_y_rel": 0.03,
    "mean_hu": 60.0,  # the two phantom glands are at 100 and 200 HU
    "sd_hu": 10.0,
}


def _probs(masks: dict[str, np.ndarray]) -> np.ndarray:
    shape = masks["Parotid_L"].shape
    p = np.zeros((*shape, 3), dtype=np.float32)
    p[..., 1] = 0.01 + 0.97 * masks["Parotid_R"]
    p[..., 2] = 0.01 + 0.97 * masks["Parotid_L"]
    p[..., 0] = 1.0 - p[..., 1] - p[..., 2]
    return p


def _signals(hu: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    probs = _probs(masks)
    glands = postprocess(probs, LABELS)
    pairs = (("Parotid_L", "Parotid_R"),)
    return collect_gland_signals(hu, SPACING, ORIGIN, glands, whole_grid(probs, LABELS), None, 1.0, pairs)


@pytest.fixture(scope="module")
def phantom_calibration() -> QACalibration:
    """A calibration whose population is the clean phantom itself (mean = its value, SD = ``SPREAD``)."""
    hu, masks = oracle_phantom()
    sig = _signals(hu, masks)
    stats = {}
    for key in POPULATION_KEYS:
        mean = float(np.mean([population_values(sig[g])[key] for g in sig]))
        stats[key] = PopulationStat(mean=mean, sd=SPREAD[key])
    return QACalibration(population=Population(source="phantom", n_glands=2, stats=stats))


def _qa(hu: np.ndarray, masks: dict[str, np.ndarray], cal: QACalibration | None):
    probs = _probs(masks)
    ct = Volume(hu, SPACING, ORIGIN)
    glands = postprocess(probs, LABELS)
    unc = np.abs(probs[..., 2] - 0.5).astype(np.float32)
    return build_qa(
        ct,
        glands,
        model_name="m",
        model_version="1",
        stage_times_s={},
        gland_probs=whole_grid(probs, LABELS),
        uncertainty=BoxedMap.whole(unc),
        calibration=cal,
    )


def _codes(report, gland: str | None = None) -> set[str]:
    return {f.code for f in report.reasons if gland is None or f.gland == gland}


# --- the verdict on constructed segmentations ------------------------------------------------------------------


def test_clean_case_stays_ok(phantom_calibration: QACalibration) -> None:
    hu, masks = oracle_phantom()
    report = _qa(hu, masks, phantom_calibration)
    assert report.status == "ok", report.reasons
    assert report.schema_version == "1.1" and report.input_checks is not None
    g = report.glands["Parotid_L"]
    assert g.signals["volume_cc"] == pytest.approx(40.0) and g.signals["mean_hu"] == pytest.approx(200.0)
    assert g.uncertain_slices, "the slices where uncertainty concentrates are listed"


def test_over_segmented_gland_is_flagged(phantom_calibration: QACalibration) -> None:
    hu, masks = oracle_phantom()
    from scipy import ndimage

    grown = ndimage.binary_dilation(masks["Parotid_L"], structure=np.ones((1, 3, 3), bool), iterations=3)
    report = _qa(hu, {**masks, "Parotid_L": grown}, phantom_calibration)
    assert report.status == "review"
    assert "implausible_volume" in _codes(report, "Parotid_L")
    flag = next(f for f in report.reasons if f.code == "implausible_volume")
    assert flag.value is not None and flag.value > flag.threshold == 3.5


def test_under_segmented_gland_is_flagged(phantom_calibration: QACalibration) -> None:
    hu, masks = oracle_phantom()
    small = np.zeros_like(masks["Parotid_L"])
    kk, jj, ii = np.nonzero(masks["Parotid_L"])
    small[kk.min() + 2 : kk.max() - 1, jj.min() + 3 : jj.max() - 2, ii.min() + 3 : ii.max() - 2] = True
    report = _qa(hu, {**masks, "Parotid_L": small}, phantom_calibration)
    assert report.status == "review"
    flag = next(f for f in report.reasons if f.code == "implausible_volume" and f.gland == "Parotid_L")
    assert flag.value < -3.5


def test_shifted_gland_is_flagged(phantom_calibration: QACalibration) -> None:
    hu, masks = oracle_phantom()
    moved = np.roll(masks["Parotid_L"], -8, axis=2)  # 32 mm towards the midline, still on the left
    report = _qa(hu, {**masks, "Parotid_L": moved}, phantom_calibration)
    assert report.status == "review"
    assert "implausible_centroid_x_rel" in _codes(report, "Parotid_L")


def test_fatty_gland_is_flagged(phantom_calibration: QACalibration) -> None:
    hu, masks = oracle_phantom()
    fatty = hu.copy()
    fatty[masks["Parotid_L"]] = -100.0
    report = _qa(fatty, masks, phantom_calibration)
    assert report.status == "review"
    flag = next(f for f in report.reasons if f.code == "low_gland_hu")
    assert flag.gland == "Parotid_L" and flag.value < flag.threshold
    assert "fatty" in flag.message


def test_blanked_slice_is_flagged(phantom_calibration: QACalibration) -> None:
    hu, masks = oracle_phantom()
    k = int(np.flatnonzero(masks["Parotid_L"].any(axis=(1, 2)))[3])
    blanked = hu.copy()
    body = hu[k] > -500
    blanked[k][body] = -1000.0
    blanked[k][:, [8, 55]] = 0.0  # the skin outline survives: the blanking is inside the body
    blanked[k][[8, 55], 8:56] = 0.0
    report = _qa(blanked, masks, phantom_calibration)
    assert report.status == "review"
    assert "blanked_slices" in _codes(report)
    assert report.input_checks is not None and k in report.input_checks.blanked_slices_near_glands


def test_without_calibration_rules_still_apply_and_a_note_says_so() -> None:
    hu, masks = oracle_phantom()
    fatty = hu.copy()
    k = int(np.flatnonzero(masks["Parotid_L"].any(axis=(1, 2)))[3])
    fatty[k][hu[k] > -500] = -1000.0
    fatty[k][:, [8, 55]] = 0.0
    fatty[k][[8, 55], 8:56] = 0.0
    report = _qa(fatty, masks, None)
    assert "blanked_slices" in _codes(report)
    assert any("no qa_calibration.json" in n for n in report.notes)
    assert all(g.quality is None for g in report.glands.values())


def test_quality_model_raises_review_with_value_and_threshold(phantom_calibration: QACalibration) -> None:
    model = QualityModel(
        features=["abs_z_log_volume"],
        center=[0.0],
        scale=[1.0],
        coef=[2.0],
        intercept=-4.0,
        dice_coef=[-0.05],
        dice_intercept=0.85,
        review_threshold=0.5,
    )
    cal = phantom_calibration.model_copy(update={"quality_model": model})
    hu, masks = oracle_phantom()
    clean = _qa(hu, masks, cal)
    assert clean.status == "ok" and clean.glands["Parotid_L"].quality is not None
    assert clean.glands["Parotid_L"].quality.p_poor < 0.5
    from scipy import ndimage

    grown = ndimage.binary_dilation(masks["Parotid_L"], structure=np.ones((1, 3, 3), bool), iterations=1)
    report = _qa(hu, {**masks, "Parotid_L": grown}, cal)
    flag = next(f for f in report.reasons if f.code == "quality_model")
    assert flag.value >= flag.threshold == 0.5 and report.glands["Parotid_L"].quality.p_poor >= 0.5


def test_reference_tolerances_raise_review() -> None:
    hu, masks = oracle_phantom()
    probs = _probs(masks)
    glands = postprocess(probs, LABELS)
    ref = {**masks, "Parotid_L": np.roll(masks["Parotid_L"], 4, axis=1)}
    report = build_qa(Volume(hu, SPACING, ORIGIN), glands, model_name="m", model_version="1", stage_times_s={},
                      reference=ref)  # fmt: skip
    codes = _codes(report, "Parotid_L")
    assert {"reference_dice", "reference_hd95"} <= codes and report.status == "review"
    assert not _codes(report, "Parotid_R")
    flag = next(f for f in report.reasons if f.code == "reference_dice")
    assert flag.value == pytest.approx(0.6) and flag.threshold == 0.75


# --- the pure signal functions ---------------------------------------------------------------------------------


def test_probability_structure_separates_sharp_from_blurred_and_counts_mass_outside() -> None:
    mask = np.zeros((12, 20, 20), bool)
    mask[3:9, 5:15, 5:15] = True
    sharp = np.zeros((*mask.shape, 2), np.float32)
    sharp[..., 1] = np.where(mask, 0.99, 0.01)
    sharp[..., 0] = 1 - sharp[..., 1]
    from scipy import ndimage

    blurred = sharp.copy()
    blurred[..., 1] = ndimage.gaussian_filter(sharp[..., 1], 1.5)
    blurred[..., 0] = 1 - blurred[..., 1]
    s, b = probability_structure(sharp, 1, mask), probability_structure(blurred, 1, mask)
    assert s["band_entropy"] < 0.15 < b["band_entropy"] and s["band_margin"] > b["band_margin"]
    assert s["uncertain_fraction"] == 0.0 < b["uncertain_fraction"]
    assert s["outside_mass_fraction"] == 0.0
    second = sharp.copy()
    second[3:9, 16:19, 16:19, 1] = 0.9  # a blob the clean-up threw away
    assert probability_structure(second, 1, mask)["outside_mass_fraction"] > 0.05
    assert math.isnan(probability_structure(sharp, 1, np.zeros_like(mask))["band_entropy"])


def test_member_disagreement_and_map() -> None:
    m = np.zeros((8, 16, 16), bool)
    m[2:6, 4:12, 4:12] = True
    same = member_disagreement([m, m, m], m)
    assert same["member_dice_mean"] == 1.0 and same["member_volume_cv"] == 0.0
    shifted = member_disagreement([m, np.roll(m, 3, axis=2)], m)
    assert shifted["member_dice_min"] < 0.7 and shifted["member_dice_mean"] < 1.0
    assert math.isnan(member_disagreement([m], m)["member_dice_mean"])
    lab = [m.astype(np.int8), np.roll(m, 3, axis=2).astype(np.int8)]
    dmap = member_disagreement_map(lab)
    assert dmap.max() == 1.0 and dmap[m & np.roll(m, 3, axis=2)].max() == 0.0
    # the flag: a member agreeing with Dice < 0.7
    _, _, concerns = assess_gland("G", {**shifted, "volume_cc": 1.0}, QACalibration())
    assert [c.code for c in concerns] == ["perturbation_disagreement"]


def test_blanked_slices_ignore_real_air_and_find_blanking() -> None:
    hu, _ = oracle_phantom()
    hu = hu.copy()
    hu[20, 28:34, 28:34] = -1000.0  # an airway: a few per cent of the cross-section
    assert blanked_slices(hu, SPACING) == []
    hu[21][hu[21] > -500] = -1000.0
    hu[21][:, [8, 55]] = 0.0
    hu[21][[8, 55], 8:56] = 0.0
    found = blanked_slices(hu, SPACING)
    assert [k for k, _ in found] == [21] and found[0][1] > 0.8


def test_soft_tissue_peak_and_fov_cut() -> None:
    hu, _ = oracle_phantom()
    tissue = np.where(hu > -500, 40.0, hu) + np.random.default_rng(0).normal(0, 5, hu.shape)
    assert soft_tissue_peak_hu(tissue) == pytest.approx(40.0, abs=4)
    cal = QACalibration()
    assert assess_input(collect_input_signals(tissue, SPACING, (10, 20), -500.0), cal) == []
    uncalibrated = assess_input(collect_input_signals(tissue + 1000.0, SPACING, (10, 20), -500.0), cal)
    assert "darkest_p1_hu" in [c.signal for c in uncalibrated]  # stored values, not HU: no air at -1000
    hot = assess_input(collect_input_signals(tissue + 150.0, SPACING, (10, 20), -500.0), cal)
    assert [c.signal for c in hot] == ["soft_tissue_peak_hu"]
    assert body_cut_by_fov(hu, (10, 20)) == []
    wide = hu.copy()
    wide[10:20, 10:50, :] = 0.0
    assert set(body_cut_by_fov(wide, (10, 20))) == {"right", "left"}


def test_fill_holes_for_a_stack_equals_the_per_slice_fill() -> None:
    from scipy import ndimage

    from service.pipeline.qa_signals import _fill_holes_per_slice

    rng = np.random.default_rng(3)
    stack = ndimage.binary_opening(rng.random((7, 40, 50)) > 0.45, iterations=1)  # ragged shapes with holes
    stack[2] = False
    stack[3, 5:30, 5:30] = True
    stack[3, 10:20, 10:20] = False  # a hole; slices 2 and 4 above and below must not leak into it
    stack[4, :, 0] = True  # touches the border
    want = np.stack([ndimage.binary_fill_holes(s) for s in stack])
    got = _fill_holes_per_slice(stack)
    assert np.array_equal(got, want) and got[3, 15, 15] and want.sum() > stack.sum()


def test_band_and_uncertain_slices() -> None:
    m = np.zeros((10, 12, 12), bool)
    m[2:8, 3:9, 3:9] = True
    band = boundary_band(m, 1)
    assert band[2, 5, 5] and not band[5, 5, 5] and band[5, 5, 2]
    unc = np.zeros(m.shape, np.float32)
    unc[6] = 1.0
    unc[3, 5, 5] = 0.2
    top = uncertain_slices(BoxedMap.whole(unc), m, top=2)
    assert top[0][0] == 6 and top[1][0] == 3


def test_perturbation_helpers() -> None:
    assert parse_perturbation("shift:1,0,-1") == ("shift", (1.0, 0.0, -1.0))
    assert parse_perturbation("scale:0.9") == ("scale", (0.9,))
    for bad in ("shift:1,2", "scale:1", "rotate:5", "shift:0.5,0,0"):
        with pytest.raises(ValueError):
            parse_perturbation(bad)
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    back = _shift(_shift(a, (1, -1, 2), -1.0), (-1, 1, -2), -1.0)
    assert np.array_equal(back[:2, 1:, :3], a[:2, 1:, :3])
    cube = np.zeros((9, 9, 9), np.float32)
    cube[3:6, 3:6, 3:6] = 1.0
    assert _zoom_about_centre(cube, 1.0 + 1e-9, 0.0).sum() == pytest.approx(27.0, abs=0.01)
    assert _zoom_about_centre(cube, 2.0, 0.0).sum() > 27.0 * 4


def _voxelwise_net(calls: list[tuple[int, ...]]):
    """A stand-in network, voxel by voxel: bright input (normalised HU near 1) is gland, split evenly between the
    two glands (so mirroring changes nothing); records the shape of every input it is given."""

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(tuple(x.shape[1:4]))
        fg = 0.4 * np.clip(x[..., 0], 0.0, 1.0)
        return np.stack([1.0 - 2.0 * fg, fg, fg], axis=-1).astype(np.float32)

    return predict


def test_extra_members_run_on_the_glands_region_only() -> None:
    from service.pipeline.infer import predict_probabilities
    from service.pipeline.plan import Plan
    from service.pipeline.qa_perturb import glands_region, predict_with_members

    plan = Plan(labels=LABELS, inference_window_zyx=(64, 96, 96), tta_lr_flip=True)
    x = np.full((60, 90, 90), -4.0, np.float32)  # air
    x[2:58, 5:85, 5:85] = 0.0  # the body: its box is most of the grid
    x[30:36, 40:46, 20:26] = 1.0  # one bright blob: the only "gland"
    calls: list[tuple[int, ...]] = []
    mp = predict_with_members(_voxelwise_net(calls), x, plan, ("shift:1,1,1", "scale:0.9"))
    assert np.array_equal(mp.probs_zyxc, predict_probabilities(_voxelwise_net([]), x, plan))  # contours unchanged
    assert mp.member_names == ["identity", "lr_flip", "shift:1,1,1", "scale:0.9"]
    body_calls, extra_calls = calls[:2], calls[2:]
    assert len(extra_calls) == 2 and all(np.prod(c) < np.prod(body_calls[0]) / 3 for c in extra_calls)
    region = glands_region(mp.member_labels[0], 3, plan.spacing_mm_zyx)
    assert region is not None and region[0] == slice(22, 44) and region[1] == slice(28, 58)  # 20 / 48 mm of context
    assert mp.region == region  # the prediction says where its extra members ran
    # a voxel-wise network is shift-equivariant: the shifted member agrees; the scaled one blurs the blob's faces
    assert np.array_equal(mp.member_labels[2], mp.member_labels[0])
    moved = np.argwhere(mp.member_labels[3] != mp.member_labels[0])
    assert moved.size and moved.min(axis=0).tolist() >= [29, 39, 19] and moved.max(axis=0).tolist() <= [36, 46, 26]
    assert mp.uncertainty_zyx[:22].max() == 0.0 and mp.uncertainty_zyx[region].max() > 0.5
    calls.clear()
    dark = np.where(x > 0.5, 0.0, x)  # no gland anywhere: the extra members are not run
    none = predict_with_members(_voxelwise_net(calls), dark, plan, ("shift:1,1,1",))
    assert len(calls) == 2 and np.array_equal(none.member_labels[2], none.member_labels[0])


def test_quality_estimate_is_a_logistic_and_refuses_missing_features() -> None:
    model = QualityModel(features=["a", "b"], center=[1.0, 0.0], scale=[2.0, 1.0], coef=[1.0, -1.0], intercept=0.5,
                         dice_coef=[0.1, 0.0], dice_intercept=0.8, review_threshold=0.5)  # fmt: skip
    p, d = quality_estimate({"a": 3.0, "b": 0.5}, model)  # z = (1, 0.5): t = 0.5 + 1 - 0.5 = 1
    assert p == pytest.approx(1 / (1 + math.exp(-1.0))) and d == pytest.approx(0.9)
    assert quality_estimate({"a": 3.0, "b": float("nan")}, model) is None
