"""Test helpers for the RTSTRUCT tests: a Volume for a written CT series, shapes, and plastimatch round trips.

The Volume is built here from the factory's own canonical inputs plus the UIDs/z read back from the files, so
these tests do not depend on the series loader (tested on its own).
"""

from __future__ import annotations

import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from service.pipeline.dicom_modules import copy_module_attributes
from service.pipeline.rtstruct import write_rtstruct
from service.pipeline.volume import SeriesInfo, Volume
from tests.dicom_factory import write_ct_series

MODEL, VERSION = "parotid-unet3d", "1.2.3"
SHAPE = (36, 100, 150)
SQUARE_1MM = (1.0, 0.9765625, 0.9765625)


def volume_for_series(
    files: Sequence[Path], hu_zyx: np.ndarray, spacing_mm_zyx: Sequence[float], origin_lps: Sequence[float]
) -> Volume:
    """The canonical Volume of a series written by ``write_ct_series`` (slices matched by their stored z)."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    headers.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    first = headers[0]
    info = SeriesInfo(
        series_instance_uid=str(first.SeriesInstanceUID),
        study_instance_uid=str(first.StudyInstanceUID),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
        sop_class_uid=str(first.SOPClassUID),
        slice_sop_instance_uids=tuple(str(d.SOPInstanceUID) for d in headers),
        patient_position=str(first.PatientPosition),
        slice_z_mm=tuple(float(d.ImagePositionPatient[2]) for d in headers),
        patient_study_attrs=copy_module_attributes(first),
        source_files=tuple(str(f) for f in files),
    )
    sz, sy, sx = (float(v) for v in spacing_mm_zyx)
    ox, oy, oz = (float(v) for v in origin_lps)
    return Volume(np.asarray(hu_zyx), (sz, sy, sx), (ox, oy, oz), info)


def ellipsoid_zyx(
    shape_zyx: Sequence[int],
    spacing_mm_zyx: Sequence[float],
    centre_mm_zyx: Sequence[float],
    radii_mm_zyx: Sequence[float],
) -> np.ndarray:
    """Bool ellipsoid on a grid whose index 0 sits at 0 mm along each axis."""
    axes = [np.arange(n) * s for n, s in zip(shape_zyx, spacing_mm_zyx, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    cz, cy, cx = centre_mm_zyx
    rz, ry, rx = radii_mm_zyx
    return ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def read_mha(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A minimal MetaImage reader: (array in file order [k, j, i], offset, spacing (i, j, k), direction 3x3).

    ``direction[:, a]`` is the LPS direction of file axis ``a`` (i, j, k), as in ITK's TransformMatrix.
    """
    raw = Path(path).read_bytes()
    header: dict[str, str] = {}
    pos = 0
    while True:
        end = raw.index(b"\n", pos)
        key, _, value = raw[pos:end].decode("ascii").partition("=")
        header[key.strip()] = value.strip()
        pos = end + 1
        if key.strip() == "ElementDataFile":
            break
    if header["ElementDataFile"] != "LOCAL":
        raise ValueError(f"{path}: only LOCAL data supported")
    dims = [int(v) for v in header["DimSize"].split()]
    types = {
        "MET_UCHAR": np.uint8,
        "MET_CHAR": np.int8,
        "MET_USHORT": np.uint16,
        "MET_SHORT": np.int16,
        "MET_UINT": np.uint32,
        "MET_INT": np.int32,
        "MET_FLOAT": np.float32,
    }
    dtype = np.dtype(types[header["ElementType"]])
    msb = header.get("ElementByteOrderMSB", header.get("BinaryDataByteOrderMSB", "False"))
    if msb.lower() == "true":
        dtype = dtype.newbyteorder(">")
    data = raw[pos:]
    if header.get("CompressedData", "False").lower() == "true":
        data = zlib.decompress(data)
    arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(dims))).reshape(dims[::-1])
    offset = np.array([float(v) for v in header["Offset"].split()])
    spacing = np.array([float(v) for v in header["ElementSpacing"].split()])
    direction = np.array([float(v) for v in header["TransformMatrix"].split()]).reshape(3, 3).T
    return arr, offset, spacing, direction


