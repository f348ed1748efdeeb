"""One structure template for every output: the RTSTRUCT's ROI names and (3006,002A) ROI Display Color, the
preview's outlines and the QA JSON's ``roi_name``/``display_color_rgb`` agree, for the default template and for a
configured one (suffix ``_AI``, a renamed gland, a custom colour), through the whole pipeline (oracle bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.image import imread
from pydantic import ValidationError

from service.config import Settings
from service.pipeline.segment import segment_series
from service.pipeline.structures import DEFAULT_TEMPLATE, StructureTemplate, hex_color
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.dicom_factory import write_ct_series


@pytest.fixture(scope="module")
def oracle_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("structures")
    build_oracle_bundle(root / "store", promote=True)
    hu, _ = oracle_phantom()
    write_ct_series(root / "ct", hu, (2.5, 1.5, 1.5), (-48.0, -48.0, 0.0), "HFS")
    return root / "store", root / "ct"


def _run(oracle_ct, out: Path, template: StructureTemplate | None) -> tuple[pydicom.Dataset, dict, np.ndarray]:
    store, ct = oracle_ct
    out.mkdir()
    segment_series(
        ct,
        rtstruct_path=out / "RS.dcm",
        qa_path=out / "qa.json",
        preview_path=out / "preview.png",
        store=store,
        structures=template,
    )
    return pydicom.dcmread(out / "RS.dcm"), json.loads((out / "qa.json").read_text()), imread(out / "preview.png")


def _rtstruct_colours(ds: pydicom.Dataset) -> dict[str, tuple[int, int, int]]:
    names = {roi.ROINumber: roi.ROIName for roi in ds.StructureSetROISequence}
    return {names[c.ReferencedROINumber]: tuple(int(v) for v in c.ROIDisplayColor) for c in ds.ROIContourSequence}


def _axial_columns(png: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    axial = png[: png.shape[0] // 2, : png.shape[1] // 3, :3]  # first row, first column (the legend is far right)
    close = np.all(np.abs(axial - np.array(rgb) / 255.0) < 0.12, axis=-1)
    return np.nonzero(close)[1]


@pytest.mark.parametrize(
    "template",
    [
        None,
        StructureTemplate(suffix="_AI", names={"Parotid_R": "Parotid_Rt"}, colors={"Parotid_L": (220, 0, 220)}),
    ],
    ids=["default", "configured"],
)
def test_rtstruct_preview_and_qa_use_the_same_names_and_colours(oracle_ct, tmp_path: Path, template) -> None:
    ds, qa, png = _run(oracle_ct, tmp_path / "out", template)
    t = template or DEFAULT_TEMPLATE
    expected_names = {"Parotid_L": t.roi_name("Parotid_L"), "Parotid_R": t.roi_name("Parotid_R")}
    expected_rgb = t.colors_for(["Parotid_L", "Parotid_R"])
    if template is not None:
        assert expected_names == {"Parotid_L": "Parotid_L_AI", "Parotid_R": "Parotid_Rt_AI"}
        assert expected_rgb["Parotid_L"] == (220, 0, 220)
    else:
        assert expected_names == {"Parotid_L": "Parotid_L", "Parotid_R": "Parotid_R"}
    assert expected_rgb["Parotid_L"] != expected_rgb["Parotid_R"]

    by_name = _rtstruct_colours(ds)
    assert by_name == {expected_names[label]: expected_rgb[label] for label in expected_names}
    for label in expected_names:
        gland = qa["glands"][label]
        assert gland["roi_name"] == expected_names[label]
        assert tuple(gland["display_color_rgb"]) == expected_rgb[label]
    # the preview draws each gland in its RTSTRUCT colour, the left gland on the viewer's right
    left_cols = _axial_columns(png, expected_rgb["Parotid_L"])
    right_cols = _axial_columns(png, expected_rgb["Parotid_R"])
    assert left_cols.size > 30 and right_cols.size > 30
    assert left_cols.mean() > right_cols.mean() + 30


def test_settings_configure_the_template_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAROTID_STRUCTURES__SUFFIX", "_AI")
    monkeypatch.setenv("PAROTID_STRUCTURES__COLORS", '{"Parotid_R": [10, 20, 30]}')
    s = Settings()
    assert s.structures.roi_name("Parotid_L") == "Parotid_L_AI"
    assert s.structures.colors_for(["Parotid_L", "Parotid_R"]) == {
        "Parotid_L": (0, 170, 255),
        "Parotid_R": (10, 20, 30),
    }
    monkeypatch.setenv("PAROTID_STRUCTURES__COLORS", '{"Parotid_R": [10, 20, 300]}')
    with pytest.raises(ValidationError, match="0-255"):
        Settings()


@pytest.mark.parametrize(
    "bad",
    [
        {"suffix": "a\\b"},
        {"suffix": " _AI"},
        {"names": {"Parotid_L": "x" * 62}, "suffix": "_AI"},
        {"names": {"Parotid_L": "P", "Parotid_R": "P"}},
    ],
)
def test_unsafe_templates_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        StructureTemplate(**bad)


def test_hex_color_and_palette_for_unknown_labels() -> None:
    assert hex_color((255, 120, 0)) == "#ff7800"
    colours = DEFAULT_TEMPLATE.colors_for(["Parotid_L", "Parotid_R", "Extra1", "Extra2"])
    assert len(set(colours.values())) == 4
