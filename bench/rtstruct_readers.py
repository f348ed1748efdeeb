"""Which RTSTRUCT readers give back the volume this service wrote, on fine and coarse grids (docs/integration.md).

A gland-sized ellipsoid (about 25 cc, parotid-like) is written as a CT series + an RTSTRUCT by the service's own
writer (contours on voxel edges), then read back by independent readers; each one's volume is compared with the
mask's (voxel count x voxel volume):

- ``parotid-seg``: ``service.pipeline.rtstruct_read`` (centre-inside-polygon on the CT grid);
- ``plastimatch``: ``plastimatch convert --referenced-ct`` (Debian package), voxel count of its mask;
- ``rt-utils``: ``RTStructBuilder.create_from(...).get_roi_mask_by_name`` (rt-utils 1.2.7), voxel count;
- ``dicompyler-core``: ``DicomParser.CalculateStructureVolume`` (dicompyler-core 0.5.6; its polygon areas x plane
  thickness, with half the area for the first and last planes).

rt-utils and dicompyler-core are not project dependencies; install them apart and put them on PYTHONPATH:

    pip install --target /tmp/readers --no-deps rt-utils==1.2.7 dicompyler-core==0.5.6 six shapely \\
        opencv-python-headless
    PYTHONPATH=/tmp/readers .venv/bin/python -m bench.rtstruct_readers

dicompyler-core 0.5.6 imports ``pydicom.dicomio.read_file`` (pydicom < 3); this script provides that one name as
an alias of ``pydicom.dcmread`` before importing it. A reader that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from service.pipeline.rtstruct import write_rtstruct
from service.pipeline.rtstruct_read import read_rtstruct_masks
from service.pipeline.series import load_series
from tests.dicom_factory import write_ct_series

# (slice thickness, row spacing, column spacing) in mm
GRIDS: tuple[tuple[float, float, float], ...] = ((2.5, 1.0, 1.0), (3.0, 1.17, 1.17), (2.5, 4.0, 4.0), (5.0, 4.7, 4.7))
RADII_MM = (22.0, 15.0, 13.0)  # z, y, x semi-axes: 4/3 pi abc = 18 cc, a parotid's order of size
FOV_MM = 120.0
NAME = "Parotid_L"


def phantom(spacing_mm_zyx: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """CT (HU) and the ellipsoid mask on a grid of ``spacing_mm_zyx``; the origin of the grid."""
    shape = tuple(int(round(FOV_MM / s)) for s in spacing_mm_zyx)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing_mm_zyx, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    mask = (z / RADII_MM[0]) ** 2 + (y / RADII_MM[1]) ** 2 + (x / RADII_MM[2]) ** 2 <= 1.0
    hu = np.where(mask, 40.0, -1000.0).astype(np.float32)
    origin = (float(axes[2][0]), float(axes[1][0]), float(axes[0][0]))
    return hu, mask, origin


def read_parotid_seg(rs: Path, ct_dir: Path, voxel_cc: float) -> float:
    ct = load_series(ct_dir)
    return float(read_rtstruct_masks(rs, ct, [NAME])[NAME].sum()) * voxel_cc


def read_plastimatch(rs: Path, ct_dir: Path, voxel_cc: float) -> float:
    from tests.pipeline._rtstruct_helpers import plastimatch_rasterize

    ct = load_series(ct_dir)
    with tempfile.TemporaryDirectory() as out:
        masks = plastimatch_rasterize(rs, ct_dir, Path(out), ct)
    return float(masks[NAME].sum()) * voxel_cc


def read_rt_utils(rs: Path, ct_dir: Path, voxel_cc: float) -> float:
    from rt_utils import RTStructBuilder

    mask = RTStructBuilder.create_from(dicom_series_path=str(ct_dir), rt_struct_path=str(rs)).get_roi_mask_by_name(NAME)
    return float(np.asarray(mask).sum()) * voxel_cc


def read_dicompyler(rs: Path, ct_dir: Path, voxel_cc: float) -> float:
    if "pydicom.dicomio" not in sys.modules:  # dicompyler-core 0.5.6 predates pydicom 3
        shim = types.ModuleType("pydicom.dicomio")
        shim.read_file = pydicom.dcmread  # type: ignore[attr-defined]
        sys.modules["pydicom.dicomio"] = shim
    from dicompylercore import dicomparser

    parser = dicomparser.DicomParser(str(rs))
    (number,) = [n for n, s in parser.GetStructures().items() if s["name"] == NAME]
    coords = parser.GetStructureCoordinates(number)
    return float(parser.CalculateStructureVolume(coords, parser.CalculatePlaneThickness(coords)))


READERS: dict[str, Callable[[Path, Path, float], float]] = {
    "parotid-seg": read_parotid_seg,
    "plastimatch": read_plastimatch,
    "rt-utils": read_rt_utils,
    "dicompyler-core": read_dicompyler,
}


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print("| grid z x y x x (mm) | mask cc | " + " | ".join(READERS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in READERS) + " |")
    for spacing in GRIDS:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            hu, mask, origin = phantom(spacing)
            write_ct_series(root / "ct", hu, spacing, origin, "HFS")
            ct = load_series(root / "ct")
            rs = root / "RS.dcm"
            write_rtstruct(ct, {NAME: mask}, rs, model_name="bench", model_version="0")
            voxel_cc = float(np.prod(spacing)) / 1000.0
            truth = float(mask.sum()) * voxel_cc
            cells = []
            for reader in READERS.values():
                try:
                    got = reader(rs, root / "ct", voxel_cc)
                except ImportError as exc:
                    cells.append(f"not installed ({exc.name})")
                    continue
                cells.append(f"{got:.2f} ({100 * (got - truth) / truth:+.1f} %)")
            label = " x ".join(f"{s:g}" for s in spacing)
            print(f"| {label} | {truth:.2f} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
