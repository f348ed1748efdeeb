"""Metrics against values computed by hand (and one brute-force cross-check of the surface distances)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from service.pipeline import metrics

SPACING = (2.5, 0.8, 1.2)  # z, y, x: deliberately anisotropic and all different


def _cube(shape=(24, 24, 24), start=(5, 5, 5), size=10) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[start[0] : start[0] + size, start[1] : start[1] + size, start[2] : start[2] + size] = True
    return m


def test_offset_cubes_overlap_exact():
    a = _cube()
    b = _cube(start=(5, 5, 8))  # shifted 3 voxels along x
    # overlap 10*10*7 = 700 of 1000 + 1000 voxels; union 1300
    assert metrics.dice(a, b) == pytest.approx(0.7, abs=1e-12)
    assert metrics.iou(a, b) == pytest.approx(700 / 1300, abs=1e-12)
    assert metrics.dice(a, a) == 1.0
    assert metrics.iou(a, np.zeros_like(a)) == 0.0


def test_offset_cubes_surface_distances_anisotropic():
    a = _cube()
    b = _cube(start=(5, 5, 8))  # shifted 3 voxels along x, sx = 1.2 mm
    d_ab, d_ba = metrics.surface_distances_mm(a, b, SPACING)
    # surface of a 10^3 cube: 1000 - 8^3 = 488 voxels
    assert d_ab.size == d_ba.size == 488
    # a's trailing face x=5 (100 voxels) is exactly 3 * 1.2 mm from b's face x=8 and nothing is farther; those
    # 100 voxels are > 5% of 488, so the 95th percentile is that distance too (same for b's leading face).
    assert d_ab.max() == pytest.approx(3.6)
    assert np.sum(np.isclose(d_ab, 3.6)) == 100
    assert metrics.hd95_mm(a, b, SPACING) == pytest.approx(3.6)
    # the shift along z instead (sz = 2.5 mm) gives 7.5 mm: the axis order of the spacing matters
    c = _cube(start=(8, 5, 5))
    assert metrics.hd95_mm(a, c, SPACING) == pytest.approx(7.5)


def test_parallel_plates_all_distances_equal():
    a = np.zeros((12, 8, 8), dtype=bool)
    b = np.zeros_like(a)
    a[2, 1:7, 1:7] = True
    b[6, 1:7, 1:7] = True  # 4 slices apart, sz = 2.5 -> 10 mm everywhere
    d_ab, d_ba = metrics.surface_distances_mm(a, b, SPACING)
    np.testing.assert_allclose(d_ab, 10.0)
    np.testing.assert_allclose(d_ba, 10.0)
    assert metrics.hd95_mm(a, b, SPACING) == pytest.approx(10.0)
    assert metrics.mean_surface_distance_mm(a, b, SPACING) == pytest.approx(10.0)


def test_voxel_vs_plate_pooled_mean_and_directed_percentiles():
    spacing = (2.0, 1.0, 1.0)
    a = np.zeros((10, 10, 10), dtype=bool)
    b = np.zeros_like(a)
    a[5, 5, 5] = True
    b[7, 4:7, 4:7] = True  # 3x3 plate two slices (4 mm) above
    d_ab, d_ba = metrics.surface_distances_mm(a, b, spacing)
    np.testing.assert_allclose(d_ab, [4.0])
    expected_ba = sorted([4.0] + [math.sqrt(17)] * 4 + [math.sqrt(18)] * 4)
    np.testing.assert_allclose(np.sort(d_ba), expected_ba)
    # pooled mean over the 1 + 9 surface voxels (not the mean of the two directed means)
    assert metrics.mean_surface_distance_mm(a, b, spacing) == pytest.approx(sum([4.0] + expected_ba) / 10)
    # max(P95(d_ab) = 4, P95(d_ba) = sqrt(18))
    assert metrics.hd95_mm(a, b, spacing) == pytest.approx(math.sqrt(18))
    hd95, msd = metrics.surface_metrics_mm(a, b, spacing)
    assert hd95 == pytest.approx(math.sqrt(18))
    assert msd == pytest.approx(sum([4.0] + expected_ba) / 10)


def test_single_voxels_euclidean_in_mm():
    a = np.zeros((6, 6, 6), dtype=bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[2, 3, 4] = True  # offsets (1, 2, 3) voxels with spacing (2, 0.5, 1): 2^2 + 1^2 + 3^2 = 14
    assert metrics.hd95_mm(a, b, (2.0, 0.5, 1.0)) == pytest.approx(math.sqrt(14))


def test_empty_masks_are_explicit():
    empty = np.zeros((5, 5, 5), dtype=bool)
    full = np.ones_like(empty)
    assert math.isnan(metrics.dice(empty, empty))
    assert math.isnan(metrics.iou(empty, empty))
    assert metrics.dice(empty, full) == 0.0
    assert metrics.iou(full, empty) == 0.0
    d_ab, d_ba = metrics.surface_distances_mm(empty, full, SPACING)
    assert d_ab.size == 0 and d_ba.size == 0
    assert math.isnan(metrics.hd95_mm(empty, full, SPACING))
    assert math.isnan(metrics.mean_surface_distance_mm(full, empty, SPACING))
    assert math.isnan(metrics.hd95_mm(empty, empty, SPACING))
    assert metrics.volume_cc(empty, SPACING) == 0.0


def test_volume_cc():
    assert metrics.volume_cc(_cube(), SPACING) == pytest.approx(1000 * 2.5 * 0.8 * 1.2 / 1000)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="spacing"):
        metrics.volume_cc(np.zeros((2, 2, 2)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        metrics.hd95_mm(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1.0, 1.0))


def test_surface_of_full_block_includes_array_border():
    full = np.ones((3, 3, 3), dtype=bool)
    surface = metrics.surface_mask(full)
    assert surface.sum() == 26 and not surface[1, 1, 1]


def _brute_force_distances(a, b, spacing):
    def surface_points(m):
        padded = np.pad(m, 1)
        eroded = ndimage.binary_erosion(padded, structure=ndimage.generate_binary_structure(3, 1))[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~eroded) * np.asarray(spacing)

    pa, pb = surface_points(a), surface_points(b)
    pair = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1)
    return pair.min(axis=1), pair.min(axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_brute_force_including_array_border(seed):
    rng = np.random.default_rng(seed)
    shape = (9, 11, 10)
    a = ndimage.binary_dilation(rng.random(shape) > 0.93, iterations=1)
    b = ndimage.binary_dilation(rng.random(shape) > 0.95, iterations=1)
    assert a[0].any() or a[-1].any() or a[:, 0].any()  # the border case is exercised
    d_ab, d_ba = metrics.surface_distances_mm(a, b, SPACING)
    e_ab, e_ba = _brute_force_distances(a, b, SPACING)
    np.testing.assert_allclose(d_ab, e_ab, atol=1e-9)
    np.testing.assert_allclose(d_ba, e_ba, atol=1e-9)
