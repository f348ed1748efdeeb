"""The RTSTRUCT writer: dciodvfy-clean, rasterized back by plastimatch to the written masks, on the patient's
correct side for head-first, feet-first and prone series, with the attributes a planning system needs."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RTStructureSetStorage

from service.pipeline.rtstruct import STRUCTURE_SET_LABEL, build_rtstruct, format_ds, write_rtstruct
from service.pipeline.rtstruct_read import read_rtstruct_masks
from tests.conftest import SAMPLE_PATIENTS, require_tool
from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.pipeline._rtstruct_helpers import (
    MODEL,
    SQUARE_1MM,
    VERSION,
    Written,
    dice,
    plastimatch_rasterize,
    run_dciodvfy,
    volume_for_series,
    write_glands_series,
)

NON_SQUARE = (1.25, 1.2, 0.8)  # row spacing != column spacing: catches swapped PixelSpacing


@pytest.fixture(
    scope="module",
    params=[("HFS", SQUARE_1MM), ("FFS", SQUARE_1MM), ("HFP", SQUARE_1MM), ("HFS", NON_SQUARE)],
    ids=["HFS-1mm", "FFS-1mm", "HFP-1mm", "HFS-nonsquare"],
)
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    position, spacing = request.param
    return write_glands_series(tmp_path_factory.mktemp(f"rs_{position}"), position, spacing)


def _contour_points(ds: Dataset) -> dict[str, list[np.ndarray]]:
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    out: dict[str, list[np.ndarray]] = {}
    for roi in ds.ROIContourSequence:
        items = roi.get("ContourSequence", [])
        out[names[int(roi.ReferencedROINumber)]] = [np.array(c.ContourData, float).reshape(-1, 3) for c in items]
    return out


def test_dciodvfy_reports_no_errors(written: Written) -> None:
    require_tool("dciodvfy")
    rc, errors, warnings = run_dciodvfy(written.rs)
    print(f"dciodvfy {written.position}: {len(errors)} errors, warnings: {warnings}")
    assert errors == [] and rc == 0


def test_dciodvfy_check_catches_an_invalid_file(tmp_path: Path) -> None:
    """The check above can fail: a 17-character DS value and a missing type 1 attribute are reported."""
    require_tool("dciodvfy")
    w = write_glands_series(tmp_path, "HFS", SQUARE_1MM, shape=(6, 40, 60))
    ds = pydicom.dcmread(w.rs)
    item = ds.ROIContourSequence[0].ContourSequence[0]
    values = [str(v) for v in item.ContourData]
    values[0] = "-12.3456789012345"
    item.ContourData = values  # pydicom's validation is off in the service (service/dicom_config.py): no warning
    del ds.ROIContourSequence[0].ReferencedROINumber
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    rc, errors, _ = run_dciodvfy(bad)
    assert rc != 0
    assert any("Contour Data" in e and "Length invalid" in e for e in errors), errors
    assert any("ReferencedROINumber" in e for e in errors), errors


def test_plastimatch_rasterizes_back_to_the_written_masks(written: Written, tmp_path: Path) -> None:
    require_tool("plastimatch")
    got = plastimatch_rasterize(written.rs, written.ct_dir, tmp_path / "pm", written.ct)
    assert set(got) == {"Parotid_L", "Parotid_R"}
    scores = {name: dice(got[name], mask) for name, mask in written.masks.items()}
    print(f"plastimatch round trip {written.position} {written.ct.spacing_mm_zyx}: Dice {scores}")
    assert all(score >= 0.99 for score in scores.values()), scores
    # the gland plastimatch rasterized on the patient's left (+x LPS) is the one we called Parotid_L
    x_of = {name: written.ct.index_to_lps(np.argwhere(m))[:, 0].mean() for name, m in got.items()}
    assert x_of["Parotid_L"] > 0 > x_of["Parotid_R"]


def test_contours_lie_on_the_voxel_edges_in_patient_coordinates(written: Written) -> None:
    """Extent of each ROI's ContourData = mask extent +- half a voxel, in LPS; Parotid_L at +x."""
    sz, sy, sx = written.ct.spacing_mm_zyx
    ox, oy, _ = written.ct.origin_lps
    points = _contour_points(written.ds)
    for name, mask in written.masks.items():
        pts = np.concatenate(points[name])
        _, jj, ii = np.nonzero(mask)
        assert pts[:, 0].min() == pytest.approx(ox + (ii.min() - 0.5) * sx, abs=1e-6)
        assert pts[:, 0].max() == pytest.approx(ox + (ii.max() + 0.5) * sx, abs=1e-6)
        assert pts[:, 1].min() == pytest.approx(oy + (jj.min() - 0.5) * sy, abs=1e-6)
        assert pts[:, 1].max() == pytest.approx(oy + (jj.max() + 0.5) * sy, abs=1e-6)
    assert np.concatenate(points["Parotid_L"])[:, 0].mean() > 0 > np.concatenate(points["Parotid_R"])[:, 0].mean()


