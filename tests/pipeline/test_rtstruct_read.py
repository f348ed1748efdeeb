"""The RTSTRUCT reader/rasterizer: exact on our own files, agrees with plastimatch on foreign contours, reads
holes and clinic ROI names, and refuses references that do not belong to the CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from service.errors import ErrorCode, InputError
from service.pipeline.rtstruct import build_rtstruct, format_ds
from service.pipeline.rtstruct_read import DEFAULT_SYNONYMS, match_roi_name, read_rtstruct_masks
from service.pipeline.series import load_series
from service.pipeline.volume import Volume
from tests.conftest import require_tool
from tests.pipeline._rtstruct_helpers import (
    Written,
    plastimatch_rasterize,
    write_glands_series,
)

SPACING = (2.0, 1.5, 1.25)
SHAPE = (12, 64, 96)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Written:
    return write_glands_series(tmp_path_factory.mktemp("read"), "HFS", SPACING, SHAPE)


def _foreign(
    ct: Volume,
    rois: dict[str, list[np.ndarray]],
    path: Path,
    *,
    frame_uid: str | None = None,
    geometric_type: str = "CLOSED_PLANAR",
) -> Path:
    """An RTSTRUCT as another system might write it: given contours (each an (n, 3) LPS mm array) per ROI."""
    ds = build_rtstruct(ct, {}, model_name="other-tps", model_version="9")
    assert ct.info is not None
    frame = frame_uid or ct.info.frame_of_reference_uid
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        items = []
        for pts in contours:
            item = Dataset()
            item.ContourGeometricType = geometric_type
            item.NumberOfContourPoints = len(pts)
            item.ContourData = [format_ds(v) for v in np.asarray(pts, float).ravel()]
            items.append(item)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        rc.ContourSequence = DicomSequence(items)
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = number, number, "ORGAN"
        obs.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(obs)
    ds.save_as(path, enforce_file_format=True)
    return path


def _square_mm(ct: Volume, k: int, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    """A rectangle in LPS mm on slice k, its corners given in (fractional) pixel indices."""
    sz, sy, sx = ct.spacing_mm_zyx
    ox, oy, oz = ct.origin_lps
    (r0, r1), (c0, c1) = rows, cols
    rc = np.array([[r0, c0], [r1, c0], [r1, c1], [r0, c1]], float)
    return np.stack([ox + rc[:, 1] * sx, oy + rc[:, 0] * sy, np.full(4, oz + k * sz)], axis=1)


def _circle_mm(ct: Volume, k: int, centre_rc: tuple[float, float], radius_px: float, n: int = 37) -> np.ndarray:
    sz, sy, sx = ct.spacing_mm_zyx
    ox, oy, oz = ct.origin_lps
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.1
    r = centre_rc[0] + radius_px * np.sin(t) * 1.3
    c = centre_rc[1] + radius_px * np.cos(t)
    return np.stack([ox + c * sx, oy + r * sy, np.full(n, oz + k * sz)], axis=1)


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
def test_reads_our_rtstruct_back_exactly_with_the_real_series_loader(position: str, tmp_path: Path) -> None:
    w = write_glands_series(tmp_path, position, SPACING, SHAPE)
    ct = load_series(w.ct_dir)
    assert ct.shape_zyx == SHAPE
    got = read_rtstruct_masks(w.rs, ct, ["Parotid_L", "Parotid_R"])
    for name, mask in w.masks.items():
        assert np.array_equal(got[name], mask), f"{position} {name}"


def test_all_rois_by_their_own_names(series: Written) -> None:
    got = read_rtstruct_masks(series.rs, series.ct)
    assert sorted(got) == ["Parotid_L", "Parotid_R"]
    assert all(got[n].dtype == bool and got[n].shape == SHAPE for n in got)


def test_contour_through_pixel_centres_covers_its_area(series: Written, tmp_path: Path) -> None:
    path = _foreign(series.ct, {"Box": [_square_mm(series.ct, 4, (5, 15), (10, 30))]}, tmp_path / "box.dcm")
    got = read_rtstruct_masks(path, series.ct)["Box"]
    expected = np.zeros(SHAPE, bool)
    expected[4, 5:15, 11:31] = True  # half-open: top and right edge centres inside, bottom and left outside
    assert np.array_equal(got, expected)


def test_hole_as_separate_contour_and_island(series: Written, tmp_path: Path) -> None:
    ct = series.ct
    contours = [
        _square_mm(ct, 6, (9.5, 40.5), (9.5, 60.5)),
        _square_mm(ct, 6, (19.5, 30.5), (19.5, 40.5)),  # hole (exclusive OR)
        _square_mm(ct, 6, (23.5, 25.5), (25.5, 28.5)),  # island in the hole
    ]
    got = read_rtstruct_masks(_foreign(ct, {"Ring": contours}, tmp_path / "ring.dcm"), ct)["Ring"]
    expected = np.zeros(SHAPE, bool)
    expected[6, 10:41, 10:61] = True
    expected[6, 20:31, 20:41] = False
    expected[6, 24:26, 26:29] = True
    assert np.array_equal(got, expected)


def test_agrees_with_plastimatch_on_foreign_polygons(series: Written, tmp_path: Path) -> None:
    require_tool("plastimatch")
    ct = series.ct
    contours = [_circle_mm(ct, k, (30.0 + k, 40.0 + 2 * k), 8.0 + k) for k in range(2, 10)]
    contours.append(_circle_mm(ct, 5, (31.0, 52.0), 3.0, n=9))  # a hole on one slice, as a second contour
    path = _foreign(ct, {"Blob": contours}, tmp_path / "blob.dcm")
    ours = read_rtstruct_masks(path, ct)["Blob"]
    theirs = plastimatch_rasterize(path, series.ct_dir, tmp_path / "pm", ct, xor_contours=True)["Blob"]
    differing = int((ours ^ theirs).sum())
    print(f"reader vs plastimatch --xor-contours on foreign polygons: {differing} of {ours.sum()} voxels differ")
    assert ours.sum() > 1000 and differing <= 0.002 * ours.sum()
    # plastimatch's default ORs the contours of a slice: the hole comes back filled. This is why our writer
    # joins holes with a keyhole instead of writing them as second contours.
    union = plastimatch_rasterize(path, series.ct_dir, tmp_path / "pm_or", ct)["Blob"]
    hole = union & ~ours
    assert hole.any() and set(np.nonzero(hole)[0].tolist()) == {5}


def test_clinic_names_matched_through_synonyms(series: Written, tmp_path: Path) -> None:
    ct = series.ct
    rois = {
        "PAROTID_LT": [_square_mm(ct, 3, (5, 9), (60, 70))],
        "Rt Parotid": [_square_mm(ct, 3, (5, 9), (5, 15))],
        "Parotid_L_PRV": [_square_mm(ct, 3, (20, 30), (20, 30))],
    }
    path = _foreign(ct, rois, tmp_path / "clinic.dcm")
    got = read_rtstruct_masks(path, ct, ["Parotid_L", "Parotid_R"])
    assert sorted(got) == ["Parotid_L", "Parotid_R"]
    assert got["Parotid_L"][3, 6, 65] and not got["Parotid_L"][3, 6, 10]
    assert got["Parotid_R"][3, 6, 10]


def test_match_roi_name() -> None:
    for name in [
        "Parotid_L",
        "parotid l",
        "L Parotid",
        "LeftParotid",
        "Parotid Lt",
        "PAROTID_LT",
        "Lt_Parotid",
        "Parotid_Left",
        "Parotid (L)",
        " parotid-l ",
    ]:
        assert match_roi_name(name, DEFAULT_SYNONYMS) == "Parotid_L", name
    for name in ["Parotid_R", "RightParotid", "Rt Parotid", "PAROTID_RT"]:
        assert match_roi_name(name, DEFAULT_SYNONYMS) == "Parotid_R", name
    for name in ["Parotid_L_PRV", "Parotids", "Submandibular_L", "", "L"]:
        assert match_roi_name(name, DEFAULT_SYNONYMS) is None, name
    assert match_roi_name("OAR_PG_L", {"Parotid_L": ["oar pg l"]}) == "Parotid_L"


def _refused(path: Path, ct: Volume, roi_names=("Parotid_L",), **kw) -> str:
    with pytest.raises(InputError) as err:
        read_rtstruct_masks(path, ct, None if roi_names is None else list(roi_names), **kw)
    assert err.value.code == ErrorCode.BAD_REFERENCE
    assert str(path) in err.value.message
    return err.value.message


def test_refuses_files_that_are_not_an_rtstruct(series: Written, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM at all")
    assert "not a readable DICOM file" in _refused(text, series.ct)
    ct_file = next(series.ct_dir.iterdir())
    assert "(0008,0016)" in _refused(ct_file, series.ct) and "not an RTSTRUCT" in _refused(ct_file, series.ct)
    assert "not a readable DICOM file" in _refused(tmp_path / "missing.dcm", series.ct)


def test_refuses_another_frame_of_reference(series: Written, tmp_path: Path) -> None:
    path = _foreign(
        series.ct,
        {"Parotid_L": [_square_mm(series.ct, 3, (5, 9), (60, 70))]},
        tmp_path / "f.dcm",
        frame_uid="1.2.3.4.5",
    )
    message = _refused(path, series.ct)
    assert "Frame of Reference" in message and "1.2.3.4.5" in message
    assert "1.2.3.4.5" in _refused(path, series.ct, roi_names=None)  # no ROI on the CT's frame at all


def test_refuses_missing_and_ambiguous_rois(series: Written, tmp_path: Path) -> None:
    message = _refused(series.rs, series.ct, roi_names=("Brainstem",))
    assert "'Brainstem' not found" in message and "'Parotid_L'" in message
    assert read_rtstruct_masks(series.rs, series.ct, ["Brainstem", "Parotid_R"], require_all=False).keys() == {
        "Parotid_R"
    }
    sq = [_square_mm(series.ct, 3, (5, 9), (60, 70))]
    path = _foreign(series.ct, {"L Parotid": sq, "Parotid Lt": sq}, tmp_path / "two.dcm")
    assert "ambiguous" in _refused(path, series.ct)


def test_refuses_contours_off_the_ct_slices(series: Written, tmp_path: Path) -> None:
    sq = _square_mm(series.ct, 3, (5, 9), (60, 70))
    between = sq.copy()
    between[:, 2] += SPACING[0] / 2
    message = _refused(_foreign(series.ct, {"Parotid_L": [between]}, tmp_path / "between.dcm"), series.ct)
    assert "not on a slice" in message
    outside = sq.copy()
    outside[:, 2] += 100.0
    assert "not on a slice" in _refused(_foreign(series.ct, {"Parotid_L": [outside]}, tmp_path / "out.dcm"), series.ct)
    tilted = sq.copy()
    tilted[0, 2] += SPACING[0]
    assert "non-axial" in _refused(_foreign(series.ct, {"Parotid_L": [tilted]}, tmp_path / "tilt.dcm"), series.ct)
    point = _foreign(series.ct, {"Parotid_L": [sq[:1]]}, tmp_path / "point.dcm", geometric_type="POINT")
    assert "POINT" in _refused(point, series.ct)


def test_all_rois_mode_skips_what_it_cannot_rasterize(series: Written, tmp_path: Path) -> None:
    ct = series.ct
    sq = _square_mm(ct, 3, (5, 9), (60, 70))
    path = _foreign(ct, {"Parotid_L": [sq], "Marker": [sq[:1]]}, tmp_path / "mixed.dcm")
    ds = pydicom.dcmread(path)
    ds.ROIContourSequence[1].ContourSequence[0].ContourGeometricType = "POINT"
    ds.save_as(path)
    got = read_rtstruct_masks(path, ct)
    assert list(got) == ["Parotid_L"] and got["Parotid_L"].sum() == 4 * 10


def test_tolerates_small_z_rounding_of_other_systems(series: Written, tmp_path: Path) -> None:
    sq = _square_mm(series.ct, 3, (5, 9), (60, 70))
    sq[:, 2] += 0.004  # e.g. a planning system that stores z with two decimals
    got = read_rtstruct_masks(_foreign(series.ct, {"Parotid_L": [sq]}, tmp_path / "z.dcm"), series.ct)
    assert got["Parotid_L"][3].sum() == 40 and got["Parotid_L"].sum() == 40
