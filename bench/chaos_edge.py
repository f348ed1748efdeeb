"""Chaos scenarios at the edges: the job-store disk at its watermark (API and listener), DICOM associations
aborted or dropped mid-series, and a return destination that is down for a while."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

import httpx
import pydicom

from bench.chaos_common import Ctx, Scenario, finished_once, job_store, wait_done, wait_for, wait_stage
from bench.chaos_dicom import ListenerUnderTest, echo, send, series_uid
from bench.procs import free_port, start_storescp
from bench.runs import ServiceUnderTest

STEP_TIMEOUT_S = 180.0
MiB = 2**20


def disk_watermark(ctx: Ctx) -> Scenario:
    """The disk is not filled for real: the watermark is set 512 MiB below the free space at the start and a
    768 MiB ballast file (posix_fallocate) takes the job store 256 MiB under it; deleting the ballast recovers."""
    sc = Scenario(
        "disk_watermark",
        "watermark = free space - 512 MiB; a job runs while a 768 MiB ballast file takes "
        "the disk below it (API and listener share that disk); then the ballast is deleted",
    )
    free = shutil.disk_usage(ctx.work).free
    if free < 4 * 2**30:
        sc.error = f"only {free // MiB} MiB free: not enough room for the ballast"
        return sc
    watermark = free - 512 * MiB
    svc = ServiceUnderTest(ctx.work / "disk", ctx.model, celery=False, min_free_disk_bytes=watermark)
    lst = ListenerUnderTest(
        ctx,
        "disk-listener",
        [{"ae_title": "SCANNER", "return_mode": "none"}],
        min_free_disk_bytes=watermark,
        min_free_disk_mb=round(watermark / MiB),  # the listener's spool watermark (its older, MiB-valued name)
        quiet_time_s=30,
        release_grace_s=0.5,
    )
    ballast = ctx.work / "disk" / "ballast.bin"
    try:
        store = job_store(svc.work / "jobs")
        running = svc.api.submit_files(ctx.series(0).files)
        wait_stage(store, running.job_id, ("model",), STEP_TIMEOUT_S)
        fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, 768 * MiB)
        finally:
            os.close(fd)
        sc.check(
            "the disk is below the watermark",
            shutil.disk_usage(ctx.work).free < watermark,
            f"{shutil.disk_usage(ctx.work).free // MiB} MiB free, watermark {watermark // MiB} MiB",
        )
        jobs_before = sorted(p.name for p in store.jobs_dir.iterdir())
        refused = svc.api.submit_files(ctx.series(1).files)
        code = refused.body.get("error", {}).get("code")
        sc.check(
            "POST: 503 INSUFFICIENT_STORAGE",
            refused.status == 503 and code == "INSUFFICIENT_STORAGE",
            (refused.status, refused.body),
        )
        ready = httpx.get(f"{svc.api.base}/readyz", timeout=10)
        sc.check(
            "/readyz 503 with the disk check failing",
            ready.status_code == 503 and not ready.json()["checks"]["disk"]["ok"],
            ready.text[:300],
        )
        sc.check(
            "the refused upload left nothing in the job store",
            sorted(p.name for p in store.jobs_dir.iterdir()) == jobs_before and not list(store.staging_dir.iterdir()),
        )
        statuses = send(lst.port, ctx.series(2).files[:3])
        sc.check("listener C-STORE: 0xA700 (out of resources)", statuses == [0xA700] * 3, [hex(s) for s in statuses])
        sc.check("the listener spooled nothing", not list((lst.spool / "series").glob("*/*.dcm")))
        done = wait_done(store, running.job_id, STEP_TIMEOUT_S)
        sc.check("the job that was running finished", done is not None)
        finished_once(sc, store, running.job_id, svc.serve.log_text)
        ballast.unlink()
        t_free = time.monotonic()
        ok = wait_for(lambda: httpx.get(f"{svc.api.base}/readyz", timeout=10).status_code == 200, 30, 0.2)
        sc.check("/readyz 200 again by itself once space is back", ok)
        sc.timings_s["space_back_to_ready"] = round(time.monotonic() - t_free, 2)
        again = svc.api.submit_files(ctx.series(1).files)
        sc.check("POST accepted again (202)", again.status == 202, again.status)
        if again.status == 202:
            wait_done(store, again.job_id, STEP_TIMEOUT_S)
            finished_once(sc, store, again.job_id, svc.serve.log_text)
        files = ctx.series(2).files
        statuses = send(lst.port, files)
        sc.check("listener stores the whole series again", statuses == [0] * len(files))
        uid = series_uid(files[0])
        fin = wait_for(lambda: lst.audit("job_finished", series_uid=uid), STEP_TIMEOUT_S, 0.2)
        sc.check("its job succeeded", bool(fin) and fin[0]["job_state"] == "succeeded", fin)
    finally:
        with contextlib.suppress(FileNotFoundError):
            ballast.unlink()
        svc.close()
        lst.close()
    return sc


def listener_abort(ctx: Ctx) -> Scenario:
    partial_s = 6.0
    sc = Scenario(
        "listener_abort_mid_series",
        "half a series then A-ABORT (no retry); half then A-ABORT then the "
        "sender resends the whole series; half then the TCP connection dropped without a word; "
        f"partial_timeout_s {partial_s:.0f}",
    )
    lst = ListenerUnderTest(
        ctx,
        "abort",
        [{"ae_title": "SCANNER", "return_mode": "none"}],
        quiet_time_s=60,
        release_grace_s=0.5,
        partial_timeout_s=partial_s,
    )
    try:
        plans = [("abort", False), ("abort", True), ("drop", False)]
        uids = []
        for n, (end, resend) in enumerate(plans):
            files = ctx.series(n).files
            uid = series_uid(files[0])
            uids.append(uid)
            statuses = send(lst.port, files[: len(files) // 2], end=end)
            sc.check(f"series {n + 1}: first half stored before the {end}", statuses == [0] * (len(files) // 2))
            if resend:
                statuses = send(lst.port, files)
                sc.check(f"series {n + 1}: the resend is stored", statuses == [0] * len(files))
        t_last = time.monotonic()
        for n, uid in enumerate(uids):
            if plans[n][1]:
                fin = wait_for(lambda uid=uid: lst.audit("job_finished", series_uid=uid), STEP_TIMEOUT_S, 0.2)
                subs = lst.audit("job_submitted", series_uid=uid)
                sc.check(
                    f"series {n + 1} (resent): exactly one job, succeeded",
                    len(subs) == 1 and bool(fin) and fin[0]["job_state"] == "succeeded",
                    (subs, fin),
                )
                jobs = [r for r in lst.store.list_jobs() if r.series_instance_uid == uid]
                sc.check(f"series {n + 1} (resent): one job in the store", len(jobs) == 1, len(jobs))
            else:
                exp = wait_for(lambda uid=uid: lst.audit("series_expired", series_uid=uid), partial_s + 30, 0.2)
                sc.check(
                    f"series {n + 1} ({plans[n][0]}): expired after the partial timeout, no job",
                    bool(exp)
                    and exp[0]["reason"] == "partial_timeout"
                    and not lst.audit("job_submitted", series_uid=uid),
                    exp,
                )
                sc.check(
                    f"series {n + 1}: its instances are gone from the spool", not (lst.spool / "series" / uid).exists()
                )
        sc.timings_s["last_end_to_all_settled"] = round(time.monotonic() - t_last, 1)
        aborted = [r for r in lst.audit("association") if r["outcome"] == "aborted"]
        sc.check("the audit log records the three broken associations as aborted", len(aborted) == 3, len(aborted))
        sc.check("no partial files in the spool", not lst.partial_files(), lst.partial_files())
        sc.check("the listener still answers C-ECHO", echo(lst.port))
    finally:
        lst.close()
    return sc


def destination_down(ctx: Ctx) -> Scenario:
    down_s = 10.0
    sc = Scenario(
        "destination_down",
        f"the TPS that gets the RTSTRUCT is down for {down_s:.0f} s; meanwhile "
        "another site's series is processed and delivered; then the TPS (DCMTK storescp) comes up",
    )
    tps_port, pacs_port = free_port(), free_port()
    peers = [
        {
            "ae_title": "SCANNER",
            "return_mode": "fixed",
            "return_ae_title": "TPS",
            "return_host": "127.0.0.1",
            "return_port": tps_port,
        },
        {
            "ae_title": "CT2",
            "return_mode": "fixed",
            "return_ae_title": "PACS",
            "return_host": "127.0.0.1",
            "return_port": pacs_port,
        },
    ]
    lst = ListenerUnderTest(
        ctx,
        "destination",
        peers,
        quiet_time_s=30,
        release_grace_s=0.5,
        delivery_backoff_s=1,
        delivery_backoff_max_s=4,
        delivery_attempts=15,
        delivery_timeout_s=5,
    )
    procs = []
    try:
        procs.append(start_storescp("PACS", pacs_port, lst.work / "pacs", lst.logs))
        t0 = time.monotonic()
        files = ctx.series(0).files
        uid = series_uid(files[0])
        sc.check("series for the TPS stored", send(lst.port, files) == [0] * len(files))
        other = ctx.series(1).files
        other_uid = series_uid(other[0])
        sc.check("another site's series stored", send(lst.port, other, calling_ae="CT2") == [0] * len(other))
        fin = wait_for(lambda: lst.audit("job_finished", series_uid=uid), STEP_TIMEOUT_S, 0.2)
        sc.check("the TPS series' job succeeded", bool(fin) and fin[0]["job_state"] == "succeeded", fin)
        job_id = fin[0]["job_id"] if fin else ""
        retries = wait_for(
            lambda: (
                len(lst.audit("delivery_attempt", job_id=job_id)) >= 2 and lst.audit("delivery_attempt", job_id=job_id)
            ),
            STEP_TIMEOUT_S,
            0.2,
        )
        sc.check("failed delivery attempts are retried (backoff)", bool(retries), len(retries or []))
        pacs = wait_for(lambda: lst.audit("delivered", series_uid=other_uid), STEP_TIMEOUT_S, 0.2)
        sc.check(
            "the other site's result was delivered while the TPS was down",
            bool(pacs) and not lst.audit("delivered", series_uid=uid),
        )
        time.sleep(max(0.0, down_s - (time.monotonic() - t0)))
        procs.append(start_storescp("TPS", tps_port, lst.work / "tps", lst.logs))
        t_up = time.monotonic()
        got = wait_for(lambda: lst.audit("delivered", series_uid=uid), 60, 0.2)
        sc.check("delivered to the TPS after it came up", bool(got), got)
        sc.timings_s["tps_up_to_delivered"] = round(time.monotonic() - t_up, 1)
        time.sleep(3)
        received = sorted(p for p in (lst.work / "tps").iterdir() if p.is_file())
        sc.check("the TPS received exactly one object", len(received) == 1, [p.name for p in received])
        if received:
            ds = pydicom.dcmread(received[0], stop_before_pixels=True)
            refs = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence
            sc.check(
                "it is the RTSTRUCT of that series",
                ds.Modality == "RTSTRUCT" and refs[0].SeriesInstanceUID == uid,
                ds.Modality,
            )
        sc.check(
            "no dead letter",
            not lst.audit("dead_letter") and not list((lst.spool / "dead_letter").glob("*"))
            if (lst.spool / "dead_letter").exists()
            else not lst.audit("dead_letter"),
        )
        sc.check("each job delivered once", len(lst.audit("delivered")) == 2, len(lst.audit("delivered")))
        finished_once(sc, lst.store, job_id, lst.proc.log_text)
    finally:
        lst.close()
        for p in procs:
            p.stop()
    return sc