def test_every_contour_references_the_ct_image_of_its_slice_at_exactly_its_z(written: Written) -> None:
    z_of_uid = {}
    for f in written.ct_dir.iterdir():
        h = pydicom.dcmread(f, stop_before_pixels=True)
        z_of_uid[str(h.SOPInstanceUID)] = float(h.ImagePositionPatient[2])
    n_contours = 0
    for roi in written.ds.ROIContourSequence:
        for c in roi.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            assert int(c.NumberOfContourPoints) * 3 == len(c.ContourData)
            (image,) = c.ContourImageSequence
            assert image.ReferencedSOPClassUID == CTImageStorage
            z = np.array(c.ContourData, float)[2::3]
            assert np.all(z == z_of_uid[str(image.ReferencedSOPInstanceUID)])
            n_contours += 1
    assert n_contours >= 20


def test_attributes(written: Written) -> None:
    ds, info = written.ds, written.ct.info
    assert info is not None
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert ds.SOPClassUID == RTStructureSetStorage and ds.Modality == "RTSTRUCT"
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.SeriesInstanceUID != info.series_instance_uid and ds.SOPInstanceUID not in info.slice_sop_instance_uids
    assert ds.InstanceCreationDate and ds.InstanceCreationTime and ds.StructureSetDate
    # Patient and General Study modules and the Frame of Reference come from the CT
    assert str(ds.PatientName) == TEST_PATIENT_NAME and ds.PatientID == TEST_PATIENT_ID
    assert ds.PatientBirthDate == "19600101" and ds.PatientSex == "O"
    assert ds.StudyInstanceUID == info.study_instance_uid and ds.StudyID == "1" and ds.AccessionNumber == "ACC123"
    assert ds.StudyDate == "20260101" and ds.StudyTime == "120000"
    assert ds.FrameOfReferenceUID == info.frame_of_reference_uid
    # marked as machine-made, unapproved, by whom
    assert ds.StructureSetLabel == STRUCTURE_SET_LABEL and len(ds.StructureSetLabel) <= 16
    assert "AUTO" in ds.StructureSetLabel.upper()
    assert MODEL in ds.SeriesDescription and VERSION in ds.SeriesDescription and "AUTO" in ds.SeriesDescription
    assert MODEL in ds.StructureSetName and VERSION in ds.StructureSetName
    assert ds.Manufacturer == "parotid-seg" and ds.ManufacturerModelName == MODEL
    versions = list(ds.SoftwareVersions)
    assert versions[0].startswith("parotid-seg ") and versions[1] == f"{MODEL} {VERSION}"
    assert ds.ApprovalStatus == "UNAPPROVED"
    # references: frame -> study -> series -> every CT image
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == info.frame_of_reference_uid
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == info.study_instance_uid
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == info.series_instance_uid
    listed = [str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence]
    assert sorted(listed) == sorted(info.slice_sop_instance_uids)
    # ROIs
    rois = {int(r.ROINumber): r for r in ds.StructureSetROISequence}
    assert [rois[n].ROIName for n in sorted(rois)] == ["Parotid_L", "Parotid_R"]
    for r in rois.values():
        assert r.ROIGenerationAlgorithm == "AUTOMATIC"
        assert r.ReferencedFrameOfReferenceUID == info.frame_of_reference_uid
    assert {o.RTROIInterpretedType for o in ds.RTROIObservationsSequence} == {"ORGAN"}
    assert sorted(int(o.ReferencedROINumber) for o in ds.RTROIObservationsSequence) == sorted(rois)
    colours = [tuple(int(v) for v in c.ROIDisplayColor) for c in ds.ROIContourSequence]
    assert len(set(colours)) == len(colours) == 2


