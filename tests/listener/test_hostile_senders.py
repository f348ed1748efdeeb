"""Hostile or broken senders at the listener (issue 16): a sender killed mid-series, idle sockets.

Real peers: DCMTK ``storescu`` killed with SIGKILL while it sends (the TCP connection drops without an A-ABORT),
raw TCP sockets that never send an A-ASSOCIATE-RQ, DCMTK ``echoscu``/``storescu`` as the known peer that must still
be served.
"""

from __future__ import annotations

import os
import signal
import subprocess

from tests.conftest import require_tool
from tests.listener.conftest import LISTENER_AE, SCANNER_AE, audit, wait_for


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
