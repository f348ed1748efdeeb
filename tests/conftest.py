"""Shared fixtures: synthetic DICOM series and the ../shared OpenKBP samples as DICOM.

Tests that need ../shared, a DICOM tool or Redis call ``require_*``: locally they skip when it is missing, in CI
(``CI=true``) they fail loudly, so a missing dependency can never hide a failure.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.dicom_factory import openkbp_to_canonical, write_ct_series

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("PAROTID_SHARED_DIR", REPO_ROOT.parent / "shared"))
SAMPLE_DIR = SHARED_DIR / "data" / "openkbp-sample"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip locally, fail in CI: a missing dependency must never hide a failure."""
    if IN_CI:
        pytest.fail(f"required for this test and missing in CI: {what}", pytrace=False)
    pytest.skip(f"missing: {what}")


def require_tool(name: str, installed_by: str = "scripts/install-debian-tools.sh") -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"command-line tool {name!r} (installed by {installed_by})")
    return str(path)


def require_samples() -> Path:
    if not (SAMPLE_DIR / "index.json").is_file():
        missing(f"OpenKBP samples at {SAMPLE_DIR}")
    return SAMPLE_DIR


SAMPLE_PATIENTS = ["pt_201", "pt_202", "pt_203", "pt_204", "pt_206", "pt_207", "pt_208", "pt_209"]


@dataclass
class SampleSeries:
    """An OpenKBP sample patient written as a DICOM CT series, with its clinical masks (canonical order)."""

    patient: str
    ct_dir: Path
    files: list[Path]
    hu_zyx: np.ndarray
    spacing_mm_zyx: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    parotid_l_zyx: np.ndarray
    parotid_r_zyx: np.ndarray


def load_sample_canonical(patient: str) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, np.ndarray]:
    """HU array, spacing (z, y, x) and L/R masks of a sample patient, in canonical LPS order."""
    data = np.load(require_samples() / f"{patient}.npz")
    sp = data["spacing_mm"]  # along OpenKBP axes (i: A->P, j: R->L, k: S->I)
    hu = openkbp_to_canonical(data["ct"]).astype(np.float32) - 1000.0
    spacing = (float(sp[2]), float(sp[0]), float(sp[1]))
    return hu, spacing, openkbp_to_canonical(data["parotid_l"]), openkbp_to_canonical(data["parotid_r"])


def write_sample_series(patient: str, out_dir: Path, patient_position: str = "HFS") -> SampleSeries:
    hu, spacing, pl, pr = load_sample_canonical(patient)
    nz, ny, nx = hu.shape
    origin = (-(nx - 1) * spacing[2] / 2, -(ny - 1) * spacing[1] / 2, -300.0)
    files = write_ct_series(out_dir, hu, spacing, origin, patient_position)
    return SampleSeries(patient, out_dir, files, hu, spacing, origin, pl, pr)


@pytest.fixture(scope="session")
def sample_series_factory(tmp_path_factory: pytest.TempPathFactory):
    """Call with a patient id (and optional patient position); series are written once per session."""
    cache: dict[tuple[str, str], SampleSeries] = {}

    def make(patient: str = "pt_201", patient_position: str = "HFS") -> SampleSeries:
        key = (patient, patient_position)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{patient}_{patient_position}")
            cache[key] = write_sample_series(patient, out, patient_position)
        return cache[key]

    return make