def test_ds_values_have_at_most_16_characters(written: Written) -> None:
    raw = pydicom.dcmread(written.rs)
    n_values = 0
    for elem in raw.iterall():
        if elem.VR == "DS":
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                text = getattr(v, "original_string", None) or str(v)
                assert len(text) <= 16, (elem.keyword, text)
                n_values += 1
    assert n_values > 1000


def test_format_ds() -> None:
    for v in [0.0, -0.0, 1.0, -300.0, -239.2578125, 1 / 3, -1234.56789012345, 1e-12, 123456789.123456, 2.5e-5]:
        s = format_ds(v)
        assert len(s) <= 16 and "e" not in s.lower(), s
        assert float(s) == pytest.approx(v, abs=1e-6)
    assert format_ds(-0.0) == "0" and format_ds(-300.0) == "-300" and format_ds(-239.2578125) == "-239.2578125"
    assert format_ds(-296.70000000000005) == "-296.7"


@pytest.mark.parametrize("v", [1e15 + 0.5, -1e15 - 4.0, 12345678901234.567])
def test_format_ds_refuses_values_a_ds_cannot_hold(v) -> None:
    """Issue 16: positions 1e15 mm away gave contours whose DS strings collapsed; never write such a coordinate."""
    with pytest.raises(ValueError, match="cannot be represented"):
        format_ds(v)


def test_empty_roi_is_listed_without_contours(tmp_path: Path) -> None:
    w = write_glands_series(tmp_path, "HFS", (2.0, 1.5, 1.5), shape=(10, 60, 80))
    masks = {"Parotid_L": w.masks["Parotid_L"], "Parotid_R": np.zeros(w.ct.shape_zyx, bool)}
    rs = tmp_path / "empty.dcm"
    write_rtstruct(w.ct, masks, rs, model_name=MODEL, model_version=VERSION)
    ds = pydicom.dcmread(rs)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Parotid_L", "Parotid_R"]
    assert "ContourSequence" in ds.ROIContourSequence[0] and "ContourSequence" not in ds.ROIContourSequence[1]
    assert len(ds.RTROIObservationsSequence) == 2
    got = read_rtstruct_masks(rs, w.ct, ["Parotid_L", "Parotid_R"])
    assert not got["Parotid_R"].any() and np.array_equal(got["Parotid_L"], masks["Parotid_L"])
    if require_tool("dciodvfy"):
        rc, errors, _ = run_dciodvfy(rs)
        assert errors == [] and rc == 0


def test_hole_is_written_as_a_keyhole_that_plastimatch_reads_back(tmp_path: Path) -> None:
    require_tool("plastimatch")
    w = write_glands_series(tmp_path, "FFS", (2.0, 0.9765625, 0.9765625), shape=(8, 64, 80))
    ring = w.masks["Parotid_L"].copy()
    _, cj, ci = np.argwhere(ring).mean(axis=0).round().astype(int)
    ring[:, cj - 3 : cj + 4, ci - 2 : ci + 3] = False  # a hole inside the gland on several slices
    assert ring.sum() < w.masks["Parotid_L"].sum()
    rs = tmp_path / "ring.dcm"
    write_rtstruct(w.ct, {"Parotid_L": ring}, rs, model_name=MODEL, model_version=VERSION)
    got = plastimatch_rasterize(rs, w.ct_dir, tmp_path / "pm", w.ct)
    assert dice(got["Parotid_L"], ring) == 1.0


