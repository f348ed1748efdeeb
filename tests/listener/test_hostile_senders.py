"""Hostile or broken senders at the listener (issue 16): a sender killed mid-series, idle sockets.

Real peers: DCMTK ``storescu`` killed with SIGKILL while it sends (the TCP connection drops without an A-ABORT),
raw TCP sockets that never send an A-ASSOCIATE-RQ, DCMTK ``echoscu``/``storescu`` as the known peer that must still
be served.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import numpy as np

from tests.conftest import require_tool
from tests.listener.conftest import LISTENER_AE, SCANNER_AE, audit, echoscu, storescu, wait_for


def _spooled(listener, series_uid: str) -> int:
    return len(listener.spool.series_files(series_uid))


def test_storescu_killed_mid_series_never_becomes_a_job(start_listener, make_series):
    """SIGKILL storescu after some instances: whatever the order in which the listener sees the dropped connection
    and the C-STORE still in flight, the series is aborted (never made ready by the quiet time) and expires."""
    listener = start_listener(quiet_time_s=0.5, partial_timeout_s=3.0)
    series = make_series(n_slices=96)
    exe = require_tool("storescu")
    # -xs: one presentation context per file is negotiated up front; --repeat is not used: one instance per file
    proc = subprocess.Popen(
        [exe, "-aet", SCANNER_AE, "-aec", LISTENER_AE, "127.0.0.1", str(listener.port), *map(str, series.files)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _spooled(listener, series.series_uid) >= 30, 30, "30 instances spooled")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    n_spooled = _spooled(listener, series.series_uid)
    assert 0 < n_spooled < len(series.files), "storescu finished before it could be killed"
    (record,) = wait_for(lambda: audit(listener, "association"), 15, "the association record")
    assert record["outcome"] == "aborted"
    (expired,) = wait_for(lambda: audit(listener, "series_expired"), 20, "the partial series clean-up")
    assert expired["reason"] == "partial_timeout"
    assert audit(listener, "series_ready") == [] and audit(listener, "job_submitted") == []
    assert listener.handlers.open_associations() == 0


def _idle_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def test_idle_sockets_do_not_lock_known_peers_out_and_threads_stay_bounded(start_listener, make_series):
    """Many TCP connections that never send an A-ASSOCIATE-RQ (more than max_associations and than the pending
    bound): echoscu and storescu from a known peer still succeed; threads stay bounded; closed sockets free
    their slots at once."""
    listener = start_listener(max_associations=4, max_pending_connections=8, artim_timeout_s=30.0)
    baseline = threading.active_count()
    socks = _idle_sockets(listener.port, 60)
    try:
        time.sleep(0.5)  # let the accept loop take them all
        assert threading.active_count() - baseline <= 8 + 2, "one thread per idle socket"
        assert echoscu(listener.port).returncode == 0
        series = make_series(n_slices=8)
        assert storescu(listener.port, series.files).returncode == 0
        assert echoscu(listener.port).returncode == 0
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: listener._server.pending_connections() == 0, 10, "closed sockets to free their slots")


def test_connection_that_sends_nothing_is_closed_after_the_artim_timeout(start_listener):
    listener = start_listener(artim_timeout_s=1.0)
    (s,) = _idle_sockets(listener.port, 1)
    with s:
        s.settimeout(15)
        assert s.recv(1) == b""  # closed by the listener (after ~1 s; the 15 s socket timeout would raise)
    wait_for(lambda: listener._server.pending_connections() == 0, 5, "the slot freed")


def test_partial_association_request_is_closed_after_the_artim_timeout(start_listener):
    """A-ASSOCIATE-RQ header announcing 200 bytes, only 10 sent: the connection is closed, no association exists."""
    listener = start_listener(artim_timeout_s=1.0)
    (s,) = _idle_sockets(listener.port, 1)
    with s:
        s.sendall(bytes([0x01, 0x00, 0x00, 0x00, 0x00, 200]) + b"\x00" * 4)
        s.settimeout(15)
        assert s.recv(1) == b""
    assert listener.handlers.open_associations() == 0


OTHER_AE = "OTHER_CT"
TWO_PEERS = [{"ae_title": SCANNER_AE, "return_mode": "none"}, {"ae_title": OTHER_AE, "return_mode": "none"}]


def _associate(port: int, calling_ae: str = SCANNER_AE):
    """A real association from pynetdicom (the client), which then sends nothing until the test says so."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling_ae)
    ae.network_timeout = 120  # the client's own timeout must not end the association first
    ae.acse_timeout = 10
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)


