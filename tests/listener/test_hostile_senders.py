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
