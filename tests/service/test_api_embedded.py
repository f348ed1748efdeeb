"""Embedded mode (no Redis): submit, poll, fetch, idempotency, isolation between keys, delete, models, health,
metrics, and no patient name or ID in any log line."""

from __future__ import annotations

import io
import logging

import pydicom

from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.service.conftest import KEY_ALICE, KEY_BOB, ORACLE_SPEC, auth, wait_for_job


def test_job_end_to_end_idempotent_and_isolated(embedded_client, ct_series, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    client = embedded_client
    r = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["schema_version"] == "1" and job["state"] in ("queued", "running")
    assert job["existing"] is False and job["model"] == ORACLE_SPEC
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]

    done = wait_for_job(client, job["id"], KEY_ALICE)
    assert done["state"] == "succeeded", done
    assert done["progress"] == 1.0 and done["qa_status"] == "ok" and done["error"] is None
    assert done["attempts"] == 1 and done["started_at"] and done["finished_at"]

    rs = client.get(done["links"]["rtstruct"], headers=auth(KEY_ALICE))
    assert rs.status_code == 200 and rs.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(rs.content))
    assert ds.Modality == "RTSTRUCT"
    assert sorted(r.ROIName for r in ds.StructureSetROISequence) == ["Parotid_L", "Parotid_R"]
    qa = client.get(done["links"]["qa"], headers=auth(KEY_ALICE))
    assert qa.status_code == 200 and qa.json()["status"] == "ok" and qa.json()["model"]["name"] == "oracle"
    png = client.get(done["links"]["preview"], headers=auth(KEY_ALICE))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    unc = client.get(done["links"]["uncertainty"], headers=auth(KEY_ALICE))
    assert unc.status_code == 200 and unc.headers["content-type"] == "application/gzip"
    assert unc.content[:2] == b"\x1f\x8b" and done["links"]["uncertainty"].endswith("/uncertainty.nii.gz")
    assert set(done["qa_glands"]) == {"Parotid_L", "Parotid_R"}
    assert all(g["status"] == "ok" and g["flags"] == [] for g in done["qa_glands"].values())

    # the inputs are deleted once the job ends; the outputs stay
    job_dir = client.app.state.jobs.store.job_path(job["id"])
    assert not (job_dir / "input").exists()
    outputs = sorted(p.name for p in (job_dir / "output").iterdir())
    assert outputs == ["preview.png", "qa.json", "rtstruct.dcm", "uncertainty.nii.gz"]

    # idempotency: the same series (as files or as a zip) and model -> the existing job, nothing recomputed
    again = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
    assert again.status_code == 200 and again.json()["id"] == job["id"] and again.json()["existing"] is True
    zipped = client.post(
        "/v1/jobs", files=[("files", ("series.zip", ct_series.zip_bytes(), "application/zip"))], headers=auth(KEY_ALICE)
    )
    assert zipped.status_code == 200 and zipped.json()["id"] == job["id"]

    # isolation: bob neither sees nor touches alice's job; his own submission is his own job
    for method, path in [
        ("get", done["links"]["self"]),
        ("get", done["links"]["rtstruct"]),
        ("get", done["links"]["qa"]),
        ("get", done["links"]["preview"]),
        ("delete", done["links"]["self"]),
    ]:
        denied = client.request(method, path, headers=auth(KEY_BOB))
        assert denied.status_code == 404 and denied.json()["error"]["code"] == "JOB_NOT_FOUND"
    bobs = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_BOB))
    assert bobs.status_code == 202 and bobs.json()["id"] != job["id"]
    listed = client.get("/v1/jobs", headers=auth(KEY_ALICE)).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    wait_for_job(client, bobs.json()["id"], KEY_BOB)

    # metrics count the jobs and the stage durations
    metrics = client.get("/metrics", headers=auth(KEY_ALICE)).text
    assert 'parotid_jobs{state="succeeded"} 2.0' in metrics
    assert 'parotid_stage_duration_seconds_count{stage="total"} 2.0' in metrics
    assert 'parotid_jobs_submitted_total{result="existing"} 2.0' in metrics
    assert "parotid_queue_depth 0.0" in metrics

    # delete: gone for good, and a new submission makes a new job
    assert client.delete(done["links"]["self"], headers=auth(KEY_ALICE)).status_code == 204
    assert client.get(done["links"]["self"], headers=auth(KEY_ALICE)).status_code == 404
    assert not job_dir.exists()
    fresh = client.post("/v1/jobs", files=ct_series.parts(), headers=auth(KEY_ALICE))
    assert fresh.status_code == 202 and fresh.json()["id"] != job["id"]
    wait_for_job(client, fresh.json()["id"], KEY_ALICE)

    # no patient name or ID in any log record or console output of the whole run
    out, err = capfd.readouterr()
    text = "\n".join(r.getMessage() for r in caplog.records) + out + err
    assert "job " in text  # the logs were captured at all
    for secret in (TEST_PATIENT_NAME, TEST_PATIENT_ID, "Secretname", "Testpatient"):
        assert secret not in text


def test_auth_required_everywhere_but_health(embedded_client):
    client = embedded_client
    for method, path in [
        ("get", "/v1/jobs"),
        ("post", "/v1/jobs"),
        ("get", "/v1/models"),
        ("get", "/metrics"),
        ("get", "/v1/jobs/0123456789abcdef0123456789abcdef"),
        ("delete", "/v1/jobs/0123456789abcdef0123456789abcdef"),
    ]:
        for headers in ({}, auth("not-a-key"), {"Authorization": "Basic YWxpY2U6eA=="}):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["code"] == "UNAUTHORIZED" and r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/healthz").json() == {"schema_version": "1", "status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and body["mode"] == "embedded"
    assert set(body["checks"]) == {"queue", "model", "disk"} and body["checks"]["model"]["detail"].startswith("oracle")


def test_models_and_unknown_job(embedded_client):
    client = embedded_client
    models = client.get("/v1/models", headers=auth(KEY_ALICE)).json()
    assert models["models"] == [{"name": "oracle", "version": "1.0.0", "spec": ORACLE_SPEC, "default": True}]
    for job_id in ("0123456789abcdef0123456789abcdef", "..%2F..%2Fetc", "x" * 32):
        r = client.get(f"/v1/jobs/{job_id}", headers=auth(KEY_ALICE))
        assert r.status_code == 404, r.text


def test_readyz_reports_a_broken_model(embedded_client):
    store = embedded_client.app.state.settings.model_store
    plan = store / "oracle" / "1.0.0" / "metrics.json"
    original = plan.read_bytes()
    try:
        plan.write_bytes(original + b" ")
        embedded_client.app.state.model_check._cached = None
        r = embedded_client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["model"]["ok"] is False
        assert "MODEL_INTEGRITY" in r.json()["checks"]["model"]["detail"]
    finally:
        plan.write_bytes(original)
