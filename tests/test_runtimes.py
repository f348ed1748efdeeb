"""The optimized CPU runtimes (OpenVINO, ONNX Runtime on the bundle's ONNX export) against the reference
(TensorFlow on model.keras): probabilities within ``TOLERANCE``, identical masks on sample patients; the export is
checksummed like every bundle file; ``PAROTID_RUNTIME`` selects the runtime and ``auto`` falls back to TensorFlow
for a bundle without an export."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path

import numpy as np
import pytest

from service.errors import EnvironmentFault
from service.model_bundle import BundleRef, load_bundle, resolve_bundle, verify_bundle
from service.runtimes import DEFAULT_CPU_RUNTIME, ONNX_FILE, choose_runtime, requested_runtime
from tests.bundle_factory import build_test_bundle
from training.onnx_export import TOLERANCE, add_onnx_to_bundle

PROBABILITY_TOLERANCE = 1e-4  # max |p_runtime - p_tensorflow| accepted on real inputs


# base_filters >= 4: with 2 channels the per-voxel LayerNormalization of an untrained network divides by a variance
# near its epsilon and amplifies float rounding to ~1e-2 (the export itself is right: the trained network agrees
# to ~1e-6)
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> BundleRef:
    store = tmp_path_factory.mktemp("store")
    build_test_bundle(store, base_filters=4, promote=True)
    ref = resolve_bundle(None, store)
    assert choose_runtime(ref.path, "auto") == "tensorflow"  # no export yet
    diff = add_onnx_to_bundle(ref.path)
    assert diff <= TOLERANCE
    return ref


def test_export_is_listed_in_the_checksums_and_verified(exported: BundleRef) -> None:
    assert ONNX_FILE in (exported.path / "SHA256SUMS").read_text()
    verify_bundle(exported)
    assert choose_runtime(exported.path, "auto") == DEFAULT_CPU_RUNTIME


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_runtime_matches_tensorflow(exported: BundleRef, runtime: str) -> None:
    x = np.random.default_rng(5).normal(0.0, 0.6, size=(1, 32, 64, 48, 1)).astype(np.float32)
    ref = load_bundle(exported, "tensorflow").predict(x)
    got = load_bundle(exported, runtime)
    assert got.runtime == runtime
    p = got.predict(x)
    assert p.shape == ref.shape and p.dtype == np.float32
    assert float(np.abs(p - ref).max()) <= PROBABILITY_TOLERANCE
    y = np.random.default_rng(6).normal(size=(1, 16, 32, 32, 1)).astype(np.float32)  # another shape, same session
    assert float(np.abs(got.predict(y) - load_bundle(exported, "tensorflow").predict(y)).max()) <= 1e-4


def test_tensorflow_graph_equals_the_eager_call_for_every_window_shape(exported: BundleRef) -> None:
    """The TensorFlow runtime runs one traced graph (input shape left open) instead of the eager Keras call: same
    probabilities for windows of different shapes."""
    import keras

    import service.pipeline.model_layers  # noqa: F401

    eager = keras.saving.load_model(exported.path / "model.keras", compile=False, safe_mode=True)
    predict = load_bundle(exported, "tensorflow").predict
    for i, shape in enumerate([(1, 32, 64, 48, 1), (1, 16, 32, 32, 1), (1, 48, 32, 64, 1)]):
        x = np.random.default_rng(i).normal(0.0, 0.6, size=shape).astype(np.float32)
        want = np.asarray(keras.ops.convert_to_numpy(eager(x, training=False)))
        got = predict(x)
        assert got.shape == want.shape and got.dtype == np.float32
        assert float(np.abs(got - want).max()) <= 1e-5


def test_tampered_export_is_refused(tmp_path: Path) -> None:
    build_test_bundle(tmp_path, name="t", base_filters=4)
    ref = resolve_bundle("t", tmp_path)
    add_onnx_to_bundle(ref.path)
    with (ref.path / ONNX_FILE).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(EnvironmentFault) as err:
        load_bundle(ref, "openvino")
    assert err.value.code == "MODEL_INTEGRITY"


def test_runtime_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PAROTID_RUNTIME", raising=False)
    assert requested_runtime() == "auto"
    monkeypatch.setenv("PAROTID_RUNTIME", "OpenVINO")
    assert requested_runtime() == "openvino"
    monkeypatch.setenv("PAROTID_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="PAROTID_RUNTIME"):
        requested_runtime()
    build_test_bundle(tmp_path, name="plain", base_filters=2)
    ref = resolve_bundle("plain", tmp_path)
    with pytest.raises(EnvironmentFault, match="no ONNX export"):
        load_bundle(ref, "openvino")


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_shipped_bundle_same_masks_on_sample_patients(runtime: str) -> None:
    """The shipped bundle (TTA included) on sample patients: max probability difference and identical masks."""
    from service.pipeline.gland_boxes import postprocess_on_ct_grid
    from service.pipeline.infer import predict_probabilities
    from service.pipeline.preprocess import preprocess_volume
    from service.pipeline.volume import Volume
    from tests.conftest import load_sample_canonical

    ref = resolve_bundle(None)
    if not (ref.path / ONNX_FILE).is_file():
        pytest.fail(f"the shipped bundle {ref.spec} has no {ONNX_FILE}")
    tf, other = load_bundle(ref, "tensorflow"), load_bundle(ref, runtime)
    for patient in ("pt_201", "pt_203"):
        hu, spacing, _, _ = load_sample_canonical(patient)
        x = preprocess_volume(Volume(hu, spacing, (0.0, 0.0, 0.0)), tf.plan)
        p_tf = predict_probabilities(tf.predict, x, tf.plan)
        p_rt = predict_probabilities(other.predict, x, tf.plan)
        assert float(np.abs(p_tf - p_rt).max()) <= PROBABILITY_TOLERANCE, patient
        for ct_spacing in (spacing, (2.5, 1.0, 1.0)):
            extent = [(n - 1) * s for n, s in zip(hu.shape, spacing, strict=True)]
            shape = tuple(int(e // s) + 1 for e, s in zip(extent, ct_spacing, strict=True))
            a = postprocess_on_ct_grid(p_tf, tf.plan, ct_spacing, shape)
            b = postprocess_on_ct_grid(p_rt, tf.plan, ct_spacing, shape)
            for name in a:
                assert np.array_equal(a[name].mask_zyx, b[name].mask_zyx), f"{patient} {name} {ct_spacing}"
