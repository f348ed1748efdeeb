"""A real PACS as the peer: Orthanc (Debian package) on loopback holds a study with a CT series, an earlier
RTSTRUCT and a secondary-capture dose page; Orthanc sends the whole study to the listener through its REST API
(``/modalities/{id}/store``) with its default, non-permissive negotiation; the job succeeds and the RTSTRUCT comes
back into Orthanc under the same study with every reference resolving there."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.listener.conftest import LISTENER_AE, audit, jobs_for_series, wait_for
from tests.listener.orthanc import ORTHANC_AE, Orthanc
from tests.study_factory import write_study_companions


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator:
    started: list[Orthanc] = []

    def make() -> Orthanc:
        pacs = Orthanc(tmp_path / f"orthanc{len(started)}", {})
        started.append(pacs)
        return pacs

    yield make
    for pacs in started:
        pacs.stop()


def _our_rtstruct(pacs: Orthanc, study_id: str) -> list[str]:
    """Orthanc ids of the instances in ``study_id`` that this service made (Manufacturer parotid-seg)."""
    found = []
    for series in pacs.get(f"/studies/{study_id}/series"):
        tags = series["MainDicomTags"]
        if tags.get("Modality") == "RTSTRUCT" and tags.get("Manufacturer") == "parotid-seg":
            found.extend(series["Instances"])
    return found


def test_orthanc_sends_a_whole_study_and_gets_the_rtstruct_back_under_the_same_study(
    start_listener, orthanc_factory, make_series, job_service, tmp_path
):
    pacs = orthanc_factory()  # ports chosen, not started: the listener needs its DICOM port first
    peer = {"ae_title": ORTHANC_AE, "return_mode": "sender", "return_port": pacs.dicom_port}
    listener = start_listener(peers=[peer], quiet_time_s=120)  # completion from the association release
    pacs.modalities["parotid"] = [LISTENER_AE, "127.0.0.1", listener.port]
    pacs.start()

    series = make_series()
    companions = write_study_companions(tmp_path / "others", series.files[0], ("rtstruct", "sc"))
    uploaded = pacs.upload([*series.files, *companions])
    assert all(u["Status"] == "Success" for u in uploaded), uploaded
    (study_id,) = {u["ParentStudy"] for u in uploaded}
    assert len(pacs.get(f"/studies/{study_id}/instances")) == 50

    # the whole study, as a user's "Send to DICOM modality" does; Orthanc answers 500 if any instance fails
    pacs.post("/modalities/parotid/store", {"Resources": [study_id], "Synchronous": True})

    (assoc,) = wait_for(lambda: [r for r in audit(listener, "association") if r["n_stored"]], 30, "the send")
    assert assoc["calling_ae"] == ORTHANC_AE and assoc["n_stored"] == 48 and assoc["n_refused"] == 0
    assert assoc["dropped"] == {"RT Structure Set Storage": 1, "Secondary Capture Image Storage": 1}
    (job,) = wait_for(lambda: jobs_for_series(job_service, series.series_uid), 30, "the job")
    wait_for(lambda: str(job_service.get_job(job.id).state) == "succeeded", 120, "the job to succeed")

    (ours,) = wait_for(lambda: _our_rtstruct(pacs, study_id), 60, "the RTSTRUCT back in Orthanc's study")
    (delivered,) = wait_for(lambda: audit(listener, "delivered"), 10, "the delivery record")
    assert delivered["destination"] == f"{ORTHANC_AE}@127.0.0.1:{pacs.dicom_port}"
    assert pacs.get(f"/instances/{ours}/study")["ID"] == study_id
    ds = pydicom.dcmread(io.BytesIO(pacs.raw("GET", f"/instances/{ours}/file")))
    assert {roi.ROIName for roi in ds.StructureSetROISequence} == {"Parotid_L", "Parotid_R"}

    # every reference resolves in the PACS: frame of reference, study, series, each contour's image
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    ct_tags = pacs.get(f"/instances/{uploaded[0]['ID']}/simplified-tags")
    assert frame.FrameOfReferenceUID == ct_tags["FrameOfReferenceUID"] == ds.FrameOfReferenceUID
    study_ref = frame.RTReferencedStudySequence[0]
    assert _lookup(pacs, study_ref.ReferencedSOPInstanceUID) == ("Study", study_id)
    series_ref = study_ref.RTReferencedSeriesSequence[0]
    kind, series_id = _lookup(pacs, series_ref.SeriesInstanceUID)
    assert kind == "Series" and pacs.get(f"/series/{series_id}")["ParentStudy"] == study_id
    ct_instances = set(pacs.get(f"/series/{series_id}")["Instances"])
    listed = [item.ReferencedSOPInstanceUID for item in series_ref.ContourImageSequence]
    assert len(listed) == 48
    for uid in listed:
        kind, instance_id = _lookup(pacs, uid)
        assert kind == "Instance" and instance_id in ct_instances
    n_contours = 0
    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in listed
            n_contours += 1
    assert n_contours > 0


def _lookup(pacs: Orthanc, uid: str) -> tuple[str, str]:
    """Orthanc's ``/tools/lookup``: the (Type, ID) of the one resource with this DICOM UID."""
    (hit,) = pacs.post("/tools/lookup", uid.encode())
    return hit["Type"], hit["ID"]
