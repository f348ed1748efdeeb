"""Patch sampling: background patches centred inside the body, and the fatty-gland augmentation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from service.pipeline.plan import Plan
from service.pipeline.preprocess import normalize_hu
from training.dataset import AugmentConfig, PreparedCase, body_points, sample_patch

PLAN = Plan(patch_size_zyx=(16, 16, 16))


def _case() -> PreparedCase:
    """Air everywhere except a small block of soft tissue holding two 'glands' at the far corner."""
    hu = np.full((64, 96, 96), -1000.0, dtype=np.float32)
    hu[40:60, 70:90, 60:90] = 30.0
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[45:52, 75:82, 62:70] = 1
    label[45:52, 75:82, 80:88] = 2
    return PreparedCase("synthetic", normalize_hu(hu, PLAN), label, ("Parotid_R", "Parotid_L"))


def test_body_points_lie_inside_the_body() -> None:
    case = _case()
    pts = body_points(case, PLAN)
    assert len(pts) > 0
    assert (case.image_zyx[tuple(pts.T)] > normalize_hu(np.array([-500.0]), PLAN)[0]).all()
    assert body_points(case, PLAN) is pts  # cached on the case


def test_background_patches_are_centred_inside_the_body() -> None:
    case = _case()
    rng = np.random.default_rng(0)
    no_aug = AugmentConfig(p_foreground=0.0, p_spatial=0.0, p_flip=0.0, intensity_scale=(1, 1), intensity_shift=0)
    air = normalize_hu(np.array([-1000.0]), PLAN)[0]
    for _ in range(20):
        img, _lab = sample_patch(case, PLAN, rng, no_aug)
        assert img[8, 8, 8] > air + 0.1  # the centre voxel is tissue, never the surrounding air
    anywhere = AugmentConfig(**{**no_aug.__dict__, "body_background": False})
    centres_in_air = sum(sample_patch(case, PLAN, rng, anywhere)[0][8, 8, 8] <= air + 0.1 for _ in range(40))
    assert centres_in_air > 20  # the volume is mostly air: the old sampling wastes most patches


def test_fatty_gland_augmentation_darkens_only_the_glands() -> None:
    case = _case()
    base = AugmentConfig(p_foreground=1.0, p_spatial=0.0, p_flip=0.0, intensity_scale=(1, 1), intensity_shift=0)
    fatty = AugmentConfig(**{**base.__dict__, "p_fatty": 1.0, "fatty_hu": (-100.0, -100.0)})
    img0, lab0 = sample_patch(case, PLAN, np.random.default_rng(3), base)
    img1, lab1 = sample_patch(case, PLAN, np.random.default_rng(3), fatty)
    np.testing.assert_array_equal(lab0, lab1)
    gland = lab0 > 0
    assert gland.any()
    drop_hu = (img0 - img1) * PLAN.hu_scale
    assert np.median(drop_hu[gland]) > 60.0  # inside: close to the full 100 HU (mask edges are softened)
    far = ~ndimage.binary_dilation(gland, iterations=4)
    assert np.abs(drop_hu[far]).max() < 1.0  # nothing changes away from the glands
