"""OpenKBP dose.csv is read into the case with the CT's axes and canonical transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_samples
from tests.training.test_contract import write_openkbp_csv
from training.data import openkbp


def _write_dose(pt_dir: Path, dose_ijk: np.ndarray) -> None:
    flat = dose_ijk.reshape(-1)
    idx = np.flatnonzero(flat)
    rows = "".join(f"{i},{v!r}\n" for i, v in zip(idx.tolist(), flat[idx].tolist(), strict=True))
    (pt_dir / "dose.csv").write_text(",data\n" + rows)


def test_a_single_dose_voxel_lands_where_the_ct_voxel_does(tmp_path: Path) -> None:
    pt = tmp_path / "pt_1"
    pt.mkdir()
    (pt / "voxel_dimensions.csv").write_text("4.0\n4.0\n2.5\n")
    i, j, k = 10, 90, 30  # anterior, patient's left, superior
    flat = np.ravel_multi_index((i, j, k), openkbp.OPENKBP_SHAPE)
    (pt / "ct.csv").write_text(f",data\n{flat},1500.0\n")
    (pt / "dose.csv").write_text(f",data\n{flat},42.5\n")
    case = openkbp.read_patient(pt)
    assert case.dose_gy_zyx is not None and case.dose_gy_zyx.dtype == np.float32
    z, y, x = np.argwhere(case.dose_gy_zyx)[0]
    assert (z, y, x) == (127 - k, i, j) == tuple(np.argwhere(case.hu_zyx > -1000)[0])
    assert case.dose_gy_zyx[z, y, x] == pytest.approx(42.5)
    assert openkbp.read_patient(pt, with_dose=False).dose_gy_zyx is None
    (pt / "dose.csv").unlink()
    assert openkbp.read_patient(pt).dose_gy_zyx is None  # no dose.csv: no dose, not an error


def test_bad_dose_values_are_refused_naming_the_file(tmp_path: Path) -> None:
    from service.errors import InputError

    pt = tmp_path / "pt_2"
    pt.mkdir()
    (pt / "voxel_dimensions.csv").write_text("4.0\n4.0\n2.5\n")
    (pt / "ct.csv").write_text(",data\n5,1000.0\n")
    (pt / "dose.csv").write_text(",data\n5,-3.0\n")
    with pytest.raises(InputError, match="dose.csv"):
        openkbp.read_patient(pt)


def test_real_dose_mean_in_each_parotid_matches_the_raw_arrays(tmp_path: Path) -> None:
    raw = np.load(require_samples() / "pt_201.npz")
    pt = write_openkbp_csv("pt_201", tmp_path / "pt_201")
    _write_dose(pt, raw["dose_gy"])
    case = openkbp.read_patient(pt)
    assert case.dose_gy_zyx is not None
    for gland, key in (("Parotid_L", "parotid_l"), ("Parotid_R", "parotid_r")):
        expected = float(raw["dose_gy"][raw[key]].mean())  # on OpenKBP's own (i, j, k) arrays
        assert 1.0 < expected < 80.0
        assert float(case.dose_gy_zyx[case.masks[gland]].mean()) == pytest.approx(expected, rel=1e-6)
