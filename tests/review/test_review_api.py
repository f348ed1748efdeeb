"""The review API on a real embedded-mode app with the oracle bundle (known masks): the viewer's NIfTI files sit
on the CT grid with the right laterality; revisions (new RTSTRUCT, 409 when stale, idempotent repeat); decisions
(idempotent, final, audit log without patient data); owner scoping; the UI is served at /ui."""

from __future__ import annotations

import gzip
import io
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from service.review.nifti import ras_to_zyx
from tests.bundle_factory import oracle_phantom
from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.service.conftest import KEY_ALICE, KEY_BOB, SERIES_SHAPE_ZYX, auth, wait_for_job


def _nifti(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def _nifti_upload(labels_zyx: np.ndarray, like: nib.Nifti1Image) -> bytes:
    from service.review.nifti import zyx_to_ras

    img = nib.Nifti1Image(zyx_to_ras(labels_zyx.astype(np.uint8)), like.affine)
    return img.to_bytes()


@pytest.fixture
def done_job(embedded_client, ct_series):
    r = embedded_client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
    assert r.status_code == 202, r.text
    job = wait_for_job(embedded_client, r.json()["id"], KEY_ALICE)
    assert job["state"] == "succeeded", job
    return job


def test_viewer_data_on_the_ct_grid_with_known_masks(embedded_client, done_job):
    client, job_id = embedded_client, done_job["id"]
    review = client.get(f"/v1/jobs/{job_id}/review", headers=auth(KEY_ALICE))
    assert review.status_code == 200, review.text
    body = review.json()
    assert body["route"] == "http" and body["latest_revision"] == 0 and body["decision"] is None
    assert body["delivery"]["policy"] == "none" and body["mark_approved"] is False
    assert body["shape_zyx"] == list(SERIES_SHAPE_ZYX)
    glands = {g["name"]: g for g in body["glands"]}
    assert set(glands) == {"Parotid_L", "Parotid_R"}

    ct = client.get(body["files"]["ct"], headers=auth(KEY_ALICE))
    assert ct.status_code == 200 and ct.headers["content-type"] == "application/gzip"
    ct_img = _nifti(ct.content)
    hu_expected, masks_expected = oracle_phantom(SERIES_SHAPE_ZYX)
    hu = ras_to_zyx(np.asanyarray(ct_img.dataobj))
    assert hu.shape == SERIES_SHAPE_ZYX and np.abs(hu - hu_expected).max() <= 1
    # RAS voxel order with a diagonal affine: +i toward the patient's right
    assert np.allclose(np.diag(ct_img.affine)[:3], [4.0, 4.0, 2.5])
    assert nib.aff2axcodes(ct_img.affine) == ("R", "A", "S")

    masks = client.get(body["files"]["masks"], headers=auth(KEY_ALICE))
    labels = ras_to_zyx(np.asanyarray(_nifti(masks.content).dataobj))
    for name, expected in masks_expected.items():
        assert np.array_equal(labels == glands[name]["label"], expected), name
    # the patient's left gland lies at larger RAS-left (smaller RAS x) than the right one in world coordinates
    aff = ct_img.affine
    data = np.asanyarray(_nifti(masks.content).dataobj)
    x_of = {n: (aff @ [*np.argwhere(data == g["label"]).mean(axis=0), 1])[0] for n, g in glands.items()}
    assert x_of["Parotid_L"] < x_of["Parotid_R"]  # RAS x: +right, so the left gland has the smaller x

    # another key sees none of it
    for path in (f"/v1/jobs/{job_id}/review", body["files"]["ct"], body["files"]["masks"]):
        assert client.get(path, headers=auth(KEY_BOB)).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/review").status_code == 401
    listing = client.get("/v1/review/jobs", headers=auth(KEY_BOB)).json()["jobs"]
    assert all(j["job"]["id"] != job_id for j in listing)
    mine = client.get("/v1/review/jobs", headers=auth(KEY_ALICE)).json()["jobs"]
    assert [j["job"]["id"] for j in mine] == [job_id] and mine[0]["route"] == "http"


def test_revisions_stale_idempotent_and_rtstruct(embedded_client, done_job):
    client, job_id = embedded_client, done_job["id"]
    body = client.get(f"/v1/jobs/{job_id}/review", headers=auth(KEY_ALICE)).json()
    glands = {g["name"]: g for g in body["glands"]}
    masks_img = _nifti(client.get(body["files"]["masks"], headers=auth(KEY_ALICE)).content)
    labels = ras_to_zyx(np.asanyarray(masks_img.dataobj)).astype(np.uint8)
    original = pydicom.dcmread(io.BytesIO(client.get(f"/v1/jobs/{job_id}/rtstruct", headers=auth(KEY_ALICE)).content))

    lab_l = glands["Parotid_L"]["label"]
    edited = labels.copy()
    k = int(np.argwhere(labels == lab_l)[:, 0].mean())
    edited[k, 5:8, 40:45] = lab_l  # 15 voxels added to the left gland, away from it
    edited[labels == lab_l] = (
        np.where(np.arange(SERIES_SHAPE_ZYX[2]) < 44, lab_l, 0)[None, None, :]
        .repeat(SERIES_SHAPE_ZYX[0], 0)
        .repeat(SERIES_SHAPE_ZYX[1], 1)[labels == lab_l]
    )
    removed = int(np.count_nonzero((labels == lab_l) & (edited != lab_l)))
    added = int(np.count_nonzero((edited == lab_l) & (labels != lab_l)))
    assert removed > 0 and added == 15
    data = {"base_revision": "0", "gland": "Parotid_L"}
    files = {"mask": ("mask.nii", _nifti_upload(edited, masks_img), "application/octet-stream")}
    r = client.post(f"/v1/jobs/{job_id}/revisions", data=data, files=files, headers=auth(KEY_ALICE))
    assert r.status_code == 201, r.text
    rev = r.json()["revision"]
    assert rev["number"] == 1 and rev["base"] == 0 and rev["edited"] == ["Parotid_L"]
    assert rev["voxels_added"] == {"Parotid_L": added} and rev["voxels_removed"] == {"Parotid_L": removed}

    # the same edit again: the saved revision, not a new one; a different edit on the old base: 409
    again = client.post(f"/v1/jobs/{job_id}/revisions", data=data, files=files, headers=auth(KEY_ALICE))
    assert again.status_code == 200 and again.json()["existing"] is True and again.json()["revision"]["number"] == 1
    other = edited.copy()
    other[k, 5:8, 10:12] = lab_l
    stale = client.post(
        f"/v1/jobs/{job_id}/revisions",
        data=data,
        files={"mask": ("m.nii", _nifti_upload(other, masks_img), "application/octet-stream")},
        headers=auth(KEY_ALICE),
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "REVISION_STALE"
    # bob cannot revise alice's job; garbage and wrong grids are typed 4xx
    assert client.post(f"/v1/jobs/{job_id}/revisions", data=data, files=files, headers=auth(KEY_BOB)).status_code == 404
    bad = client.post(
        f"/v1/jobs/{job_id}/revisions",
        data={"base_revision": "1"},
        files={"mask": ("x.nii", b"not a nifti", "application/octet-stream")},
        headers=auth(KEY_ALICE),
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BAD_UPLOAD"
    small = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)).to_bytes()
    wrong = client.post(
        f"/v1/jobs/{job_id}/revisions",
        data={"base_revision": "1"},
        files={"mask": ("x.nii", small, "application/octet-stream")},
        headers=auth(KEY_ALICE),
    )
    assert wrong.status_code == 400 and "CT grid" in wrong.json()["error"]["message"]

    # the revision's RTSTRUCT: same references, ROI numbers and colours; new SOP instance; SEMIAUTOMATIC edited ROI
    rs = client.get(f"/v1/jobs/{job_id}/revisions/1/rtstruct", headers=auth(KEY_ALICE))
    assert rs.status_code == 200
    new = pydicom.dcmread(io.BytesIO(rs.content))
    assert new.SOPInstanceUID != original.SOPInstanceUID
    assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    assert new.ReferencedFrameOfReferenceSequence == original.ReferencedFrameOfReferenceSequence
    assert new.ApprovalStatus == "UNAPPROVED"
    algo = {r.ROIName: (r.ROINumber, r.ROIGenerationAlgorithm) for r in new.StructureSetROISequence}
    algo0 = {r.ROIName: (r.ROINumber, r.ROIGenerationAlgorithm) for r in original.StructureSetROISequence}
    assert algo["Parotid_L"] == (algo0["Parotid_L"][0], "SEMIAUTOMATIC")
    assert algo["Parotid_R"] == algo0["Parotid_R"]
    colors = lambda ds: {int(c.ReferencedROINumber): list(c.ROIDisplayColor) for c in ds.ROIContourSequence}  # noqa: E731
    assert colors(new) == colors(original)
    # the new RTSTRUCT rasterizes back to exactly the edited mask (independent reader: the pipeline's)
    from service.pipeline.rtstruct_read import read_rtstruct_masks
    from service.review.rtstruct_revision import geometry_volume
    from service.review.store import ReviewCase

    case = ReviewCase(client.app.state.jobs.store.job_path(job_id), job_id)
    back = read_rtstruct_masks(case.rtstruct_path(1), geometry_volume(case.geometry()), ["Parotid_L", "Parotid_R"])
    assert np.array_equal(back["Parotid_L"], edited == lab_l)
    assert np.array_equal(back["Parotid_R"], labels == glands["Parotid_R"]["label"])
    # the original is kept
    assert pydicom.dcmread(case.rtstruct_path(0)).SOPInstanceUID == original.SOPInstanceUID
    listing = client.get("/v1/review/jobs", headers=auth(KEY_ALICE)).json()["jobs"]
    assert listing[0]["revisions"] == 1


def test_decisions_idempotent_final_and_audited(embedded_client, done_job, caplog):
    client, job_id = embedded_client, done_job["id"]
    decide = lambda body, key=KEY_ALICE: client.post(f"/v1/jobs/{job_id}/decision", json=body, headers=auth(key))  # noqa: E731
    body = {"decision": "approved", "reviewer": "Dr Reviewer", "comment": "fine", "revision": 0}
    assert decide(body, KEY_BOB).status_code == 404
    first = decide(body)
    assert first.status_code == 201, first.text
    d = first.json()["decision"]
    assert d["decision"] == "approved" and d["reviewer"] == "Dr Reviewer" and d["revision"] == 0
    assert d["approved_sop_instance_uid"] is None  # approval marking is off by default
    again = decide(body)
    assert again.status_code == 200 and again.json()["existing"] is True
    assert again.json()["decision"]["decided_at"] == d["decided_at"]
    flip = decide({**body, "decision": "rejected"})
    assert flip.status_code == 409 and flip.json()["error"]["code"] == "REVIEW_DECIDED"
    # no revision after a decision
    record = client.get(f"/v1/jobs/{job_id}", headers=auth(KEY_ALICE))
    assert record.status_code == 200
    stored = client.app.state.jobs.store.get(job_id)
    assert stored.review and stored.review["decision"] == "approved" and stored.review["reviewer"] == "Dr Reviewer"
    assert stored.review["comment"] == "fine" and stored.review["decided_at"]
    audit = client.app.state.review_audit.read()
    assert [a["event"] for a in audit] == ["decision"]
    assert audit[0]["job_id"] == job_id and audit[0]["reviewer"] == "Dr Reviewer" and audit[0]["has_comment"] is True
    text = client.app.state.review_audit.path.read_text() + caplog.text
    assert TEST_PATIENT_NAME not in text and TEST_PATIENT_ID not in text and "fine" not in json.dumps(audit)
    # an RTSTRUCT stays UNAPPROVED
    rs = pydicom.dcmread(io.BytesIO(client.get(f"/v1/jobs/{job_id}/rtstruct", headers=auth(KEY_ALICE)).content))
    assert rs.ApprovalStatus == "UNAPPROVED"


def test_stale_decision_and_approval_marking(embedded_client, done_job):
    from service.review.settings import ReviewSettings
    from service.review.store import ReviewCase

    client, job_id = embedded_client, done_job["id"]
    client.app.state.review_settings = ReviewSettings(mark_approved=True)
    body = client.get(f"/v1/jobs/{job_id}/review", headers=auth(KEY_ALICE)).json()
    masks_img = _nifti(client.get(body["files"]["masks"], headers=auth(KEY_ALICE)).content)
    labels = ras_to_zyx(np.asanyarray(masks_img.dataobj)).astype(np.uint8)
    labels[labels == 1] = 0  # erase the first structure entirely
    r = client.post(
        f"/v1/jobs/{job_id}/revisions",
        data={"base_revision": "0"},
        files={"mask": ("m.nii", _nifti_upload(labels, masks_img), "application/octet-stream")},
        headers=auth(KEY_ALICE),
    )
    assert r.status_code == 201, r.text
    stale = client.post(
        f"/v1/jobs/{job_id}/decision",
        json={"decision": "approved", "reviewer": "R", "revision": 0},
        headers=auth(KEY_ALICE),
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "REVISION_STALE"
    ok = client.post(
        f"/v1/jobs/{job_id}/decision",
        json={"decision": "approved", "reviewer": "Rev^Iewer", "revision": 1},
        headers=auth(KEY_ALICE),
    )
    assert ok.status_code == 201, ok.text
    case = ReviewCase(client.app.state.jobs.store.job_path(job_id), job_id)
    approved = pydicom.dcmread(case.final_rtstruct())
    rev1 = pydicom.dcmread(case.rtstruct_path(1))
    assert approved.ApprovalStatus == "APPROVED" and str(approved.ReviewerName) == "Rev^Iewer"
    assert approved.ReviewDate and approved.ReviewTime
    assert approved.SOPInstanceUID == ok.json()["decision"]["approved_sop_instance_uid"] != rev1.SOPInstanceUID
    assert rev1.ApprovalStatus == "UNAPPROVED"


def test_ui_is_served_offline_ready(embedded_client):
    client = embedded_client
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "api.js", "viewer.js", "style.css", "vendor/niivue/niivue.js", "vendor/niivue/LICENSE"):
        assert client.get(f"/ui/{asset}").status_code == 200, asset
    # nothing on the page points outside the service (no CDN)
    for asset in ("", "app.js", "api.js", "viewer.js", "style.css"):
        assert "http://" not in client.get(f"/ui/{asset}").text and "https://" not in client.get(f"/ui/{asset}").text
    schema = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/jobs/{job_id}/review",
        "/v1/jobs/{job_id}/revisions",
        "/v1/jobs/{job_id}/decision",
        "/v1/review/jobs",
    ):
        assert path in schema, path
    assert not any(p.startswith("/ui") for p in schema)


