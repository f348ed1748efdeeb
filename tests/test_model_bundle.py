"""Model store: resolve, promote, checksum verification, safe-mode loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import Category, EnvironmentFault, ErrorCode
from service.model_bundle import list_bundles, load_bundle, promote, promoted_spec, resolve_bundle, verify_bundle
from tests.bundle_factory import build_oracle_bundle, build_test_bundle


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    build_test_bundle(tmp_path, "net", "1.2.0", promote=False)
    build_test_bundle(tmp_path, "net", "1.10.0", promote=False)
    build_oracle_bundle(tmp_path, "oracle", "1.0.0")
    return tmp_path


def test_resolve_newest_version_numerically_and_exact(store: Path) -> None:
    assert [b.spec for b in list_bundles(store)] == ["net:1.2.0", "net:1.10.0", "oracle:1.0.0"]
    assert resolve_bundle("net", store).version == "1.10.0"
    assert resolve_bundle("net:1.2.0", store).version == "1.2.0"
    with pytest.raises(EnvironmentFault) as exc:
        resolve_bundle("net:9.9.9", store)
    assert exc.value.code == ErrorCode.MODEL_NOT_FOUND and "net:1.2.0" in exc.value.message
    assert exc.value.spec.category == Category.ENVIRONMENT  # the installation's fault, not the request's


def test_promote_sets_the_default(store: Path) -> None:
    assert promoted_spec(store) is None
    promote("net:1.2.0", store)
    assert promoted_spec(store) == "net:1.2.0"
    assert resolve_bundle(None, store).spec == "net:1.2.0"
    assert resolve_bundle("net", store).spec == "net:1.2.0"  # the promoted version of that name wins


def test_tampered_bundle_is_refused(store: Path) -> None:
    ref = resolve_bundle("oracle:1.0.0", store)
    verify_bundle(ref)
    plan = ref.path / "plan.json"
    plan.write_text(plan.read_text().replace("250.0", "251.0"))
    with pytest.raises(EnvironmentFault) as exc:
        verify_bundle(ref)
    assert exc.value.code == ErrorCode.MODEL_INTEGRITY and "plan.json" in exc.value.message
    with pytest.raises(EnvironmentFault):
        load_bundle(ref)


def test_missing_checksum_entry_is_refused(store: Path) -> None:
    ref = resolve_bundle("net:1.2.0", store)
    sums = ref.path / "SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "MODEL_CARD" not in line))
    with pytest.raises(EnvironmentFault) as exc:
        verify_bundle(ref)
    assert "MODEL_CARD.md" in exc.value.message


def test_oracle_bundle_loads_in_safe_mode_and_predicts(store: Path) -> None:
    loaded = load_bundle(resolve_bundle("oracle:1.0.0", store))
    x = np.zeros((1, 16, 16, 16, 1), dtype=np.float32)
    x[0, 4:8, 4:8, 4:8, 0] = 0.8  # HU 200 -> Parotid_L
    probs = loaded.predict(x)
    assert probs.shape == (1, 16, 16, 16, 3)
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert probs[0, 5, 5, 5].argmax() == 2 and probs[0, 0, 0, 0].argmax() == 0
