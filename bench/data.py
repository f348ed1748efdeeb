"""The benchmark's input: an OpenKBP sample patient resampled to a clinical CT grid and written as a DICOM series.

A clinical head-and-neck CT has 512 x 512 pixels of about 1 mm and 2.5 mm slices (about 160 slices, 80 MB as 16-bit
DICOM). The OpenKBP samples are coarser (128^3 at 3.5-5.4 mm), so the sample is linearly resampled to that grid
(centred, air outside the sample's field of view) and written with ``tests.dicom_factory.write_ct_series``, which
writes real CT Image Storage files as a scanner would (head-first supine, scrambled instance numbers).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("PAROTID_SHARED_DIR", REPO_ROOT.parent / "shared"))
SAMPLE_DIR = SHARED_DIR / "data" / "openkbp-sample"


@dataclass(frozen=True)
class GridSpec:
    rows: int = 512  # pixels per side (square images)
    pixel_mm: float = 1.0
    slice_mm: float = 2.5


CLINICAL = GridSpec()
QUICK = GridSpec(rows=128, pixel_mm=3.0, slice_mm=5.0)
# latency and memory against input size: 128^2 x 96 at 4 mm, the clinical 512^2 x 154, a thin-slice 512^2 x 308
SIZES = {
    "128^2 at 4 mm": GridSpec(128, 4.0, 4.0),
    "512^2 at 2.5 mm": CLINICAL,
    "512^2 at 1.25 mm": GridSpec(512, 1.0, 1.25),
}
QUICK_SIZES = {"128^2 at 5 mm": GridSpec(128, 4.0, 5.0), "128^2 at 3 mm": QUICK}


@dataclass(frozen=True)
class SeriesOnDisk:
    folder: Path
    files: list[Path]
    shape_zyx: tuple[int, int, int]
    spacing_mm_zyx: tuple[float, float, float]
    n_bytes: int
    patient: str

    def describe(self) -> dict:
        nz, ny, nx = self.shape_zyx
        return {
            "patient": self.patient,
            "slices": nz,
            "rows": ny,
            "columns": nx,
            "spacing_mm_zyx": list(self.spacing_mm_zyx),
            "files": len(self.files),
            "bytes": self.n_bytes,
        }


def load_sample_hu(patient: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """HU volume (canonical z, y, x order) and its spacing of an OpenKBP sample patient."""
    from tests.dicom_factory import openkbp_to_canonical

    path = SAMPLE_DIR / f"{patient}.npz"
    if not path.is_file():
        raise SystemExit(
            f"bench: sample patient {path} not found (set PAROTID_SHARED_DIR to the folder holding data/openkbp-sample)"
        )
    data = np.load(path)
    sp = data["spacing_mm"]  # OpenKBP axes (i: A->P, j: R->L, k: S->I)
    hu = openkbp_to_canonical(data["ct"]).astype(np.float32) - 1000.0
    return hu, (float(sp[2]), float(sp[0]), float(sp[1]))


def resample_to_grid(hu_zyx: np.ndarray, spacing_mm_zyx: tuple[float, float, float], grid: GridSpec) -> np.ndarray:
    """Linear resampling onto ``grid`` (same centre; the sample's z extent; air outside its field of view)."""
    from scipy.ndimage import affine_transform

    src = np.asarray(spacing_mm_zyx, dtype=float)
    dst = np.array([grid.slice_mm, grid.pixel_mm, grid.pixel_mm])
    n_z = int(round(hu_zyx.shape[0] * src[0] / grid.slice_mm))
    out_shape = (n_z, grid.rows, grid.rows)
    matrix = dst / src  # output index -> input index scale per axis
    centre_in = (np.asarray(hu_zyx.shape) - 1) / 2.0
    centre_out = (np.asarray(out_shape) - 1) / 2.0
    offset = centre_in - matrix * centre_out
    return affine_transform(
        hu_zyx, matrix, offset=offset, output_shape=out_shape, order=1, cval=-1000.0, output=np.float32
    )


def write_series(
    out_dir: Path, grid: GridSpec = CLINICAL, patient: str = "pt_201", volume: np.ndarray | None = None
) -> SeriesOnDisk:
    """Write the patient on ``grid`` as a new CT series (new UIDs) in ``out_dir``. ``volume`` reuses a resampled
    array (several series with the same pixels but different UIDs, e.g. for throughput runs)."""
    from tests.dicom_factory import write_ct_series

    if volume is None:
        hu, spacing = load_sample_hu(patient)
        volume = resample_to_grid(hu, spacing, grid)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    nz, ny, nx = volume.shape
    spacing_zyx = (grid.slice_mm, grid.pixel_mm, grid.pixel_mm)
    origin = (-(nx - 1) * grid.pixel_mm / 2, -(ny - 1) * grid.pixel_mm / 2, -(nz - 1) * grid.slice_mm / 2)
    files = write_ct_series(out_dir, volume, spacing_zyx, origin, "HFS")
    n_bytes = sum(f.stat().st_size for f in files)
    return SeriesOnDisk(out_dir, files, (nz, ny, nx), spacing_zyx, n_bytes, patient)


def resampled_volume(grid: GridSpec, patient: str = "pt_201") -> np.ndarray:
    hu, spacing = load_sample_hu(patient)
    return resample_to_grid(hu, spacing, grid)