def test_colours_and_description_options(tmp_path: Path) -> None:
    w = write_glands_series(tmp_path, "HFS", (2.0, 2.0, 2.0), shape=(6, 50, 75))
    masks = {**w.masks, "Extra": w.masks["Parotid_L"]}
    ds = build_rtstruct(
        w.ct,
        masks,
        model_name=MODEL,
        model_version=VERSION,
        colors={"Parotid_R": (1, 2, 3)},
        series_description="custom description",
    )
    colours = [tuple(int(v) for v in c.ROIDisplayColor) for c in ds.ROIContourSequence]
    assert colours[1] == (1, 2, 3) and len(set(colours)) == 3
    assert ds.SeriesDescription == "custom description"


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = write_glands_series(tmp_path / "series", "HFS", (2.0, 2.0, 2.0), shape=(6, 50, 75))
    out = tmp_path / "out"
    out.mkdir()
    target = out / "RS.dcm"
    target.write_bytes(b"previous result")
    with pytest.raises(ValueError):  # wrong mask shape: nothing written
        write_rtstruct(w.ct, {"Parotid_L": np.zeros((1, 2, 3), bool)}, target, model_name=MODEL, model_version="1")

    def failing_save(self, filename, *args, **kwargs):
        filename.write(b"partial DICOM bytes")
        raise OSError("disk full")

    monkeypatch.setattr(Dataset, "save_as", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_rtstruct(w.ct, w.masks, target, model_name=MODEL, model_version="1")
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in out.iterdir()) == ["RS.dcm"], "no temporary file left behind"
    monkeypatch.undo()
    write_rtstruct(w.ct, w.masks, target, model_name=MODEL, model_version="1")
    assert pydicom.dcmread(target).Modality == "RTSTRUCT"
    assert sorted(p.name for p in out.iterdir()) == ["RS.dcm"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask, "usual permissions, not mkstemp's 0600"


@pytest.mark.parametrize(
    "patient,position", [(p, "HFS") for p in SAMPLE_PATIENTS] + [("pt_201", "FFS")], ids=lambda v: str(v)
)
def test_openkbp_samples_round_trip_through_plastimatch(patient, position, sample_series_factory, tmp_path) -> None:
    require_tool("plastimatch")
    s = sample_series_factory(patient, position)
    ct = volume_for_series(s.files, s.hu_zyx, s.spacing_mm_zyx, s.origin_lps)
    masks = {"Parotid_L": s.parotid_l_zyx, "Parotid_R": s.parotid_r_zyx}
    rs = tmp_path / "RS.dcm"
    write_rtstruct(ct, masks, rs, model_name=MODEL, model_version=VERSION)
    got = plastimatch_rasterize(rs, s.ct_dir, tmp_path / "pm", ct)
    scores = {name: dice(got.get(name, np.zeros_like(m)), m) for name, m in masks.items() if m.any()}
    print(f"OpenKBP {patient} {position} spacing {s.spacing_mm_zyx}: Dice {scores}")
    assert scores and all(score >= 0.97 for score in scores.values()), scores
    assert read_rtstruct_masks(rs, ct, list(masks))["Parotid_L"].sum() == s.parotid_l_zyx.sum()


def test_non_ascii_patient_name_and_re_encoding_as_explicit_vr(tmp_path: Path) -> None:
    """Contour Data is written from pre-encoded bytes; other character sets and transfer syntaxes stay correct."""
    w = write_glands_series(tmp_path, "FFS", (2.0, 1.5, 1.5), shape=(10, 60, 80))
    assert w.ct.info is not None
    attrs = {**w.ct.info.patient_study_attrs, "SpecificCharacterSet": "ISO_IR 192", "PatientName": "Müller^Jürgen"}
    ct = dataclasses.replace(w.ct, info=dataclasses.replace(w.ct.info, patient_study_attrs=attrs))
    utf8 = tmp_path / "utf8.dcm"
    write_rtstruct(ct, w.masks, utf8, model_name=MODEL, model_version=VERSION)
    ds = build_rtstruct(ct, w.masks, model_name=MODEL, model_version=VERSION)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    explicit = tmp_path / "explicit.dcm"
    ds.save_as(explicit, enforce_file_format=True)
    for path in (utf8, explicit):
        assert str(pydicom.dcmread(path).PatientName) == "Müller^Jürgen"
        got = read_rtstruct_masks(path, ct, ["Parotid_L", "Parotid_R"])
        assert all(np.array_equal(got[n], w.masks[n]) for n in w.masks)
        if require_tool("dciodvfy"):
            rc, errors, _ = run_dciodvfy(path)
            assert errors == [] and rc == 0, (path.name, errors)
