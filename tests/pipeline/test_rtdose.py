"""RTDOSE onto the CT grid: hand-checked on a linear dose field (trilinear interpolation is exact there), a valid
RTDOSE (dciodvfy), and refusals naming the file and attribute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.errors import ErrorCode, InputError
from service.pipeline.metrics_regional import dose_in_mask
from service.pipeline.rtdose import read_rtdose_on_grid
from service.pipeline.series import load_series
from tests.conftest import require_tool
from tests.dicom_factory import write_ct_series
from tests.rtdose_factory import write_rtdose

CT_SPACING = (2.5, 1.0, 1.0)
CT_ORIGIN = (-7.0, -6.0, -20.0)


def _dose_at(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return 0.1 * (x + 20) + 0.05 * (y + 20) + 0.2 * (z + 30)  # Gy, linear in LPS mm


@pytest.fixture()
def ct(tmp_path: Path):
    hu = np.zeros((10, 12, 14), dtype=np.float32)
    files = write_ct_series(tmp_path / "ct", hu, CT_SPACING, CT_ORIGIN)
    return load_series(tmp_path / "ct"), files


def _linear_dose(tmp_path: Path, ct_file: Path, absolute: bool = False) -> Path:
    spacing, origin = (2.5, 2.0, 2.0), (-9.0, -8.0, -22.5)  # a coarser grid that covers the CT
    nz, ny, nx = 12, 10, 11
    z, y, x = np.meshgrid(*(o + s * np.arange(n) for o, s, n in zip(origin[::-1], spacing, (nz, ny, nx), strict=True)),
                          indexing="ij")  # fmt: skip
    return write_rtdose(tmp_path / "dose.dcm", _dose_at(x, y, z), spacing, origin, ct_file, absolute_offsets=absolute)


@pytest.mark.parametrize("absolute", [False, True])
def test_linear_dose_is_sampled_exactly_at_the_ct_voxels(ct, tmp_path: Path, absolute: bool) -> None:
    vol, files = ct
    dose = read_rtdose_on_grid(_linear_dose(tmp_path, files[0], absolute), vol)
    kji = np.stack(np.meshgrid(*(np.arange(n) for n in vol.shape_zyx), indexing="ij"), axis=-1)
    lps = vol.index_to_lps(kji)
    expected = _dose_at(lps[..., 0], lps[..., 1], lps[..., 2])
    np.testing.assert_allclose(dose, expected, atol=2e-4)  # 16-bit storage
    mask = np.zeros(vol.shape_zyx, dtype=bool)
    mask[4, 5, 6] = mask[4, 5, 8] = True  # x = -1 and 1 mm, y = -1, z = -10: dose 1.9, 2.1 (+0.95 + 4.0)
    mean, d50 = dose_in_mask(dose, mask)
    assert mean == pytest.approx(0.1 * 20 + 0.05 * 19 + 0.2 * 20, abs=2e-4) == pytest.approx(d50, abs=2e-4)


def test_the_rtdose_written_for_tests_is_valid(ct, tmp_path: Path) -> None:
    import subprocess

    dciodvfy = require_tool("dciodvfy")
    _, files = ct
    out = subprocess.run([dciodvfy, str(_linear_dose(tmp_path, files[0]))], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).splitlines()
    assert out.returncode == 0 and lines[0] == "RTDose", lines  # recognised as the RT Dose IOD, ran to the end
    assert [ln for ln in lines if ln.startswith(("Error", "Warning"))] == []


def test_refusals_name_the_file_and_attribute(ct, tmp_path: Path) -> None:
    vol, files = ct
    path = _linear_dose(tmp_path, files[0])
    for keyword, value, needle in (
        ("DoseUnits", "RELATIVE", "DoseUnits"),
        ("FrameOfReferenceUID", "1.2.3.4", "FrameOfReferenceUID"),
        ("GridFrameOffsetVector", ["0"] * 12, "monotonic"),
    ):
        ds = pydicom.dcmread(path)
        setattr(ds, keyword, value)
        bad = tmp_path / f"bad_{keyword}.dcm"
        ds.save_as(bad)
        with pytest.raises(InputError) as err:
            read_rtdose_on_grid(bad, vol)
        assert err.value.code == ErrorCode.BAD_DOSE and str(bad) in err.value.message and needle in err.value.message
    with pytest.raises(InputError, match="RT Dose Storage"):
        read_rtdose_on_grid(files[0], vol)
