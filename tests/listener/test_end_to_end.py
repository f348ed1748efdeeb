"""End to end with real peers: DCMTK storescu sends a CT series, the listener runs the job through the service's
job store and embedded dispatcher, and the RTSTRUCT comes back at a DCMTK storescp, where dciodvfy accepts it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pydicom
from pydicom.uid import RTStructureSetStorage
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME
from tests.listener.conftest import (
    LISTENER_AE,
    SCANNER_AE,
    audit,
    jobs_for_series,
    read_json,
    run_tool,
    storescu,
)
from tests.support.net import free_port, wait_for

PHI_STRINGS = [TEST_PATIENT_NAME, TEST_PATIENT_ID, *TEST_PATIENT_NAME.split("^")]


def referenced_series_uid(ds: pydicom.Dataset) -> str:
    """(3006,0014) RT Referenced Series Sequence > (0020,000E) Series Instance UID of the first referenced study."""
    study = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    return str(study.RTReferencedSeriesSequence[0].SeriesInstanceUID)


def assert_no_phi(*texts: str) -> None:
    for text in texts:
        for phi in PHI_STRINGS:
            assert phi not in text, f"patient data {phi!r} found in a log"


def sender_peer(ae: str, port: int, return_ae: str) -> dict:
    return {"ae_title": ae, "return_mode": "sender", "return_port": port, "return_ae_title": return_ae}


def test_storescu_series_comes_back_as_rtstruct_at_storescp(
    start_listener, storescp_factory, make_series, job_service, caplog
):
    caplog.set_level(logging.INFO)
    tps = storescp_factory("TPS")
    # quiet time far away: completion must come from the association release
    listener = start_listener(peers=[sender_peer(SCANNER_AE, tps.port, "TPS")], quiet_time_s=120)
    series = make_series()
    sent = storescu(listener.port, series.files)
    assert sent.returncode == 0, sent.stderr

    received = wait_for(tps.received, 120, "the RTSTRUCT at storescp")
    assert len(received) == 1
    ds = pydicom.dcmread(received[0])
    assert ds.SOPClassUID == RTStructureSetStorage and ds.Modality == "RTSTRUCT"
    assert {roi.ROIName for roi in ds.StructureSetROISequence} == {"Parotid_L", "Parotid_R"}
    assert referenced_series_uid(ds) == series.series_uid
    check = run_tool("dciodvfy", str(received[0]))
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors

    (assoc,) = [r for r in audit(listener, "association") if r["n_stored"]]
    assert assoc["calling_ae"] == SCANNER_AE and assoc["called_ae"] == LISTENER_AE
    assert assoc["peer_host"] == "127.0.0.1" and assoc["outcome"] == "released"
    assert assoc["n_stored"] == len(series.files) == 48 and assoc["series_uids"] == [series.series_uid]
    (ready,) = audit(listener, "series_ready")
    assert ready["reason"] == "released" and ready["n_instances"] == 48
    (delivered,) = wait_for(lambda: audit(listener, "delivered"), 10, "the delivery record")
    assert delivered["destination"] == f"TPS@127.0.0.1:{tps.port}" and delivered["attempt"] == 1
    assert len(jobs_for_series(job_service, series.series_uid)) == 1
    assert_no_phi(listener.audit.path.read_text(), caplog.text)


def test_series_split_over_two_associations_is_one_job_and_a_late_instance_no_duplicate(
    start_listener, make_series, job_service
):
    listener = start_listener(quiet_time_s=120, release_grace_s=0.3)
    series = make_series()
    first, second = series.files[:24], series.files[24:]
    scu = AE(ae_title=SCANNER_AE)
    scu.add_requested_context(CTImageStorage)
    held = scu.associate("127.0.0.1", listener.port, ae_title=LISTENER_AE)
    assert held.is_established
    for f in first:
        assert held.send_c_store(pydicom.dcmread(f)).Status == 0x0000
    # a second association (DCMTK) sends the rest and is released while the first is still open
    sent = storescu(listener.port, second)
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: any(r.get("n_stored") == 24 for r in audit(listener, "association")), 10, "storescu's release")
    time.sleep(1.5)  # five times the release grace: still nothing may be ready while an association is open
    assert audit(listener, "series_ready") == []
    held.release()

    submitted = wait_for(lambda: audit(listener, "job_submitted"), 30, "the job")
    assert len(submitted) == 1 and submitted[0]["n_instances"] == 48 and submitted[0]["existing_job"] is False
    job_id = submitted[0]["job_id"]
    wait_for(lambda: audit(listener, "job_finished"), 120, "the job to finish")
    (job,) = jobs_for_series(job_service, series.series_uid)
    assert job.id == job_id and job.n_files == 48 and job.state == "succeeded"

    # a late (resent) instance re-forms the whole series; the job store's idempotency returns the same job
    late = storescu(listener.port, series.files[:1])
    assert late.returncode == 0, late.stderr
    resubmitted = wait_for(lambda: audit(listener, "job_submitted")[1:], 30, "the late instance's submission")
    assert resubmitted[0]["job_id"] == job_id and resubmitted[0]["existing_job"] is True
    assert resubmitted[0]["n_instances"] == 48
    assert [j.id for j in jobs_for_series(job_service, series.series_uid)] == [job_id]


def test_series_sent_by_two_consecutive_storescu_runs_is_one_job(start_listener, make_series, job_service):
    listener = start_listener(quiet_time_s=120, release_grace_s=3.0)
    series = make_series()
    for part in (series.files[:20], series.files[20:]):
        sent = storescu(listener.port, part)
        assert sent.returncode == 0, sent.stderr
    submitted = wait_for(lambda: audit(listener, "job_submitted"), 30, "the job")
    assert len(submitted) == 1 and submitted[0]["n_instances"] == 48
    assert len([r for r in audit(listener, "association") if r["n_stored"]]) == 2
    assert len(jobs_for_series(job_service, series.series_uid)) == 1


def test_destination_down_then_up_is_delivered_after_retry_without_blocking_others(
    start_listener, storescp_factory, make_series
):
    down = storescp_factory("TPS_A", start=False)  # nothing listens on its port yet
    up = storescp_factory("TPS_B")
    listener = start_listener(
        peers=[sender_peer("SITE_A", down.port, "TPS_A"), sender_peer("SITE_B", up.port, "TPS_B")],
        delivery_attempts=10,
        delivery_backoff_s=0.5,
        delivery_backoff_max_s=2.0,
    )
    series_a, series_b = make_series(), make_series()
    assert storescu(listener.port, series_a.files, calling_ae="SITE_A").returncode == 0
    wait_for(
        lambda: [r for r in audit(listener, "delivery_attempt") if r["series_uid"] == series_a.series_uid],
        120,
        "a failed delivery to the destination that is down",
    )
    assert storescu(listener.port, series_b.files, calling_ae="SITE_B").returncode == 0

    (rs_b,) = wait_for(up.received, 120, "site B's RTSTRUCT while site A is still down")
    assert referenced_series_uid(pydicom.dcmread(rs_b)) == series_b.series_uid
    assert not [r for r in audit(listener, "delivered") if r["series_uid"] == series_a.series_uid]

    down.start()
    (rs_a,) = wait_for(down.received, 60, "site A's RTSTRUCT after the destination came up")
    assert referenced_series_uid(pydicom.dcmread(rs_a)) == series_a.series_uid
    (delivered_a,) = wait_for(
        lambda: [r for r in audit(listener, "delivered") if r["series_uid"] == series_a.series_uid], 10, "A's record"
    )
    assert delivered_a["attempt"] >= 2 and delivered_a["destination"] == f"TPS_A@127.0.0.1:{down.port}"
    assert audit(listener, "dead_letter") == []


def test_dead_letter_record_after_the_last_attempt(start_listener, make_series):
    closed_port = free_port()
    listener = start_listener(
        peers=[sender_peer(SCANNER_AE, closed_port, "TPS")],
        delivery_attempts=3,
        delivery_backoff_s=0.2,
        delivery_backoff_max_s=10.0,
    )
    series = make_series()
    assert storescu(listener.port, series.files).returncode == 0
    (dead,) = wait_for(lambda: audit(listener, "dead_letter"), 120, "the dead-letter record")
    retries = [r for r in audit(listener, "delivery_attempt") if r["job_id"] == dead["job_id"]]
    assert [r["next_attempt_in_s"] for r in retries] == [0.2, 0.4]  # exponential backoff
    assert dead["attempt"] == 3 and dead["destination"] == f"TPS@127.0.0.1:{closed_port}"
    record = Path(dead["record"])
    data = read_json(record)
    assert data["job_id"] == dead["job_id"] and data["series_uid"] == series.series_uid
    assert data["attempt"] == 3 and data["last_error"]
    kept = pydicom.dcmread(data["rtstruct_path"])  # the RTSTRUCT is kept next to the record
    assert kept.Modality == "RTSTRUCT" and Path(data["rtstruct_path"]).parent == record.parent
    assert listener.delivery.pending() == 0
    assert_no_phi(record.read_text(), listener.audit.path.read_text())


def test_series_the_pipeline_refuses_is_logged_with_its_code_and_nothing_is_sent(
    start_listener, storescp_factory, make_series, job_service
):
    tps = storescp_factory("TPS")
    listener = start_listener(peers=[sender_peer(SCANNER_AE, tps.port, "TPS")])
    series = make_series(n_slices=10)  # the plan needs at least 16 slices
    assert storescu(listener.port, series.files).returncode == 0
    (rejected,) = wait_for(lambda: audit(listener, "job_rejected"), 30, "the rejection record")
    assert rejected["error_code"] == "TOO_FEW_SLICES" and rejected["series_uid"] == series.series_uid
    assert jobs_for_series(job_service, series.series_uid) == []
    time.sleep(1.0)
    assert tps.received() == [] and audit(listener, "job_submitted") == []


def test_pending_delivery_survives_a_listener_restart(start_listener, storescp_factory, make_series, tmp_path):
    tps = storescp_factory("TPS", start=False)
    spool = tmp_path / "restart_spool"
    settings = {
        "spool_dir": spool,
        "peers": [sender_peer(SCANNER_AE, tps.port, "TPS")],
        "delivery_attempts": 20,
        "delivery_backoff_s": 0.5,
        "delivery_backoff_max_s": 1.0,
    }
    first = start_listener(**settings)
    series = make_series()
    assert storescu(first.port, series.files).returncode == 0
    wait_for(lambda: audit(first, "delivery_attempt"), 120, "a failed delivery attempt")
    first.stop()
    assert list((spool / "outbox").glob("*.json")), "the pending delivery must be on disk"

    tps.start()
    second = start_listener(**settings)
    (rtstruct,) = wait_for(tps.received, 60, "the RTSTRUCT delivered by the restarted listener")
    assert referenced_series_uid(pydicom.dcmread(rtstruct)) == series.series_uid
    wait_for(lambda: audit(second, "delivered"), 10, "the delivery record")
    assert not list((spool / "outbox").iterdir())


def test_missing_model_defers_the_series_instead_of_dropping_it(start_listener, make_series, job_service):
    listener = start_listener(model="no-such-model:9.9")
    series = make_series()
    assert storescu(listener.port, series.files).returncode == 0
    (deferred,) = wait_for(lambda: audit(listener, "job_deferred"), 30, "the deferral record")
    assert deferred["error_code"] == "MODEL_NOT_FOUND" and deferred["next_attempt_in_s"] == 60.0
    assert audit(listener, "job_rejected") == [] and jobs_for_series(job_service, series.series_uid) == []
    assert len(listener.spool.series_files(series.series_uid)) == 48  # kept for the next attempt