def mha_to_canonical(path: Path, ct: Volume) -> np.ndarray:
    """Resample-free mapping of an axis-aligned MetaImage onto ``ct``'s canonical grid (checks the geometry)."""
    arr, offset, spacing, direction = read_mha(path)
    out = np.zeros(ct.shape_zyx, dtype=arr.dtype)
    kk, jj, ii = np.indices(arr.shape)
    lps = offset + (np.stack([ii, jj, kk], axis=-1) * spacing) @ direction.T
    sz, sy, sx = ct.spacing_mm_zyx
    ox, oy, oz = ct.origin_lps
    ci = np.rint((lps[..., 0] - ox) / sx).astype(int)
    cj = np.rint((lps[..., 1] - oy) / sy).astype(int)
    ck = np.rint((lps[..., 2] - oz) / sz).astype(int)
    err = np.abs(np.stack([(lps[..., 0] - ox) / sx - ci, (lps[..., 1] - oy) / sy - cj, (lps[..., 2] - oz) / sz - ck]))
    if err.max() > 1e-3:
        raise AssertionError(f"{path}: plastimatch grid is not the CT grid (max offset {err.max():.3g} voxel)")
    inside = (ci >= 0) & (ci < ct.shape_zyx[2]) & (cj >= 0) & (cj < ct.shape_zyx[1]) & (ck >= 0)
    inside &= ck < ct.shape_zyx[0]
    out[ck[inside], cj[inside], ci[inside]] = arr[inside]
    return out


def plastimatch_rasterize(
    rs_path: Path, ct_dir: Path, out_dir: Path, ct: Volume, *, xor_contours: bool = False
) -> dict[str, np.ndarray]:
    """Rasterize every structure of ``rs_path`` with plastimatch onto the referenced CT; canonical bool masks.

    plastimatch ORs the contours of a slice by default (a hole written as a second contour is filled);
    ``xor_contours`` passes ``--xor-contours``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "plastimatch",
        "convert",
        "--input",
        str(rs_path),
        "--referenced-ct",
        str(ct_dir),
        "--output-prefix",
        str(out_dir),
        "--prefix-format",
        "mha",
    ]
    if xor_contours:
        cmd.append("--xor-contours")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"plastimatch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return {p.stem: mha_to_canonical(p, ct) > 0 for p in sorted(out_dir.glob("*.mha"))}


def run_dciodvfy(path: Path) -> tuple[int, list[str], list[str]]:
    """dciodvfy's exit status, its "Error" lines and its "Warning" lines for ``path``."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return proc.returncode, errors, warnings


@dataclass
class Written:
    position: str
    ct_dir: Path
    ct: Volume
    masks: dict[str, np.ndarray]
    rs: Path
    ds: Dataset


def glands_zyx(shape: tuple[int, int, int], spacing: tuple[float, float, float], origin) -> dict[str, np.ndarray]:
    """Two different ellipsoids, the left one at x = +40 mm (patient's left), the right one at x = -38 mm."""
    ox, oy, oz = origin
    cz, cy = (shape[0] - 1) * spacing[0] / 2, (shape[1] - 1) * spacing[1] / 2
    left = ellipsoid_zyx(shape, spacing, (cz, cy, 40.0 - ox), (12.0, 22.0, 16.0))
    right = ellipsoid_zyx(shape, spacing, (cz - 3.0, cy + 4.0, -38.0 - ox), (10.0, 18.0, 13.0))
    return {"Parotid_L": left, "Parotid_R": right}


def write_glands_series(root: Path, position: str, spacing: tuple[float, float, float], shape=SHAPE) -> Written:
    """An air CT series in ``root/ct`` for ``position`` with two ellipsoid glands, and their RTSTRUCT."""
    origin = (-(shape[2] - 1) * spacing[2] / 2, -(shape[1] - 1) * spacing[1] / 2 - 10.0, -87.5)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    files = write_ct_series(root / "ct", hu, spacing, origin, position)
    ct = volume_for_series(files, hu, spacing, origin)
    masks = glands_zyx(shape, spacing, origin)
    rs = root / "RS.dcm"
    write_rtstruct(ct, masks, rs, model_name=MODEL, model_version=VERSION)
    return Written(position, root / "ct", ct, masks, rs, pydicom.dcmread(rs))
