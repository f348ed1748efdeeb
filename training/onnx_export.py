"""ONNX export of a bundle's network, for the optimized CPU runtimes (``service.runtimes``: OpenVINO, ONNX Runtime).

``python -m training.onnx_export model_store/NAME/VERSION`` writes ``model.onnx`` next to ``model.keras`` (Keras 3
``Model.export(format="onnx")``: tf2onnx on the TensorFlow backend, dynamic batch and spatial sizes), checks it
against the Keras network on a random input (max probability difference below ``TOLERANCE``) and rewrites
SHA256SUMS so that the export is verified like every other file. ``training.export`` calls ``export_onnx`` for
every new bundle (``make export``). The bundle must verify before the export.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

TOLERANCE = 1e-4  # max |p_onnx - p_keras| on the check input (measured: about 1e-6)
_CHECK_SHAPE = (1, 32, 48, 48, 1)


def export_onnx(model, path: Path) -> None:
    """Write ``model`` (a Keras 3 model on the TensorFlow backend) to ``path`` as ONNX, atomically."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("ONNX export needs KERAS_BACKEND=tensorflow")
    model(np.zeros(_CHECK_SHAPE, dtype=np.float32), training=False)  # a Keras model must have run once
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        model.export(tmp, format="onnx", verbose=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def max_difference(model, onnx_path: Path, seed: int = 0) -> float:
    """Max absolute probability difference between the Keras model and its ONNX export (ONNX Runtime)."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).normal(0.0, 0.6, size=_CHECK_SHAPE).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(np.abs(ref - got).max())


def add_onnx_to_bundle(bundle_dir: Path) -> float:
    """Export the bundle's model.keras to model.onnx, check it, update SHA256SUMS; returns the max difference."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    import service.pipeline.model_layers  # noqa: F401  (registers the custom layers)
    from service.model_bundle import BundleRef, verify_bundle, write_checksums
    from service.runtimes import ONNX_FILE

    bundle_dir = bundle_dir.resolve()
    verify_bundle(BundleRef(bundle_dir.parent.name, bundle_dir.name, bundle_dir))
    model = keras.saving.load_model(bundle_dir / "model.keras", compile=False, safe_mode=True)
    onnx_path = bundle_dir / ONNX_FILE
    export_onnx(model, onnx_path)
    diff = max_difference(model, onnx_path)
    if not diff <= TOLERANCE:
        onnx_path.unlink()
        raise RuntimeError(f"{onnx_path}: max probability difference {diff:.2e} > {TOLERANCE:g}; export removed")
    write_checksums(bundle_dir)
    return diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.onnx_export", description=__doc__)
    p.add_argument("bundle", type=Path, help="bundle folder, e.g. model_store/parotid-unet3d/1.1.0")
    args = p.parse_args(argv)
    diff = add_onnx_to_bundle(args.bundle)
    print(f"wrote {args.bundle / 'model.onnx'} (max probability difference vs Keras {diff:.1e}); SHA256SUMS updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
