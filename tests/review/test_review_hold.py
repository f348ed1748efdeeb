"""Review before send without a browser: the listener holds a review-before-send peer's RTSTRUCT across a
restart, delivers the approved revision (the APPROVED copy when marking is on) to a DCMTK storescp, and drops the
hold of a deleted job; concurrent revisions on one base: exactly one wins."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pydicom

from service.review.nifti import read_nifti_zyx
from service.review.store import ReviewCase, ReviewError
from tests.listener.conftest import SCANNER_AE, StoreSCP, storescu
from tests.support.net import free_port, wait_for


def _peer(scp: StoreSCP) -> dict:
    return {
        "ae_title": SCANNER_AE,
        "return_mode": "fixed",
        "return_host": "127.0.0.1",
        "return_port": scp.port,
        "return_ae_title": "PLANNING",
        "review_before_send": True,
    }


def test_hold_survives_restart_then_approved_revision_is_delivered(
    start_listener, make_series, job_service, tmp_path: Path
):
    scp = StoreSCP("PLANNING", free_port(), tmp_path / "received").start()
    try:
        spool = tmp_path / "spool-review"
        listener = start_listener(spool_dir=spool, peers=[_peer(scp)])
        series = make_series()
        assert storescu(listener.port, series.files).returncode == 0
        job_id = wait_for(lambda: listener.holds.held() and listener.holds.held()[0], 120, "the hold")
        case = ReviewCase(job_service.store.job_path(job_id), job_id)
        assert case.hold() is not None and case.hold().destination == f"PLANNING@127.0.0.1:{scp.port}"
        assert [r["job_id"] for r in listener.audit.read() if r["event"] == "delivery_held"] == [job_id]
        listener.stop()
        time.sleep(0.5)
        assert scp.received() == []

        again = start_listener(spool_dir=spool, peers=[_peer(scp)])
        assert again.holds.held() == [job_id]  # recovered from <spool>/held
        labels = read_nifti_zyx(case.masks_path(0))
        labels[labels == 2] = 0
        revision, created = case.add_revision(labels, base=0, author="dicom:SCANNER")
        assert created and revision.number == 1
        time.sleep(0.6)
        assert scp.received() == [], "a revision is not an approval"
        case.decide("approved", reviewer="R", comment="", revision=1, owner="dicom:SCANNER", mark_approved=True)
        received = wait_for(scp.received, 30, "the delivery")
        ds = pydicom.dcmread(received[0])
        assert ds.ApprovalStatus == "APPROVED" and str(ds.ReviewerName) == "R"
        assert ds.SOPInstanceUID == case.decision().approved_sop_instance_uid
        release = case.release()
        assert release is not None and release.action == "queued" and release.revision == 1
        assert release.sop_instance_uid == ds.SOPInstanceUID
        assert wait_for(lambda: not again.holds.held(), 5, "the hold to be dropped")
    finally:
        scp.stop()


def test_deleted_job_drops_its_hold(start_listener, make_series, job_service, tmp_path: Path):
    scp = StoreSCP("PLANNING", free_port(), tmp_path / "received").start()
    try:
        listener = start_listener(peers=[_peer(scp)])
        assert storescu(listener.port, make_series().files).returncode == 0
        job_id = wait_for(lambda: listener.holds.held() and listener.holds.held()[0], 120, "the hold")
        job_service.delete_job(job_id)
        wait_for(lambda: not listener.holds.held(), 10, "the hold to be dropped")
        withheld = [r for r in listener.audit.read() if r["event"] == "delivery_withheld"]
        assert [r["job_id"] for r in withheld] == [job_id] and withheld[0]["reason"] == "job deleted"
        time.sleep(0.5)
        assert scp.received() == []
    finally:
        scp.stop()


def test_concurrent_revisions_on_one_base_exactly_one_wins(start_listener, make_series, job_service):
    listener = start_listener(peers=[{"ae_title": SCANNER_AE, "return_mode": "none"}])
    assert storescu(listener.port, make_series().files).returncode == 0
    job_id = wait_for(lambda: [j for j in job_service.list_jobs() if j.state == "succeeded"], 120, "the job")[0].id
    case = ReviewCase(job_service.store.job_path(job_id), job_id)
    base = read_nifti_zyx(case.masks_path(0))
    edits = []
    for n in range(4):
        e = base.copy()
        e[20, 5 + n, 30:34] = 1
        edits.append(e)
    results: list[object] = [None] * len(edits)

    def save(n: int) -> None:
        try:
            results[n] = case.add_revision(edits[n], base=0, author=f"reviewer{n}")[0].number
        except ReviewError as exc:
            results[n] = exc.code

    threads = [threading.Thread(target=save, args=(n,)) for n in range(len(edits))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == ["1", "REVISION_STALE", "REVISION_STALE", "REVISION_STALE"], results
    winner = results.index(1)
    assert np.array_equal(read_nifti_zyx(case.masks_path(1)), edits[winner])
    assert [r.number for r in case.revisions()] == [0, 1]
