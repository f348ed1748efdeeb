"""mask_to_polygons (voxel-edge polygons) and polygons_to_mask (even-odd rasterizer), checked against each other
and against matplotlib's independent point-in-polygon test."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from service.pipeline.contours import mask_to_polygons, polygons_to_mask


def _centres_inside(poly_rc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Independent rasterizer: matplotlib point-in-polygon on the pixel centres."""
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    pts = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(float)
    return MplPath(poly_rc, closed=False).contains_points(pts).reshape(shape)


def _random_masks(n: int, seed: int, max_side: int = 16):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = (int(rng.integers(1, max_side)), int(rng.integers(1, max_side)))
        yield rng.random(shape) < rng.random()


def test_single_pixel_is_a_square_through_the_pixel_corners():
    mask = np.zeros((4, 5), bool)
    mask[2, 3] = True
    (poly,) = mask_to_polygons(mask)
    assert sorted(map(tuple, poly.tolist())) == [(1.5, 2.5), (1.5, 3.5), (2.5, 2.5), (2.5, 3.5)]


def test_rectangle_keeps_only_its_four_corners_and_runs_anticlockwise_on_screen():
    mask = np.zeros((10, 12), bool)
    mask[2:7, 3:11] = True
    (poly,) = mask_to_polygons(mask)
    assert poly.tolist() == [[1.5, 2.5], [6.5, 2.5], [6.5, 10.5], [1.5, 10.5]]


def test_empty_mask_and_bad_dimensions():
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []
    with pytest.raises(ValueError):
        mask_to_polygons(np.zeros((2, 2, 2), bool))


def test_pixels_touching_at_a_corner_give_two_polygons_sharing_a_vertex():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = mask[2, 2] = True
    polys = mask_to_polygons(mask)
    assert len(polys) == 2
    shared = set(map(tuple, polys[0].tolist())) & set(map(tuple, polys[1].tolist()))
    assert shared == {(1.5, 1.5)}


def test_hole_becomes_a_keyhole_in_one_polygon_and_island_stays_separate():
    mask = np.zeros((11, 11), bool)
    mask[1:10, 1:10] = True
    mask[3:8, 3:8] = False  # hole
    mask[5, 5] = True  # island inside the hole
    polys = mask_to_polygons(mask)
    assert len(polys) == 2  # the ring (with its keyhole) and the island
    ring = max(polys, key=len)
    # the ring alone, read by the even-odd and by matplotlib's rule, is the ring without the hole
    expected_ring = mask.copy()
    expected_ring[5, 5] = False
    assert np.array_equal(polygons_to_mask([ring], mask.shape), expected_ring)
    assert np.array_equal(_centres_inside(ring, mask.shape), expected_ring)
    assert np.array_equal(polygons_to_mask(polys, mask.shape), mask)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_masks_round_trip_exactly_under_even_odd_and_union_of_polygons(seed):
    for mask in _random_masks(1500, seed):
        polys = mask_to_polygons(mask)
        assert np.array_equal(polygons_to_mask(polys, mask.shape), mask)
        union = np.zeros(mask.shape, bool)
        for poly in polys:  # a reader that fills each contour and unions them must get the same mask
            union |= polygons_to_mask([poly], mask.shape)
        assert np.array_equal(union, mask)


def test_polygon_geometry_half_integer_axis_aligned_no_collinear_vertices():
    for mask in _random_masks(500, 7):
        for poly in mask_to_polygons(mask):
            assert np.all(np.abs(poly - np.floor(poly) - 0.5) < 1e-12), "vertices lie on pixel corners"
            step = np.roll(poly, -1, axis=0) - poly
            assert np.all((step[:, 0] == 0) != (step[:, 1] == 0)), "edges are axis aligned and non-empty"
            direction = np.sign(step)
            assert not np.any(np.all(direction == np.roll(direction, 1, axis=0), axis=1)), "collinear vertex"
            inside = polygons_to_mask([poly], mask.shape)
            assert np.array_equal(_centres_inside(poly, mask.shape), inside)


def test_offsets_follow_the_mask_position():
    mask = np.zeros((300, 400), bool)
    mask[250:260, 370:399] = True
    (poly,) = mask_to_polygons(mask)
    assert poly[:, 0].min() == 249.5 and poly[:, 0].max() == 259.5
    assert poly[:, 1].min() == 369.5 and poly[:, 1].max() == 398.5


def test_rasterizer_matches_matplotlib_on_arbitrary_polygons():
    rng = np.random.default_rng(3)
    shape = (40, 50)
    for _ in range(200):
        n = int(rng.integers(3, 12))
        centre = rng.uniform([5, 5], [35, 45])
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(2, 20, n)
        poly = centre + np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=1)  # may leave the grid
        assert np.array_equal(polygons_to_mask([poly], shape), _centres_inside(poly, shape))


def test_rasterizer_two_overlapping_contours_combine_by_exclusive_or():
    outer = np.array([[0.5, 0.5], [8.5, 0.5], [8.5, 8.5], [0.5, 8.5]])
    inner = np.array([[2.5, 2.5], [5.5, 2.5], [5.5, 5.5], [2.5, 5.5]])
    got = polygons_to_mask([outer, inner], (10, 10))
    expected = np.zeros((10, 10), bool)
    expected[1:9, 1:9] = True
    expected[3:6, 3:6] = False
    assert np.array_equal(got, expected)
