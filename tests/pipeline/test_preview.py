"""Preview PNG: valid, plausibly sized, atomic, robust to empty glands, patient's left drawn on the viewer's right."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from service.pipeline.preview import write_preview
from service.pipeline.structures import DEFAULT_TEMPLATE, hex_color
from service.pipeline.volume import Volume
from tests.conftest import load_sample_canonical

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE = (30, 80, 80)


def _ct_and_masks() -> tuple[Volume, dict[str, np.ndarray]]:
    _, jj, ii = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu = np.where((ii - 40) ** 2 + (jj - 40) ** 2 <= 30**2, 40.0, -1000.0) * np.ones(SHAPE, dtype=np.float32)
    right = np.zeros(SHAPE, dtype=bool)
    left = np.zeros(SHAPE, dtype=bool)
    right[10:20, 35:45, 15:25] = True  # low x index = patient's right
    left[10:20, 35:45, 55:65] = True
    ct = Volume(hu.astype(np.float32), (3.0, 1.5, 1.5), (-60.0, -60.0, 0.0))
    return ct, {"Parotid_R": right, "Parotid_L": left}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_writes_valid_png_of_plausible_size(tmp_path):
    ct, masks = _ct_and_masks()
    out = tmp_path / "preview.png"
    write_preview(ct, masks, out, title="parotid-unet3d 1.0.0 | QA OK")
    width, height = _png_size(out)
    assert 1000 <= width <= 2000 and 800 <= height <= 2000  # two gland rows of three panels
    assert 20_000 < out.stat().st_size < 5_000_000
    assert imread(out).shape[:2] == (height, width)  # decodes
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]


def _colour_columns(rgb: np.ndarray, hex_colour: str) -> np.ndarray:
    target = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    close = np.all(np.abs(rgb - target) < 0.12, axis=-1)
    return np.nonzero(close)[1]


def test_patients_left_is_on_the_viewers_right_in_the_axial_panel(tmp_path):
    ct, masks = _ct_and_masks()
    out = tmp_path / "preview.png"
    write_preview(ct, masks, out)
    rgb = imread(out)[..., :3]
    axial = rgb[: rgb.shape[0] // 2, : rgb.shape[1] // 3]  # first row, first column; the legend is far right
    colours = {n: hex_color(c) for n, c in DEFAULT_TEMPLATE.colors_for(["Parotid_L", "Parotid_R"]).items()}
    left_cols = _colour_columns(axial, colours["Parotid_L"])
    right_cols = _colour_columns(axial, colours["Parotid_R"])
    assert left_cols.size > 50 and right_cols.size > 50
    assert left_cols.mean() > right_cols.mean() + 50


def test_empty_gland_and_no_gland_do_not_crash(tmp_path):
    ct, masks = _ct_and_masks()
    masks["Parotid_L"][:] = False
    write_preview(ct, masks, tmp_path / "one.png", title="x | QA FAIL")
    _png_size(tmp_path / "one.png")
    empty = {n: np.zeros(SHAPE, dtype=bool) for n in masks}
    write_preview(ct, empty, tmp_path / "none.png")
    _png_size(tmp_path / "none.png")
    write_preview(ct, {}, tmp_path / "nothing.png")
    _png_size(tmp_path / "nothing.png")


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    ct, masks = _ct_and_masks()
    out = tmp_path / "preview.png"
    out.write_bytes(b"previous")

    def broken_savefig(self, fname, **kwargs):
        fname.write(PNG_SIGNATURE + b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        write_preview(ct, masks, out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]


def test_mask_on_another_grid_is_refused_without_output(tmp_path):
    ct, masks = _ct_and_masks()
    masks["Parotid_L"] = masks["Parotid_L"][:, :, :-1]
    with pytest.raises(ValueError, match="Parotid_L"):
        write_preview(ct, masks, tmp_path / "preview.png")
    assert list(tmp_path.iterdir()) == []


def test_sample_patient_preview(tmp_path):
    hu, spacing, pl, pr = load_sample_canonical("pt_202")
    nz, ny, nx = hu.shape
    ct = Volume(hu, spacing, (-(nx - 1) * spacing[2] / 2, -(ny - 1) * spacing[1] / 2, -300.0))
    out = tmp_path / "preview.png"
    write_preview(ct, {"Parotid_R": pr, "Parotid_L": pl}, out, title="oracle 0 | QA OK")
    _png_size(out)
