"""Network runtimes: the bundle's Keras network on TensorFlow (the reference, and the GPU runtime), or its ONNX
export (``model.onnx``, written by ``training.onnx_export`` and listed in SHA256SUMS) on OpenVINO or ONNX Runtime.

``PAROTID_RUNTIME`` selects one: ``tensorflow``, ``openvino``, ``onnxruntime``, or ``auto`` (the default):
``DEFAULT_CPU_RUNTIME`` when the bundle has a ``model.onnx`` and that runtime is installed, else TensorFlow
(``DEFAULT_CPU_RUNTIME`` is TensorFlow until a bench shows an optimized runtime faster).
Every runtime gives the same ``PredictFn``: ``(1, z, y, x, 1)`` float32 -> ``(1, z, y, x, C)`` probabilities;
equivalence with TensorFlow is tested (max probability difference, identical masks on sample patients) and the
speed and memory of each are measured side by side by ``make bench``.

Each import happens only when its runtime is chosen (TensorFlow is never imported to serve an ONNX runtime).
OpenVINO reads the ONNX file directly (no conversion tool runs, so none of OpenVINO's telemetry is involved).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]

RUNTIMES = ("tensorflow", "openvino", "onnxruntime")
ONNX_FILE = "model.onnx"
# what ``auto`` serves an exported bundle with on the CPU. OpenVINO is adopted only if `make bench` measures it
# faster than TensorFlow on the bench input: on 2026-12-02, with TensorFlow running one traced graph, it was not
# (model stage 7.7 s against 5.7 s on the 512 x 512 x 154 bench CT, one core free), while its peak memory was lower
# (1.08 GiB against 1.45 GiB; docs/benchmarks.md). Deployments short of memory set PAROTID_RUNTIME=openvino.
DEFAULT_CPU_RUNTIME = "tensorflow"
_MODULES = {"tensorflow": "tensorflow", "openvino": "openvino", "onnxruntime": "onnxruntime"}


def requested_runtime() -> str:
    """``PAROTID_RUNTIME`` (``auto`` if unset), validated."""
    value = os.environ.get("PAROTID_RUNTIME", "auto").strip().lower() or "auto"
    if value != "auto" and value not in RUNTIMES:
        raise ValueError(f"PAROTID_RUNTIME={value!r}: expected auto or one of {', '.join(RUNTIMES)}")
    return value


def choose_runtime(bundle_dir: Path, requested: str | None = None) -> str:
    """The runtime that will serve ``bundle_dir``: the requested one, or for ``auto`` the CPU default when the
    bundle has an ONNX export and the runtime is installed, else TensorFlow."""
    requested = requested or requested_runtime()
    if requested != "auto":
        return requested
    if (bundle_dir / ONNX_FILE).is_file() and importlib.util.find_spec(_MODULES[DEFAULT_CPU_RUNTIME]) is not None:
        return DEFAULT_CPU_RUNTIME
    return "tensorflow"


def load_predict(bundle_dir: Path, runtime: str) -> PredictFn:
    """A predict function for the bundle's network on ``runtime`` (the bundle is already verified)."""
    if runtime == "tensorflow":
        return _tensorflow(bundle_dir / "model.keras")
    onnx = bundle_dir / ONNX_FILE
    if not onnx.is_file():
        raise FileNotFoundError(f"{onnx}: no ONNX export in this bundle (python -m training.onnx_export {bundle_dir})")
    if runtime == "openvino":
        return _openvino(onnx)
    if runtime == "onnxruntime":
        return _onnxruntime(onnx)
    raise ValueError(f"unknown runtime {runtime!r}")


def _tensorflow(path: Path) -> PredictFn:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    import service.pipeline.model_layers  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    if keras.backend.backend() != "tensorflow":  # e.g. KERAS_BACKEND=torch in a training process

        def predict_eager(x: np.ndarray) -> np.ndarray:
            return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))

        return predict_eager
    import tensorflow as tf

    # one traced graph for every window shape: TensorFlow's graph optimiser frees activations as soon as they are
    # used and fuses operations, so a 128 x 96 x 128 window peaks at about 1.0 GiB instead of 2.0 GiB in eager
    # mode, and runs faster; probabilities equal the eager call's to 1e-6 (tests/test_runtimes.py)
    n_channels = int(model.inputs[0].shape[-1])
    signature = [tf.TensorSpec([None, None, None, None, n_channels], tf.float32)]
    graph = tf.function(lambda x: model(x, training=False), input_signature=signature, autograph=False)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(graph(np.ascontiguousarray(x, dtype=np.float32)))

    return predict


def _openvino(path: Path) -> PredictFn:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    lock = threading.Lock()  # one infer request, reused: calls are serialised

    def predict(x: np.ndarray) -> np.ndarray:
        with lock:
            return np.array(compiled({0: np.ascontiguousarray(x, dtype=np.float32)})[0], copy=True)

    return predict


def _onnxruntime(path: Path) -> PredictFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0])

    return predict
