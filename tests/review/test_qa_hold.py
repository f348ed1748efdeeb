"""The listener's per-peer QA delivery policy (``qa_hold``): a result whose QA status meets the peer's policy is
held (kept, listed in the review list, released by an approval, never dropped); below it, it is delivered."""

from __future__ import annotations

import time
from pathlib import Path

from service.listener.listener import held_for_qa
from service.review.store import ReviewCase
from tests.listener.conftest import SCANNER_AE, StoreSCP, free_port, storescu, wait_for


def test_policy_table() -> None:
    assert not held_for_qa("ok", "fail") and not held_for_qa("review", "fail") and held_for_qa("fail", "fail")
    assert held_for_qa("review", "review") and held_for_qa("fail", "review") and not held_for_qa("ok", "review")
    assert not held_for_qa("fail", "none") and not held_for_qa(None, "review")


def _peer(scp: StoreSCP, policy: str | None) -> dict:
    peer = {"ae_title": SCANNER_AE, "return_mode": "fixed", "return_host": "127.0.0.1", "return_port": scp.port,
            "return_ae_title": "PLANNING"}  # fmt: skip
    if policy is not None:
        peer["qa_hold"] = policy
    return peer


def test_review_result_held_under_hold_review_then_released_by_approval(
    start_listener, make_series, job_service, tmp_path: Path
):
    scp = StoreSCP("PLANNING", free_port(), tmp_path / "received").start()
    try:
        listener = start_listener(peers=[_peer(scp, "review")])
        assert storescu(listener.port, make_series(blanked=True).files).returncode == 0
        job_id = wait_for(lambda: listener.holds.held() and listener.holds.held()[0], 180, "the hold")
        assert job_service.get_job(job_id).qa_status == "review"
        held = [r for r in listener.audit.read() if r["event"] == "delivery_held"]
        assert held[0]["job_id"] == job_id and held[0]["reason"] == "QA review (peer policy: hold review)"
        time.sleep(0.5)
        assert scp.received() == []
        case = ReviewCase(job_service.store.job_path(job_id), job_id)
        assert case.hold() is not None  # listed: the review list shows the job as held
        case.decide("approved", reviewer="R", comment="", revision=0, owner="dicom:SCANNER", mark_approved=False)
        assert wait_for(scp.received, 30, "the delivery after approval")
    finally:
        scp.stop()


def test_review_result_delivered_under_the_default_policy(start_listener, make_series, tmp_path: Path):
    scp = StoreSCP("PLANNING", free_port(), tmp_path / "received").start()
    try:
        listener = start_listener(peers=[_peer(scp, None)])  # default qa_hold = "fail"
        assert storescu(listener.port, make_series(blanked=True).files).returncode == 0
        assert wait_for(scp.received, 180, "the delivery")
        assert not listener.holds.held()
    finally:
        scp.stop()
