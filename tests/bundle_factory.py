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

    from service.model_bundle import write_checksums
    from service.pipeline.plan import Plan
    from training.networks import build_unet

    keras.utils.set_random_seed(7)
    bundle = Path(store) / name / version
    bundle.mkdir(parents=True, exist_ok=True)
    model = build_unet("residual", base_filters=base_filters, depth=4, n_classes=3)
    model.save(bundle / "model.keras")
    Plan().save(bundle / "plan.json")
    (bundle / "metrics.json").write_text(json.dumps({"note": "untrained test bundle; no accuracy"}) + "\n")
    (bundle / "MODEL_CARD.md").write_text(f"# {name} {version}\n\nUntrained test bundle. Not a model.\n")
    write_checksums(bundle)
    if promote:
        (Path(store) / "PROMOTED").write_text(f"{name}:{version}\n")
    return bundle
