"""Chaos scenarios of hostile or broken senders at the listener (issue 16): DCMTK storescu killed (SIGKILL) in the
middle of a series, repeatedly, and hundreds of idle TCP connections while a known peer sends a series."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.chaos_common import Ctx, Scenario, wait_for
from bench.chaos_dicom import LISTENER_AE, ListenerUnderTest, echo, series_uid

STEP_TIMEOUT_S = 180.0


def _storescu(port: int, files: list[Path]) -> subprocess.Popen:
    exe = shutil.which("storescu")
    if exe is None:
        raise RuntimeError("DCMTK storescu is not installed (scripts/install-debian-tools.sh)")
    return subprocess.Popen(
        [exe, "-aet", "SCANNER", "-aec", LISTENER_AE, "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def storescu_killed(ctx: Ctx) -> Scenario:
    partial_s, runs = 6.0, 3
    sc = Scenario(
        "listener_storescu_killed",
        f"DCMTK storescu SIGKILLed after about a third of a series, {runs} times (the TCP connection drops with "
        f"C-STOREs in flight); quiet_time_s 2, partial_timeout_s {partial_s:.0f}",
    )
    lst = ListenerUnderTest(
        ctx,
        "killed",
        [{"ae_title": "SCANNER", "return_mode": "none"}],
        quiet_time_s=2,
        release_grace_s=0.5,
        partial_timeout_s=partial_s,
    )
    try:
        uids = []
        for n in range(runs):
            files = ctx.series(n).files
            uid = series_uid(files[0])
            uids.append(uid)
            third = max(1, len(files) // 3)
            proc = _storescu(lst.port, files)
            spooled = lst.spool / "series" / uid
            got = wait_for(lambda d=spooled, k=third: len(list(d.glob("*.dcm"))) >= k, 60, 0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            n_spooled = len(list(spooled.glob("*.dcm")))
            sc.check(
                f"run {n + 1}: killed mid-series ({n_spooled} of {len(files)} spooled)", got and n_spooled < len(files)
            )
        t0 = time.monotonic()
        for n, uid in enumerate(uids):
            exp = wait_for(lambda uid=uid: lst.audit("series_expired", series_uid=uid), partial_s + 60, 0.2)
            sc.check(
                f"run {n + 1}: the fragment expired after the partial timeout, never a job",
                bool(exp)
                and exp[0]["reason"] == "partial_timeout"
                and not lst.audit("series_ready", series_uid=uid)
                and not lst.audit("job_submitted", series_uid=uid),
                exp,
            )
        sc.timings_s["kill_to_all_expired"] = round(time.monotonic() - t0, 1)
        aborted = [r for r in lst.audit("association") if r["outcome"] == "aborted"]
        sc.check("every killed association is recorded as aborted", len(aborted) == runs, len(aborted))
        jobs = list(lst.store.list_jobs())
        sc.check("no job in the store", jobs == [], len(jobs))
        sc.check("the listener still answers C-ECHO", echo(lst.port))
    finally:
        lst.close()
    return sc


def idle_sockets(ctx: Ctx) -> Scenario:
    n_idle, artim_s = 300, 5.0
    sc = Scenario(
        "listener_idle_sockets",
        f"{n_idle} TCP connections that never send an A-ASSOCIATE-RQ, then a known peer sends a series with "
        f"storescu; max_associations 10, max_pending_connections 32, artim_timeout_s {artim_s:.0f}",
    )
    lst = ListenerUnderTest(
        ctx,
        "idle",
        [{"ae_title": "SCANNER", "return_mode": "none"}],
        quiet_time_s=30,
        release_grace_s=0.5,
        artim_timeout_s=artim_s,
    )
    socks: list[socket.socket] = []
    try:
        wait_for(lambda: echo(lst.port), 60, 0.2)
        # phase 1: the idle connections alone: threads bounded while they are open, gone after the ARTIM timeout
        before = _threads(lst.proc.pid)
        socks = _open_idle(lst.port, n_idle)
        time.sleep(1.0)
        during = _threads(lst.proc.pid)
        sc.check(f"threads stay bounded ({before} -> {during})", during - before <= 32 + 4, (before, during))
        closed = _closed_by_listener(socks, artim_s + 10)
        sc.check(f"idle connections are closed by the listener ({closed} of {len(socks)})", closed == len(socks))
        after = wait_for(lambda: _threads(lst.proc.pid) <= before + 1 or None, 30, 0.5)
        sc.check("their threads are gone", bool(after), _threads(lst.proc.pid))
        _close_all(socks)
        # phase 2: a known peer sends a series while another burst of idle connections is open
        socks = _open_idle(lst.port, n_idle)
        sc.check("C-ECHO from the known peer succeeds", echo(lst.port))
        files = ctx.series(0).files
        uid = series_uid(files[0])
        t0 = time.monotonic()
        proc = _storescu(lst.port, files)
        rc = proc.wait(timeout=STEP_TIMEOUT_S)
        sc.check("storescu from the known peer stores the whole series", rc == 0, rc)
        fin = wait_for(lambda: lst.audit("job_finished", series_uid=uid), STEP_TIMEOUT_S, 0.2)
        sc.check("its job succeeded", bool(fin) and fin[0]["job_state"] == "succeeded", fin)
        sc.timings_s["send_to_job_finished"] = round(time.monotonic() - t0, 1)
    finally:
        _close_all(socks)
        lst.close()
    return sc


def _open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    return socks


def _closed_by_listener(socks: list[socket.socket], timeout_s: float) -> int:
    closed = 0
    for s in socks:
        s.settimeout(timeout_s)
        with contextlib.suppress(OSError):
            closed += s.recv(1) == b""
    return closed


def _close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