def test_one_peer_idle_associations_do_not_lock_other_peers_out(start_listener, make_series):
    """A known AE title opens more associations than its per-peer share and idles: the extra ones are rejected
    (transient, local limit exceeded) and audited; another AE title's echoscu and storescu are still served."""
    listener = start_listener(
        peers=TWO_PEERS,
        max_associations=4,
        max_associations_per_peer=2,
        network_timeout_s=60.0,
        idle_association_timeout_s=60.0,
    )
    assocs = [_associate(listener.port) for _ in range(5)]
    try:
        assert [a.is_established for a in assocs] == [True, True, False, False, False]
        rejected = assocs[2]
        assert rejected.is_rejected
        rj = rejected.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
        assert echoscu(listener.port, SCANNER_AE).returncode != 0  # still at its limit
        assert echoscu(listener.port, OTHER_AE).returncode == 0
        series = make_series(n_slices=8)
        assert storescu(listener.port, series.files, calling_ae=OTHER_AE).returncode == 0
        assert echoscu(listener.port, OTHER_AE).returncode == 0
        assert all(a.is_established for a in assocs[:2])
    finally:
        for a in assocs:
            if a.is_established:
                a.release()
    records = audit(listener, "association")
    limited = [r for r in records if r.get("reason") == "per-peer association limit exceeded"]
    assert len(limited) == 4 and {r["calling_ae"] for r in limited} == {SCANNER_AE}
    assert {r["outcome"] for r in limited} == {"rejected"}
    wait_for(lambda: listener.handlers.admission.open_for(SCANNER_AE) == 0, 10, "released slots freed")
    assert echoscu(listener.port, SCANNER_AE).returncode == 0


def test_association_that_sends_no_dimse_message_times_out_early(start_listener):
    """An established association with no DIMSE message is aborted after idle_association_timeout_s (1 s), not
    the network timeout (60 s); one that has sent a C-ECHO keeps the network timeout."""
    listener = start_listener(network_timeout_s=60.0, idle_association_timeout_s=1.0)
    quiet = _associate(listener.port)
    busy = _associate(listener.port)
    try:
        assert quiet.is_established and busy.is_established
        assert busy.send_c_echo().Status == 0x0000
        wait_for(lambda: not quiet.is_established and quiet.is_aborted, 15, "the quiet association aborted")
        time.sleep(1.5)  # longer than the idle timeout: the association that spoke is still open
        assert busy.is_established
        assert busy.send_c_echo().Status == 0x0000
    finally:
        if busy.is_established:
            busy.release()
    wait_for(lambda: listener.handlers.open_associations() == 0, 10, "both associations ended")
    outcomes = sorted(r["outcome"] for r in audit(listener, "association"))
    assert outcomes == ["aborted", "released"]


def test_series_over_the_memory_budget_is_refused_per_c_store(start_listener, make_series, caplog):
    """A 1 MiB budget and 64 x 64 slices (4096 voxels: ~288 KiB each with the oracle plan's model grid): the
    first 3 instances are stored, the 4th puts the series over the budget: it and every later one get 0xA700,
    what was spooled is dropped, the refusal is audited (no patient data) and the series never becomes a job."""
    from tests.dicom_factory import TEST_PATIENT_ID, TEST_PATIENT_NAME

    listener = start_listener(memory_budget_mb=1)
    series = make_series(n_slices=12)
    storescu(listener.port, series.files)  # exits non-zero and stops at the first 0xA700, as DCMTK does
    (record,) = wait_for(lambda: audit(listener, "association"), 15, "the association record")
    assert record["statuses"] == {"0x0000": 3, "0xA700": 1}
    storescu(listener.port, series.files[4:])  # the rest of the series, sent again: refused without spooling
    wait_for(lambda: len(audit(listener, "association")) == 2, 15, "the second association record")
    assert audit(listener, "association")[1]["statuses"] == {"0xA700": 1}
    (refused,) = audit(listener, "series_refused")
    assert refused["series_uid"] == series.series_uid and refused["reason"] == "memory_budget"
    assert refused["n_instances"] == 4 and refused["budget_mib"] == 1
    assert _spooled(listener, series.series_uid) == 0
    time.sleep(2.5)  # past the quiet time (1 s): nothing of the series is submitted
    assert audit(listener, "series_ready") == [] and audit(listener, "job_submitted") == []
    text = caplog.text + (listener.spool.root / "audit.jsonl").read_text()
    assert TEST_PATIENT_NAME not in text and TEST_PATIENT_ID not in text
    # other series keep being served under the same budget
    small = make_series(n_slices=2)
    assert storescu(listener.port, small.files).returncode == 0
    assert _spooled(listener, small.series_uid) == 2


def test_per_c_store_estimate_matches_the_submission_check(make_series):
    """On a whole series the per-C-STORE estimate equals ``series.check_memory``'s (CT + model grid), so a series
    the job service accepts is never refused at the listener: one byte under its need refuses at the last slice."""
    import pydicom

    from service.listener.series_budget import SeriesBudget
    from service.pipeline.budget import estimated_bytes, model_grid_shape

    series = make_series(n_slices=20)
    plan = (2.5, 8.0, 8.0)
    need = estimated_bytes(20 * 64 * 64, int(np.prod(model_grid_shape((20, 64, 64), (2.5, 4.0, 4.0), plan))))
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    fits, tight = SeriesBudget(need, plan), SeriesBudget(need - 1, plan)
    assert all(fits.admit(series.series_uid, ds.SOPInstanceUID, ds).ok for ds in datasets)
    verdicts = [tight.admit(series.series_uid, ds.SOPInstanceUID, ds) for ds in datasets]
    assert [v.ok for v in verdicts] == [True] * 19 + [False] and verdicts[-1].first_refusal
    assert not tight.admit(series.series_uid, datasets[0].SOPInstanceUID, datasets[0]).ok  # stays refused
