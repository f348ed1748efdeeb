"""A series sent again over DICOM: per peer ``on_resend`` decides. ``redeliver`` (the default) sends the existing
RTSTRUCT again without a new job; ``ignore`` sends nothing; ``recompute`` runs a new job and sends its result.
Real peers: DCMTK storescu sends, DCMTK storescp (unique file names, so a second copy of the same object is kept
apart) receives."""

from __future__ import annotations

import pydicom
import pytest

from tests.listener.conftest import SCANNER_AE, audit, jobs_for_series, storescu, wait_for


def _peer(port: int, on_resend: str | None) -> dict:
    peer = {"ae_title": SCANNER_AE, "return_mode": "sender", "return_port": port, "return_ae_title": "TPS"}
    if on_resend is not None:
        peer["on_resend"] = on_resend
    return peer


@pytest.mark.parametrize("on_resend", [None, "ignore", "recompute"], ids=["default-redeliver", "ignore", "recompute"])
def test_a_series_sent_again_gets_the_peers_resend_policy(
    on_resend, start_listener, storescp_factory, make_series, job_service
):
    tps = storescp_factory("TPS", extra_args=("+uf",))
    listener = start_listener(peers=[_peer(tps.port, on_resend)], quiet_time_s=120)
    series = make_series()
    assert storescu(listener.port, series.files).returncode == 0
    (first,) = wait_for(tps.received, 120, "the first RTSTRUCT")
    wait_for(listener.idle, 30, "the listener to settle")

    # the planning system lost the structure set: the user sends the CT again
    again = storescu(listener.port, series.files)
    assert again.returncode == 0, again.stderr
    submitted = wait_for(lambda: audit(listener, "job_submitted")[1:], 30, "the second submission")
    if on_resend != "ignore":
        wait_for(lambda: len(tps.received()) == 2, 120, "the second RTSTRUCT")
    wait_for(listener.idle, 120, "the second send to be handled")
    received = tps.received()
    jobs = jobs_for_series(job_service, series.series_uid)
    delivered = audit(listener, "delivered")
    first_ds = pydicom.dcmread(first)

    if on_resend is None:  # redeliver: the same object again, no new job
        assert submitted[0]["existing_job"] is True and submitted[0]["on_resend"] == "redeliver"
        assert len(jobs) == 1 and len(received) == 2
        second = pydicom.dcmread(next(p for p in received if p != first))
        assert second.SOPInstanceUID == first_ds.SOPInstanceUID
        assert [d["redelivery"] for d in delivered] == [False, True]
    elif on_resend == "ignore":
        assert submitted[0]["existing_job"] is True and submitted[0]["on_resend"] == "ignore"
        assert len(jobs) == 1 and received == [first] and len(delivered) == 1
    else:  # recompute: a second job, its own RTSTRUCT
        assert submitted[0]["existing_job"] is False
        assert len(jobs) == 2 and all(str(j.state) == "succeeded" for j in jobs)
        assert len(received) == 2 and len(delivered) == 2
        second = pydicom.dcmread(next(p for p in received if p != first))
        assert second.SOPInstanceUID != first_ds.SOPInstanceUID
        assert {d["job_id"] for d in delivered} == {j.id for j in jobs}


def test_on_resend_is_validated() -> None:
    from pydantic import ValidationError

    from service.listener.settings import PeerConfig

    with pytest.raises(ValidationError):
        PeerConfig(ae_title="X", return_mode="none", on_resend="twice")  # type: ignore[arg-type]
    assert PeerConfig(ae_title="X", return_mode="none").on_resend == "redeliver"
