"""Postprocessing: argmax, largest 26-connected component, 3D and per-axial-slice hole filling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from service.pipeline.postprocess import GlandMask, postprocess, weighted_argmax

LABELS = ("background", "Parotid_R", "Parotid_L")


def _probs_from_labels(label_zyx: np.ndarray, n_classes: int = 3, p_fg: float = 0.8) -> np.ndarray:
    """One-hot-ish probabilities: ``p_fg`` on the labelled class, the rest shared by the others."""
    probs = np.full(label_zyx.shape + (n_classes,), (1.0 - p_fg) / (n_classes - 1), dtype=np.float32)
    np.put_along_axis(probs, label_zyx[..., None].astype(np.int64), p_fg, axis=-1)
    return probs


def test_keeps_largest_component_and_counts_components():
    lab = np.zeros((20, 20, 20), dtype=np.uint8)
    lab[2:5, 2:5, 2:5] = 1  # 27 voxels
    lab[10:12, 10:12, 10:12] = 1  # 8 voxels, separate
    lab[15:19, 2:6, 12:16] = 2  # Parotid_L: one component of 64
    out = postprocess(_probs_from_labels(lab), LABELS)
    assert list(out) == ["Parotid_R", "Parotid_L"]
    r = out["Parotid_R"]
    assert isinstance(r, GlandMask)
    assert r.components_before == 2
    assert r.mask_zyx.dtype == bool and r.mask_zyx.shape == lab.shape
    expected = lab == 1
    expected[8:] = False  # only the 27-voxel block
    np.testing.assert_array_equal(r.mask_zyx, expected)
    assert r.mask_zyx.sum() == 27
    assert r.largest_component_fraction == pytest.approx(27 / 35)
    assert out["Parotid_L"].components_before == 1
    assert out["Parotid_L"].mask_zyx.sum() == 64


def test_corner_contact_is_one_component_26_connectivity():
    lab = np.zeros((10, 10, 10), dtype=np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    lab[4:6, 4:6, 4:6] = 1  # touches the first block only at the corner (3,3,3)-(4,4,4)
    out = postprocess(_probs_from_labels(lab), LABELS)
    assert out["Parotid_R"].components_before == 1
    assert out["Parotid_R"].mask_zyx.sum() == 27 + 8


def test_fills_3d_cavity():
    lab = np.zeros((12, 12, 12), dtype=np.uint8)
    lab[2:9, 2:9, 2:9] = 1
    lab[4:7, 4:7, 4:7] = 0  # enclosed cavity
    out = postprocess(_probs_from_labels(lab), LABELS)["Parotid_R"]
    expected = np.zeros_like(out.mask_zyx)
    expected[2:9, 2:9, 2:9] = True
    np.testing.assert_array_equal(out.mask_zyx, expected)
    assert out.components_before == 1


def test_fills_axial_hole_but_not_a_hole_seen_only_in_another_plane():
    lab = np.zeros((12, 14, 14), dtype=np.uint8)
    # a tube along z (open at both ends): not a 3D cavity, but every axial slice has a hole -> filled
    lab[2:10, 2:9, 2:9] = 1
    lab[:, 4:7, 4:7] = 0
    # a tube along x attached to it (open at both x ends): its holes are sagittal, not axial -> kept open
    lab[3:8, 9:13, 1:13] = 1
    lab[4:7, 10:12, :] = 0
    out = postprocess(_probs_from_labels(lab), LABELS)["Parotid_R"].mask_zyx
    assert out[2:10, 4:7, 4:7].all(), "axial holes of the z-tube must be filled"
    assert not out[4:7, 10:12, :].any(), "the x-tube's lumen is open in every axial slice and must stay empty"
    for k in range(out.shape[0]):
        np.testing.assert_array_equal(ndimage.binary_fill_holes(out[k]), out[k])


def test_mean_probability_inside_final_mask_includes_filled_voxels():
    lab = np.zeros((10, 10, 10), dtype=np.uint8)
    lab[2:7, 2:7, 2:7] = 1
    lab[4, 4, 4] = 0  # one-voxel cavity: argmax says background there
    probs = _probs_from_labels(lab, p_fg=0.9)
    probs[4, 4, 4] = (0.6, 0.3, 0.1)
    out = postprocess(probs, LABELS)["Parotid_R"]
    assert out.mask_zyx.sum() == 125
    assert out.mean_probability == pytest.approx((124 * 0.9 + 0.3) / 125, rel=1e-6)


def test_all_background_gives_empty_glands():
    probs = _probs_from_labels(np.zeros((6, 7, 8), dtype=np.uint8))
    out = postprocess(probs, LABELS)
    for name in ("Parotid_R", "Parotid_L"):
        g = out[name]
        assert g.mask_zyx.shape == (6, 7, 8) and not g.mask_zyx.any()
        assert g.is_empty
        assert g.components_before == 0 and g.mean_probability == 0.0


def test_ties_go_to_background():
    probs = np.full((4, 4, 4, 3), 1 / 3, dtype=np.float32)
    assert all(g.is_empty for g in postprocess(probs, LABELS).values())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_blobs_give_one_component_without_axial_holes(seed):
    rng = np.random.default_rng(seed)
    logits = ndimage.gaussian_filter(rng.normal(size=(3, 24, 32, 32)), sigma=(0, 1.2, 1.5, 1.5))
    logits[0] += 0.15
    probs = np.moveaxis(np.exp(logits) / np.exp(logits).sum(axis=0), 0, -1)
    out = postprocess(probs, LABELS)
    for g in out.values():
        assert g.components_before >= 1
        _, n = ndimage.label(g.mask_zyx, structure=np.ones((3, 3, 3)))
        assert n == 1
        for k in range(g.mask_zyx.shape[0]):
            sl = g.mask_zyx[k]
            # no hole under 4- or 8-connected background
            np.testing.assert_array_equal(ndimage.binary_fill_holes(sl), sl)
            np.testing.assert_array_equal(ndimage.binary_fill_holes(sl, structure=np.ones((3, 3))), sl)


def test_weight_one_is_plain_argmax_ties_included():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet((1, 1, 1), size=(6, 7, 8)).astype(np.float32)
    probs[0, 0, 0] = (0.4, 0.4, 0.2)  # background/gland tie: background
    probs[0, 0, 1] = (0.2, 0.4, 0.4)  # gland/gland tie: the lower channel
    np.testing.assert_array_equal(weighted_argmax(probs, 1.0), np.argmax(probs, axis=-1))


def test_background_weight_below_one_grows_the_gland_at_its_uncertain_rim():
    probs = np.zeros((9, 9, 9, 3), dtype=np.float32)
    probs[..., 0] = 1.0
    probs[3:6, 3:6, 3:6] = (0.2, 0.8, 0.0)  # confident core
    rim = np.zeros((9, 9, 9), dtype=bool)
    rim[2:7, 2:7, 2:7] = True
    rim[3:6, 3:6, 3:6] = False
    probs[rim] = (0.6, 0.4, 0.0)  # a shell the network is unsure about
    assert postprocess(probs, LABELS)["Parotid_R"].mask_zyx.sum() == 27
    grown = postprocess(probs, LABELS, background_weight=0.6)["Parotid_R"].mask_zyx
    assert grown.sum() == 125 and grown[rim].all()  # 5x5x5: the shell joins, nothing else
    assert postprocess(probs, LABELS, background_weight=0.7)["Parotid_R"].mask_zyx.sum() == 27  # 0.4 < 0.7 x 0.6


def test_bad_arguments_raise():
    probs = np.zeros((2, 2, 2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="labels"):
        postprocess(probs, ("background", "Parotid_R"))
    with pytest.raises(ValueError, match="background"):
        postprocess(probs, ("Parotid_R", "background", "Parotid_L"))
    with pytest.raises(ValueError, match=r"\(z, y, x, c\)"):
        postprocess(probs[0], LABELS)


def test_mask_indices_and_bounding_box_match_numpy() -> None:
    from service.pipeline.postprocess import bounding_box, mask_indices

    rng = np.random.default_rng(3)
    for density in (0.0, 0.001, 0.3):
        m = rng.random((9, 13, 11)) < density
        assert np.array_equal(mask_indices(m), np.argwhere(m))
        box = bounding_box(m, margin=0)
        if density == 0.0:
            assert box is None
            continue
        idx = np.argwhere(m)
        assert box == tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0), strict=True))
