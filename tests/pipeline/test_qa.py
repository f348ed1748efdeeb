"""QA report: status rules on a synthetic head, hand-checked numbers, JSON round trip, real sample anatomy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from service.pipeline.postprocess import GlandMask
from service.pipeline.qa import QAReport, QAThresholds, build_qa, write_qa_json
from service.pipeline.volume import SeriesInfo, Volume
from tests.conftest import SAMPLE_PATIENTS, load_sample_canonical, require_samples
from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME

SHAPE = (40, 96, 96)
SPACING = (3.0, 2.0, 2.0)
ORIGIN = (-100.0, -80.0, 50.0)
BODY_CENTRE_I = 44  # body deliberately off the grid centre (47.5): the midline is measured, not assumed
GLAND_HALF = (5, 6, 7)  # z, y, x half sizes -> 10 x 12 x 14 = 1680 voxels = 20.16 cc


def _ct() -> Volume:
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    _, jj, ii = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu[:, :, :] = np.where((ii - BODY_CENTRE_I) ** 2 + (jj - 48) ** 2 <= 36**2, 40.0, -1000.0)
    info = SeriesInfo(
        series_instance_uid="1.2.826.0.1.3680043.8.498.1",
        study_instance_uid="1.2.3",
        frame_of_reference_uid="1.2.4",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        slice_sop_instance_uids=tuple(f"1.2.5.{k}" for k in range(SHAPE[0])),
        patient_position="HFS",
        patient_study_attrs={"PatientName": TEST_PATIENT_NAME, "PatientID": TEST_PATIENT_ID},
    )
    return Volume(hu, SPACING, ORIGIN, info)


def _box(centre_kji, half=GLAND_HALF) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    (k, j, i), (hk, hj, hi) = centre_kji, half
    m[k - hk : k + hk, j - hj : j + hj, i - hi : i + hi] = True
    return m


RIGHT_KJI = (20, 48, BODY_CENTRE_I - 22)  # low x: patient's right
LEFT_KJI = (20, 48, BODY_CENTRE_I + 22)


def _glands(left=None, right=None, **kw) -> dict[str, GlandMask]:
    left = _box(LEFT_KJI) if left is None else left
    right = _box(RIGHT_KJI) if right is None else right
    args = {"components_before": 1, "mean_probability": 0.9} | kw
    return {"Parotid_R": GlandMask("Parotid_R", right, **args), "Parotid_L": GlandMask("Parotid_L", left, **args)}


def _qa(glands, **kw) -> QAReport:
    return build_qa(
        _ct(),
        glands,
        model_name="parotid-unet3d",
        model_version="1.0.0",
        stage_times_s={"load": 1.5, "infer": 10.25},
        **kw,
    )


def _codes(report: QAReport) -> set[str]:
    return {f.code for f in report.reasons}


def test_good_case_is_ok_with_hand_checked_numbers():
    r = _qa(_glands())
    assert r.status == "ok" and r.reasons == []
    assert r.schema_version == "1.1"
    g = r.glands["Parotid_L"]
    assert g.voxel_count == 1680 and g.volume_cc == pytest.approx(20.16)
    # voxel centres: k 15..24, j 42..53, i 59..72 -> mean 19.5, 47.5, 65.5
    assert g.centroid_lps_mm == pytest.approx((-100 + 65.5 * 2, -80 + 47.5 * 2, 50 + 19.5 * 3))
    assert g.extent_min_lps_mm == pytest.approx((-100 + 59 * 2, -80 + 42 * 2, 50 + 15 * 3))
    assert g.extent_max_lps_mm == pytest.approx((-100 + 72 * 2, -80 + 53 * 2, 50 + 24 * 3))
    assert not g.touches_fov_edge and g.flags == []
    pair = r.pairs[0]
    assert pair.lr_volume_ratio == pytest.approx(1.0)
    lat = pair.laterality
    assert lat.passed and lat.left_on_left_side and lat.right_on_right_side
    assert lat.left_minus_right_x_mm == pytest.approx(44 * 2.0)
    assert lat.body_midline_x_mm == pytest.approx(-100 + BODY_CENTRE_I * 2.0)
    assert r.input.series_instance_uid == "1.2.826.0.1.3680043.8.498.1"
    assert r.input.num_slices == 40 and r.input.grid_shape_zyx == SHAPE
    assert r.input.spacing_mm_zyx == SPACING and r.input.origin_lps_mm == ORIGIN
    assert r.input.patient_position == "HFS"
    assert r.stage_times_s == {"load": 1.5, "infer": 10.25}
    assert r.model.name == "parotid-unet3d" and r.model.version == "1.0.0"
    assert r.summary_line() == "parotid-unet3d 1.0.0 | QA OK"


def test_swapped_glands_fail_laterality():
    r = _qa(_glands(left=_box(RIGHT_KJI), right=_box(LEFT_KJI)))
    assert r.status == "fail"
    assert {"laterality_swapped", "wrong_side_of_midline"} <= _codes(r)
    assert r.pairs[0].laterality.passed is False
    assert r.reasons[0].severity == "fail"
    assert "FAIL" in r.summary_line()


def test_gland_on_wrong_side_of_midline_fails_even_if_order_is_right():
    # both on the patient's left; Parotid_L is still left of Parotid_R, but Parotid_R crosses the midline
    r = _qa(_glands(left=_box((20, 48, BODY_CENTRE_I + 28)), right=_box((20, 48, BODY_CENTRE_I + 10))))
    assert r.status == "fail"
    assert _codes(r) == {"wrong_side_of_midline"}
    assert [f.gland for f in r.reasons] == ["Parotid_R"]
    lat = r.pairs[0].laterality
    assert lat.left_minus_right_x_mm is not None and lat.left_minus_right_x_mm > 0
    assert lat.left_on_left_side and not lat.right_on_right_side


def test_implausible_volume_gives_review():
    small = _box(LEFT_KJI, half=(2, 3, 3))  # 4*6*6 = 144 voxels = 1.728 cc
    r = _qa(_glands(left=small))
    assert r.status == "review"
    assert _codes(r) == {"volume_out_of_range", "lr_ratio_out_of_range"}
    assert r.glands["Parotid_L"].flags == ["volume_out_of_range"]
    assert r.pairs[0].lr_volume_ratio == pytest.approx(144 / 1680)
    assert r.pairs[0].laterality.passed


def test_empty_gland_fails_and_missing_gland_fails():
    r = _qa(_glands(right=np.zeros(SHAPE, dtype=bool)))
    assert r.status == "fail" and "empty_gland" in _codes(r)
    g = r.glands["Parotid_R"]
    assert g.empty and g.volume_cc == 0.0 and g.centroid_lps_mm is None
    assert r.pairs[0].lr_volume_ratio is None and r.pairs[0].laterality.passed is None
    only_left = {"Parotid_L": _glands()["Parotid_L"]}
    r = _qa(only_left)
    assert r.status == "fail" and _codes(r) == {"missing_gland"}


def test_fov_edge_components_and_probability_give_review():
    touching = _box((SHAPE[0] - 5, 48, BODY_CENTRE_I + 22))  # reaches the last (most superior) slice
    r = _qa(_glands(left=touching))
    assert r.status == "review" and _codes(r) == {"touches_fov_edge"}
    assert r.glands["Parotid_L"].fov_edges_touched == ["superior"]
    r = _qa(_glands(components_before=5, largest_component_fraction=0.5, mean_probability=0.4))
    assert r.status == "review"
    assert _codes(r) == {"too_many_components", "small_largest_component", "low_mean_probability"}


def test_thresholds_are_tunable_and_validated():
    assert _qa(_glands(), thresholds=QAThresholds(max_volume_cc=15.0)).status == "review"
    assert _qa(_glands(components_before=5), thresholds=QAThresholds(max_components_before=6)).status == "ok"
    with pytest.raises(ValidationError):
        QAThresholds(min_volume_cc=50, max_volume_cc=40)
    with pytest.raises(ValidationError):
        QAThresholds(max_volume_cc=-1)
    with pytest.raises(ValidationError):
        QAThresholds.model_validate({"unknown_limit": 3})


def test_no_body_gives_review_not_a_crash():
    ct = _ct()
    air = Volume(np.full(SHAPE, -1000.0, dtype=np.float32), ct.spacing_mm_zyx, ct.origin_lps, ct.info)
    r = build_qa(air, _glands(), model_name="m", model_version="1", stage_times_s={})
    assert r.status == "review" and _codes(r) == {"midline_unavailable"}


def test_reference_metrics():
    shifted = _box((20, 48, BODY_CENTRE_I + 22 + 2))  # 2 voxels (4 mm) along x: overlap 12 of 14 columns
    ref = {"Parotid_L": shifted, "parotid_r": _box(RIGHT_KJI), "Brainstem": np.zeros(SHAPE, dtype=bool)}
    r = _qa(_glands(), reference=ref)
    left = r.glands["Parotid_L"].reference
    assert left is not None and left.reference_roi == "Parotid_L"
    assert left.dice == pytest.approx(12 / 14) and left.iou == pytest.approx(12 / 16)
    assert left.hd95_mm == pytest.approx(4.0)
    assert left.volume_difference_cc == pytest.approx(0.0) and left.volume_difference_pct == pytest.approx(0.0)
    right = r.glands["Parotid_R"].reference
    assert right is not None and right.reference_roi == "parotid_r"  # case-insensitive match
    assert right.dice == 1.0 and right.hd95_mm == 0.0 and right.mean_surface_distance_mm == 0.0
    assert r.status == "ok"  # the reference informs, it does not change the status

    r = _qa(_glands(), reference={"Parotid_L": np.zeros(SHAPE, dtype=bool)})
    left = r.glands["Parotid_L"].reference
    assert left is not None
    assert left.dice == 0.0 and left.hd95_mm is None and left.mean_surface_distance_mm is None
    assert left.volume_difference_cc == pytest.approx(20.16) and left.volume_difference_pct is None
    assert r.glands["Parotid_R"].reference is None and any("Parotid_R" in n for n in r.notes)


def test_json_round_trip_and_no_phi(tmp_path):
    r = _qa(_glands(right=np.zeros(SHAPE, dtype=bool)), reference={"Parotid_R": _box(RIGHT_KJI)})
    path = tmp_path / "qa.json"
    write_qa_json(r, path)
    text = path.read_text()
    assert QAReport.model_validate_json(text) == r
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["schema_version"] == "1.1" and data["status"] == "fail"
    assert TEST_PATIENT_NAME not in text and TEST_PATIENT_ID not in text
    assert [p.name for p in tmp_path.iterdir()] == ["qa.json"]  # no temp file left behind


@pytest.mark.parametrize("patient", SAMPLE_PATIENTS)
def test_clinical_contours_of_sample_patients_pass_and_swapped_fail(patient):
    hu, spacing, pl, pr = load_sample_canonical(patient)
    nz, ny, nx = hu.shape
    ct = Volume(hu, spacing, (-(nx - 1) * spacing[2] / 2, -(ny - 1) * spacing[1] / 2, -300.0))
    index = {p["patient"]: p for p in json.loads((require_samples() / "index.json").read_text())}
    good = {"Parotid_L": GlandMask("Parotid_L", pl, 1, 0.9), "Parotid_R": GlandMask("Parotid_R", pr, 1, 0.9)}
    r = build_qa(ct, good, model_name="oracle", model_version="0", stage_times_s={})
    assert r.status == "ok", r.reasons
    assert r.glands["Parotid_L"].volume_cc == pytest.approx(index[patient]["parotid_l_cc"], abs=0.01)
    assert r.glands["Parotid_R"].volume_cc == pytest.approx(index[patient]["parotid_r_cc"], abs=0.01)
    swapped = {"Parotid_L": GlandMask("Parotid_L", pr, 1, 0.9), "Parotid_R": GlandMask("Parotid_R", pl, 1, 0.9)}
    r = build_qa(ct, swapped, model_name="oracle", model_version="0", stage_times_s={})
    assert r.status == "fail" and "laterality_swapped" in _codes(r)