def test_export_corrected_cases_for_retraining(embedded_client, done_job, tmp_path):
    """Approved corrected cases -> the NIfTI layout training.data.nifti reads, with the corrected masks."""
    from service.review.export import export_corrected
    from training.data.nifti import read_case

    client, job_id = embedded_client, done_job["id"]
    store = client.app.state.jobs.store
    assert export_corrected(store, tmp_path / "none") == []  # undecided: nothing
    body = client.get(f"/v1/jobs/{job_id}/review", headers=auth(KEY_ALICE)).json()
    glands = {g["name"]: g["label"] for g in body["glands"]}
    masks_img = _nifti(client.get(body["files"]["masks"], headers=auth(KEY_ALICE)).content)
    labels = ras_to_zyx(np.asanyarray(masks_img.dataobj)).astype(np.uint8)
    labels[labels == glands["Parotid_R"]] = 0
    labels[20, 10:14, 20:30] = glands["Parotid_R"]
    r = client.post(
        f"/v1/jobs/{job_id}/revisions",
        data={"base_revision": "0"},
        files={"mask": ("m.nii", _nifti_upload(labels, masks_img), "application/octet-stream")},
        headers=auth(KEY_ALICE),
    )
    assert r.status_code == 201, r.text
    ok = client.post(
        f"/v1/jobs/{job_id}/decision",
        json={"decision": "approved", "reviewer": "R", "revision": 1},
        headers=auth(KEY_ALICE),
    )
    assert ok.status_code == 201
    assert export_corrected(store, tmp_path / "bob", owner="bob") == []
    manifest = export_corrected(store, tmp_path / "out")
    assert [m["case"] for m in manifest] == [job_id] and manifest[0]["revision"] == 1
    assert manifest[0]["voxels_added"] == {"Parotid_R": 40}
    case = read_case(tmp_path / "out" / job_id)
    hu_expected, _ = oracle_phantom(SERIES_SHAPE_ZYX)
    assert case.hu_zyx.shape == SERIES_SHAPE_ZYX and np.abs(case.hu_zyx - hu_expected).max() <= 1
    assert np.array_equal(case.masks["Parotid_R"], labels == glands["Parotid_R"])
    assert np.array_equal(case.masks["Parotid_L"], labels == glands["Parotid_L"])


