"""Reader for the OpenKBP directory format (github.com/ababier/open-kbp, ``provided-data/<split>/pt_N/``).

Per patient: ``ct.csv`` holds (flat index, value) pairs of a C-order (128, 128, 128) array of HU + 1000 (absent =
0); ``LeftParotid.csv`` / ``RightParotid.csv`` list flat indices; ``voxel_dimensions.csv`` holds the three spacings
along the array axes; ``dose.csv`` (optional) holds (flat index, dose in Gy) pairs of the clinical plan dose on the
same array, read into ``CaseData.dose_gy_zyx`` with the same transform. Array axes (checked on the anatomy, see the
sample README): i = anterior->posterior, j = patient's right->left, k = superior->inferior. ``to_canonical`` turns
that into the canonical (z: inferior->superior, y: A->P, x: R->L) order shared with serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from service.errors import ErrorCode, InputError
from training.data.case import CaseData, SkipReport

OPENKBP_SHAPE = (128, 128, 128)
ROI_FILES = {"Parotid_L": "LeftParotid.csv", "Parotid_R": "RightParotid.csv"}


def to_canonical(arr_ijk: np.ndarray) -> np.ndarray:
    """OpenKBP (i: A->P, j: R->L, k: S->I) -> canonical (z: I->S, y: A->P, x: R->L)."""
    return np.ascontiguousarray(np.transpose(arr_ijk, (2, 0, 1))[::-1])


def spacing_to_canonical(spacing_ijk: np.ndarray) -> tuple[float, float, float]:
    return (float(spacing_ijk[2]), float(spacing_ijk[0]), float(spacing_ijk[1]))


def _read_sparse(path: Path, with_values: bool) -> tuple[np.ndarray, np.ndarray | None]:
    rows = path.read_text().splitlines()[1:]
    if not rows:
        return np.zeros(0, dtype=np.int64), (np.zeros(0, dtype=np.float32) if with_values else None)
    try:
        parts = [r.split(",") for r in rows if r.strip()]
        idx = np.array([int(p[0]) for p in parts], dtype=np.int64)
        vals = np.array([float(p[1]) for p in parts], dtype=np.float32) if with_values else None
    except (ValueError, IndexError) as exc:
        raise InputError(ErrorCode.BAD_TRAINING_DATA, f"{path}: malformed OpenKBP CSV ({exc})") from exc
    if idx.size and (idx.min() < 0 or idx.max() >= np.prod(OPENKBP_SHAPE)):
        raise InputError(ErrorCode.BAD_TRAINING_DATA, f"{path}: flat index outside a {OPENKBP_SHAPE} array")
    return idx, vals


def read_patient(pt_dir: Path, with_dose: bool = True) -> CaseData:
    """Read one ``pt_N`` folder; raises InputError(BAD_TRAINING_DATA) naming the file when it is unusable.

    ``with_dose``: also read ``dose.csv`` when present (training leaves it out: it does not use it)."""
    ct_path = pt_dir / "ct.csv"
    vox_path = pt_dir / "voxel_dimensions.csv"
    for p in (ct_path, vox_path):
        if not p.is_file():
            raise InputError(ErrorCode.BAD_TRAINING_DATA, f"{p}: missing")
    spacing_ijk = np.loadtxt(vox_path, dtype=np.float64).reshape(-1)
    if spacing_ijk.shape != (3,) or np.any(spacing_ijk <= 0):
        raise InputError(ErrorCode.BAD_TRAINING_DATA, f"{vox_path}: expected three positive spacings")
    idx, vals = _read_sparse(ct_path, with_values=True)
    assert vals is not None
    flat = np.zeros(int(np.prod(OPENKBP_SHAPE)), dtype=np.float32)
    flat[idx] = vals
    hu = to_canonical(flat.reshape(OPENKBP_SHAPE)) - np.float32(1000.0)
    masks: dict[str, np.ndarray] = {}
    for roi, fname in ROI_FILES.items():
        p = pt_dir / fname
        if not p.is_file():
            continue
        midx, _ = _read_sparse(p, with_values=False)
        m = np.zeros(int(np.prod(OPENKBP_SHAPE)), dtype=bool)
        m[midx] = True
        if m.any():
            masks[roi] = to_canonical(m.reshape(OPENKBP_SHAPE))
    dose = _read_dose(pt_dir / "dose.csv") if with_dose else None
    return CaseData(pt_dir.name, hu, spacing_to_canonical(spacing_ijk), masks, dose)


def _read_dose(path: Path) -> np.ndarray | None:
    """``dose.csv`` (flat index, dose in Gy; absent = 0) in the canonical order, or None without the file."""
    if not path.is_file():
        return None
    idx, vals = _read_sparse(path, with_values=True)
    assert vals is not None
    if vals.size and (not np.all(np.isfinite(vals)) or vals.min() < 0):
        raise InputError(ErrorCode.BAD_TRAINING_DATA, f"{path}: dose values must be finite and >= 0 Gy")
    flat = np.zeros(int(np.prod(OPENKBP_SHAPE)), dtype=np.float32)
    flat[idx] = vals
    return to_canonical(flat.reshape(OPENKBP_SHAPE))


def iter_split(split_dir: Path, report: SkipReport | None = None, *, with_dose: bool = False) -> Iterator[CaseData]:
    """Yield every readable patient of a split folder, recording unreadable ones in ``report``."""
    if not split_dir.is_dir():
        raise InputError(ErrorCode.BAD_TRAINING_DATA, f"{split_dir}: not a folder of OpenKBP patients")
    if split_dir.name == "test-pats":
        raise InputError(
            ErrorCode.BAD_TRAINING_DATA,
            f"{split_dir}: test-pats is the independent holdout; training, tuning and selection never read it",
        )
    pts = sorted((p for p in split_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name))
    for pt in pts:
        try:
            yield read_patient(pt, with_dose)
        except InputError as exc:
            if report is None:
                raise
            report.skipped[pt.name] = exc.message
