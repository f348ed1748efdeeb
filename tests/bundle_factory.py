"""Build tiny, untrained model bundles for tests (geometry and plumbing only; never claim accuracy from them).

``build_test_bundle`` writes ``<store>/<name>/<version>/`` exactly as ``training.export`` lays a bundle out.
An ``oracle`` bundle is a network whose output is fixed by construction (see ``OracleModel``) so that tests can
check geometry end to end with known masks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def build_test_bundle(
    store: Path, name: str = "test-unet", version: str = "0.0.1", base_filters: int = 2, promote: bool = True
) -> Path:
    """An untrained residual U-Net bundle (random weights, fixed seed) with the default plan."""
    import keras

    from training.networks import build_unet

    keras.utils.set_random_seed(7)
    model = build_unet("residual", base_filters=base_filters, depth=4, n_classes=3)
    return _write_bundle(model, store, name, version, "untrained test bundle; no accuracy", promote)


def _write_bundle(model, store: Path, name: str, version: str, note: str, promote: bool) -> Path:
    """Lay out a bundle as ``training.export`` does: model, default plan, metrics, card, checksums."""
    from service.model_bundle import write_checksums
    from service.pipeline.plan import Plan

    bundle = Path(store) / name / version
    bundle.mkdir(parents=True, exist_ok=True)
    model.save(bundle / "model.keras")
    Plan().save(bundle / "plan.json")
    (bundle / "metrics.json").write_text(json.dumps({"note": note}) + "\n")
    (bundle / "MODEL_CARD.md").write_text(f"# {name} {version}\n\n{note}. Not a model for use.\n")
    write_checksums(bundle)
    if promote:
        (Path(store) / "PROMOTED").write_text(f"{name}:{version}\n")
    return bundle


# Oracle phantom intensities (HU): the oracle network labels voxels purely by intensity, so the expected masks of
# a phantom are known exactly and geometry (orientation, laterality, grids) can be tested end to end.
ORACLE_HU_BODY = 0.0
ORACLE_HU_RIGHT = 100.0
ORACLE_HU_LEFT = 200.0


def build_oracle_bundle(store: Path, name: str = "oracle", version: str = "1.0.0", promote: bool = False) -> Path:
    """A two-layer 1x1x1 network with hand-set weights: HU ~100 -> Parotid_R, HU ~200 -> Parotid_L, else background.

    With the default plan (HU / 250): h1 = relu(x - 0.2), h2 = relu(x - 0.6);
    logits = (0, 20 h1 - 40 h2 - 2, 40 h2 - 2) for (background, Parotid_R, Parotid_L).
    """
    import keras
    import numpy as np

    inp = keras.Input(shape=(None, None, None, 1), name="ct")
    hidden = keras.layers.Conv3D(2, 1, activation="relu", name="thresholds")(inp)
    out = keras.layers.Conv3D(3, 1, activation="softmax", name="probs")(hidden)
    model = keras.Model(inp, out, name="oracle")
    model.get_layer("thresholds").set_weights([np.array([1.0, 1.0]).reshape(1, 1, 1, 1, 2), np.array([-0.2, -0.6])])
    w = np.array([[0.0, 20.0, 0.0], [0.0, -40.0, 40.0]]).reshape(1, 1, 1, 2, 3)
    model.get_layer("probs").set_weights([w, np.array([0.0, -2.0, -2.0])])
    return _write_bundle(model, store, name, version, "oracle test bundle: labels by intensity", promote)


def oracle_phantom(shape_zyx=(40, 64, 64)):
    """A head-like phantom (canonical order) and its expected masks: the Parotid_L block lies at larger x."""
    import numpy as np

    nz, ny, nx = shape_zyx
    hu = np.full(shape_zyx, -1000.0, dtype=np.float32)
    zz, yy, xx = np.mgrid[0:nz, 0:ny, 0:nx]
    body = ((yy - ny / 2) / (ny * 0.42)) ** 2 + ((xx - nx / 2) / (nx * 0.42)) ** 2 <= 1.0
    hu[body] = ORACLE_HU_BODY
    z0, z1 = nz // 3, nz // 3 + 10
    right = np.zeros(shape_zyx, dtype=bool)
    left = np.zeros(shape_zyx, dtype=bool)
    right[z0:z1, ny // 2 - 4 : ny // 2 + 6, nx // 2 - 18 : nx // 2 - 8] = True  # small x: patient's right
    left[z0:z1, ny // 2 - 4 : ny // 2 + 6, nx // 2 + 8 : nx // 2 + 18] = True  # large x: patient's left
    hu[right] = ORACLE_HU_RIGHT
    hu[left] = ORACLE_HU_LEFT
    return hu, {"Parotid_L": left, "Parotid_R": right}