def test_reference_and_uncertainty_overlays(embedded_client, done_job, ct_series):
    """A job given a reference RTSTRUCT serves it as a label map on the CT grid; the QA stage's uncertainty map
    (output/uncertainty.nii.gz) is announced and served on the CT grid, values in [0, 1]."""
    client, job_id = embedded_client, done_job["id"]
    body = client.get(f"/v1/jobs/{job_id}/review", headers=auth(KEY_ALICE)).json()
    assert body["files"]["reference"] is None
    assert client.get(f"/v1/jobs/{job_id}/review/reference.nii.gz", headers=auth(KEY_ALICE)).status_code == 404
    rtstruct = client.get(f"/v1/jobs/{job_id}/rtstruct", headers=auth(KEY_ALICE)).content
    ref = [("reference", ("clinical_rs.dcm", rtstruct, "application/dicom"))]
    r = client.post("/v1/jobs", files=ct_series.parts() + ref, headers=auth(KEY_ALICE))
    assert r.status_code == 202, r.text
    with_ref = wait_for_job(client, r.json()["id"], KEY_ALICE)
    assert with_ref["state"] == "succeeded"
    body2 = client.get(f"/v1/jobs/{with_ref['id']}/review", headers=auth(KEY_ALICE)).json()
    assert body2["files"]["reference"]
    ref_labels = ras_to_zyx(
        np.asanyarray(_nifti(client.get(body2["files"]["reference"], headers=auth(KEY_ALICE)).content).dataobj)
    )
    masks = ras_to_zyx(
        np.asanyarray(_nifti(client.get(body2["files"]["masks"], headers=auth(KEY_ALICE)).content).dataobj)
    )
    assert ref_labels.any() and np.array_equal(ref_labels, masks)  # the reference is this result's own RTSTRUCT

    out = client.app.state.jobs.store.output_path(job_id, "uncertainty.nii.gz")
    assert out.is_file(), "the QA stage writes the uncertainty map"
    assert body["files"]["uncertainty"] == f"/v1/jobs/{job_id}/review/uncertainty.nii.gz"
    got = client.get(body["files"]["uncertainty"], headers=auth(KEY_ALICE))
    assert got.status_code == 200 and got.content == out.read_bytes()
    unc = _nifti(got.content)
    assert unc.shape == SERIES_SHAPE_ZYX[::-1] and np.allclose(
        unc.affine, _nifti(client.get(body["files"]["ct"], headers=auth(KEY_ALICE)).content).affine
    )
    values = np.asanyarray(unc.dataobj)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert client.get(body["files"]["uncertainty"], headers=auth(KEY_BOB)).status_code == 404
