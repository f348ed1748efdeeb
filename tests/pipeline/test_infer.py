"""Inference stage: body crop, sliding-window blending and left-right test-time augmentation."""

from __future__ import annotations

import numpy as np

from service.pipeline.infer import body_box, mirror_channel_order, predict_probabilities, probabilities_to_ct_grid
from service.pipeline.plan import Plan


def pointwise(x: np.ndarray) -> np.ndarray:
    """A voxel-wise 'network': class 2 above 0.5, class 1 in (0.2, 0.5], else background; soft probabilities."""
    logits = np.stack([np.zeros_like(x), 10 * (x - 0.2) - 20 * np.maximum(x - 0.5, 0), 20 * (x - 0.5)], axis=-1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True))[..., 0, :]


def phantom(shape=(40, 72, 88)) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.full(shape, -1.0, dtype=np.float32)
    x[4:-4, 6:-6, 8:-8] = rng.uniform(-0.2, 1.0, size=(shape[0] - 8, shape[1] - 12, shape[2] - 16))
    return x


def test_sliding_window_blending_equals_one_pass_for_a_voxelwise_model() -> None:
    x = phantom()
    one = predict_probabilities(pointwise, x, Plan())
    tiled = predict_probabilities(pointwise, x, Plan(inference_window_zyx=(16, 32, 32), overlap=0.5))
    assert np.allclose(one, tiled, atol=1e-5)
    assert np.allclose(one.sum(-1), 1.0, atol=1e-5)


def test_outside_the_body_box_is_background() -> None:
    x = np.full((48, 64, 64), -1.0, dtype=np.float32)
    x[20:28, 30:34, 30:34] = 0.3  # class 1 inside
    assert body_box(x, Plan(), margin=2) == (slice(18, 30), slice(28, 36), slice(28, 36))
    probs = predict_probabilities(pointwise, x, Plan())
    outside = np.ones(x.shape, dtype=bool)
    outside[body_box(x, Plan())] = False
    assert outside.sum() > 0 and np.all(probs[outside][:, 0] == 1.0)
    assert probs[24, 32, 32].argmax() == 1


def test_mirror_channel_order() -> None:
    assert mirror_channel_order(("background", "Parotid_R", "Parotid_L")) == [0, 2, 1]
    assert mirror_channel_order(("background", "Brainstem")) == [0, 1]


def test_lr_flip_tta_keeps_a_mirror_equivariant_model_and_averages_otherwise() -> None:
    x = phantom((32, 48, 64))
    nx = x.shape[2]

    def by_side(v: np.ndarray) -> np.ndarray:
        """Body voxels on the +x half are Parotid_L, on the -x half Parotid_R: mirror-equivariant."""
        body = v[0, ..., 0] > -0.9
        xs = np.arange(v.shape[3])[None, None, :]
        left_half = np.broadcast_to(xs >= v.shape[3] / 2, body.shape)
        out = np.zeros((*body.shape, 3), dtype=np.float32)
        out[..., 0] = ~body
        out[..., 2] = body & left_half
        out[..., 1] = body & ~left_half
        return out[None]

    plan = Plan(tta_lr_flip=True)
    assert np.array_equal(predict_probabilities(by_side, x, plan), predict_probabilities(by_side, x, Plan()))
    # a model that labels by intensity only is not mirror-equivariant: TTA splits L/R evenly
    probs = predict_probabilities(pointwise, x, plan)
    hi = x > 0.9
    assert np.allclose(probs[hi][:, 1], probs[hi][:, 2], atol=1e-5)
    assert nx == 64


def test_probabilities_back_on_the_ct_grid_are_normalised() -> None:
    plan = Plan()
    probs = predict_probabilities(pointwise, phantom((20, 40, 40)), plan)
    back = probabilities_to_ct_grid(probs, plan, (3.0, 4.5, 4.5), (17, 36, 36))
    assert back.shape == (17, 36, 36, 3)
    assert np.allclose(back.sum(-1), 1.0, atol=1e-5)


def test_separable_resampling_equals_scipy_affine_transform() -> None:
    from scipy import ndimage

    from service.pipeline.preprocess import resample_back, resample_to_spacing, target_shape

    rng = np.random.default_rng(1)
    a = rng.normal(size=(23, 31, 17)).astype(np.float32)
    for s_in, s_out in (((2.5, 0.98, 0.98), (2.5, 4.0, 4.0)), ((3.0, 5.4, 5.4), (2.5, 4.0, 4.0))):
        got = resample_to_spacing(a, s_in, s_out)
        shape = target_shape(a.shape, s_in, s_out)
        scale = [so / si for si, so in zip(s_in, s_out, strict=True)]
        ref = ndimage.affine_transform(
            a, np.asarray(scale), output_shape=shape, order=1, mode="nearest", prefilter=False
        )
        assert got.shape == ref.shape and np.allclose(got, ref, atol=1e-5)
        back = resample_back(got, s_out, s_in, a.shape)
        ref_back = ndimage.affine_transform(
            got, np.asarray([1 / s for s in scale]), output_shape=a.shape, order=1, mode="nearest", prefilter=False
        )
        assert np.allclose(back, ref_back, atol=1e-5)
