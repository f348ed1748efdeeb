"""Model bundles in the model store: ``<store>/<name>/<version>/`` with model.keras, plan.json, metrics.json,
MODEL_CARD.md and SHA256SUMS. ``<store>/PROMOTED`` names the bundle the service serves by default
(``name:version``); ``parotid-seg models promote`` rewrites it atomically.

Loading verifies every checksum first, then loads the network on the chosen runtime (``service.runtimes``):
TensorFlow loads model.keras with ``compile=False`` and safe mode on, after importing the registered custom layers
(``service.pipeline.model_layers``); OpenVINO / ONNX Runtime load the bundle's optional model.onnx export.
One loaded model is cached per process and runtime: a worker loads it lazily once and never forks afterwards
(TensorFlow is not fork-safe).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import EnvironmentFault, ErrorCode
from service.fileio import default_file_mode, write_atomic
from service.pipeline.plan import Plan

DEFAULT_STORE = Path(__file__).resolve().parents[1] / "model_store"
REQUIRED_FILES = ("model.keras", "plan.json", "metrics.json", "MODEL_CARD.md")
PROMOTED_FILE = "PROMOTED"


@dataclass(frozen=True)
class BundleRef:
    name: str
    version: str
    path: Path

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.version}"


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in v.replace("-", ".").split("."))


def list_bundles(store: Path = DEFAULT_STORE) -> list[BundleRef]:
    """Every ``name/version`` folder holding a SHA256SUMS file, sorted by name then version."""
    refs = []
    if store.is_dir():
        for sums in store.glob("*/*/SHA256SUMS"):
            refs.append(BundleRef(sums.parent.parent.name, sums.parent.name, sums.parent))
    return sorted(refs, key=lambda r: (r.name, _version_key(r.version)))


def promoted_spec(store: Path = DEFAULT_STORE) -> str | None:
    p = store / PROMOTED_FILE
    return p.read_text().strip() if p.is_file() else None


def resolve_bundle(spec: str | None, store: Path = DEFAULT_STORE) -> BundleRef:
    """``None`` -> the promoted bundle; ``name`` -> its promoted or newest version; ``name:version`` exactly."""
    bundles = list_bundles(store)
    if spec is None:
        spec = promoted_spec(store)
        if spec is None:
            if not bundles:
                raise EnvironmentFault(ErrorCode.MODEL_NOT_FOUND, f"no model bundle in {store}")
            return bundles[-1]
    name, _, version = spec.partition(":")
    candidates = [b for b in bundles if b.name == name and (not version or b.version == version)]
    if not candidates:
        known = ", ".join(b.spec for b in bundles) or "none"
        raise EnvironmentFault(ErrorCode.MODEL_NOT_FOUND, f"model {spec!r} not found in {store} (available: {known})")
    if not version:
        promoted = promoted_spec(store)
        for b in candidates:
            if b.spec == promoted:
                return b
    return candidates[-1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(bundle_dir: Path) -> None:
    lines = [
        f"{sha256_file(p)}  {p.name}\n" for p in sorted(bundle_dir.iterdir()) if p.is_file() and p.name != "SHA256SUMS"
    ]
    write_atomic(bundle_dir / "SHA256SUMS", "".join(lines).encode(), mode=default_file_mode())


def verify_bundle(ref: BundleRef) -> None:
    """Check that every required file is present and listed in SHA256SUMS, and every checksum matches."""
    sums = ref.path / "SHA256SUMS"
    if not sums.is_file():
        raise EnvironmentFault(ErrorCode.MODEL_INTEGRITY, f"{sums}: missing")
    listed: dict[str, str] = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, _, fname = line.strip().partition("  ")
            listed[fname] = digest
    for fname in REQUIRED_FILES:
        if fname not in listed:
            raise EnvironmentFault(ErrorCode.MODEL_INTEGRITY, f"{ref.path / fname}: not listed in SHA256SUMS")
    for fname, digest in listed.items():
        p = ref.path / fname
        if not p.is_file() or sha256_file(p) != digest:
            raise EnvironmentFault(ErrorCode.MODEL_INTEGRITY, f"{p}: missing or SHA-256 mismatch with SHA256SUMS")


def promote(spec: str, store: Path = DEFAULT_STORE) -> BundleRef:
    """Make ``name:version`` the default bundle (verified first)."""
    ref = resolve_bundle(spec, store)
    verify_bundle(ref)
    write_atomic(store / PROMOTED_FILE, (ref.spec + "\n").encode(), mode=default_file_mode())
    return ref


def read_plan(ref: BundleRef) -> Plan:
    """The bundle's plan alone (no network, no TensorFlow import): enough to check an input before loading.

    ``load_bundle`` verifies every checksum (the plan's included) before the network serves anything."""
    path = ref.path / "plan.json"
    try:
        return Plan.load(path)
    except (OSError, ValueError) as exc:
        raise EnvironmentFault(ErrorCode.MODEL_INTEGRITY, f"{path}: unreadable or invalid plan ({exc})") from exc


@dataclass
class LoadedModel:
    ref: BundleRef
    plan: Plan
    predict: Callable[[np.ndarray], np.ndarray]
    runtime: str = "tensorflow"  # see service.runtimes


_cache: dict[tuple[Path, str], LoadedModel] = {}
_lock = threading.Lock()


def load_bundle(ref: BundleRef, runtime: str | None = None) -> LoadedModel:
    """Verify and load a bundle (cached per process and runtime). ``runtime``: ``tensorflow``, ``openvino``,
    ``onnxruntime`` or ``auto``; default ``PAROTID_RUNTIME`` (see ``service.runtimes``). TensorFlow runs the
    Keras network with the TensorFlow backend unless KERAS_BACKEND is set."""
    from service import runtimes

    chosen = runtimes.choose_runtime(ref.path, runtime)
    with _lock:
        if (ref.path, chosen) in _cache:
            return _cache[(ref.path, chosen)]
        verify_bundle(ref)
        plan = Plan.load(ref.path / "plan.json")
        try:
            predict = runtimes.load_predict(ref.path, chosen)
        except FileNotFoundError as exc:
            raise EnvironmentFault(ErrorCode.MODEL_INTEGRITY, str(exc)) from exc
        loaded = LoadedModel(ref, plan, predict, chosen)
        _cache[(ref.path, chosen)] = loaded
        return loaded
