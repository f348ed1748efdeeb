"""Patient and study values copied into the RTSTRUCT fit their VR, and the QA report flags it (issue 16.8)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from service.pipeline.rtstruct_values import conform_values
from tests import dicom_variants as dv
from tests.bundle_factory import build_oracle_bundle, oracle_phantom
from tests.conftest import require_tool
from tests.dicom_factory import write_ct_series
from tests.pipeline._rtstruct_helpers import run_dciodvfy

LONG_NAME = "Verylongname^" + "X" * 9992  # 10,005 characters


def test_conform_values_per_vr():
    values, changed = conform_values(
        {
            "PatientName": LONG_NAME + "=Ideographic",
            "PatientID": "ID-1",
            "AccessionNumber": "A" * 40,  # SH: 16
            "StudyTime": "not a time",  # TM
            "PatientSex": "f",  # CS: upper case only
            "StudyDescription": "Head\x00 neck\nCT",  # LO: control characters
            "StudyDate": "20240131",
        }
    )
    assert len(str(values["PatientName"]).split("=")[0]) == 64 and str(values["PatientName"]).endswith("=Ideographic")
    assert values["AccessionNumber"] == "A" * 16 and values["StudyTime"] == "" and values["PatientSex"] == ""
    assert values["StudyDescription"] == "Head neckCT" and values["StudyDate"] == "20240131"
    assert sorted(changed) == ["AccessionNumber", "PatientName", "PatientSex", "StudyDescription", "StudyTime"]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from service.pipeline.segment import segment_series

    root = tmp_path_factory.mktemp("longname")
    store = root / "store"
    build_oracle_bundle(store, promote=True)
    hu, _ = oracle_phantom((20, 48, 48))
    files = write_ct_series(root / "ct", hu, (2.5, 4.0, 4.0), (-94.0, -94.0, -60.0), "HFS", patient_name=LONG_NAME)
    dv.set_attrs(files, AccessionNumber="B" * 40, StudyTime="later")
    rs, qa = root / "rs.dcm", root / "qa.json"
    segment_series(root / "ct", rtstruct_path=rs, qa_path=qa, store=store)
    return rs, json.loads(qa.read_text())


def test_over_long_patient_name_is_truncated_in_the_rtstruct_and_flagged(segmented):
    rs, qa = segmented
    ds = pydicom.dcmread(rs)
    assert str(ds.PatientName) == LONG_NAME[:64]
    assert ds.AccessionNumber == "B" * 16 and ds.StudyTime == ""
    flags = [f for f in qa["reasons"] if f["code"] == "patient_values_conformed"]
    assert qa["status"] != "ok" and len(flags) == 1
    assert "(0010,0010) PatientName" in flags[0]["message"] and "XXXX" not in flags[0]["message"]


def test_rtstruct_from_a_ct_with_over_long_values_passes_dciodvfy(segmented):
    require_tool("dciodvfy")
    rc, errors, _ = run_dciodvfy(segmented[0])
    assert errors == [] and rc == 0, errors
