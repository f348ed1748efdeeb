"""Chaos scenarios on the Celery path: workers SIGKILLed mid-inference (pool child, repeatedly; the same job at
every start; the whole worker), and a Redis restart while jobs are queued and running."""

from __future__ import annotations

import os
import signal
import time

import httpx

from bench.chaos_common import Ctx, Scenario, finished_once, job_store, kill_pool_child, wait_done, wait_for, wait_stage
from bench.procs import port_open, start_redis
from bench.runs import ServiceUnderTest

# short Celery limits so that a redelivery after a lost worker comes within the run: soft 20 s, hard 25 s,
# visibility 30 s (Settings refuses a visibility timeout below the hard limit)
LIMITS = {"job_time_limit_s": 20, "hard_limit_grace_s": 5, "visibility_timeout_s": 30, "max_redeliveries": 2}
STEP_TIMEOUT_S = 180.0


def _service(ctx: Ctx, name: str, n_workers: int = 1) -> ServiceUnderTest:
    svc = ServiceUnderTest(ctx.work / name, ctx.model, celery=True, **LIMITS)
    for _ in range(n_workers):
        svc.add_worker()
    return svc


def _logs(svc: ServiceUnderTest) -> str:
    return "".join(w.log_text() for w in svc.workers)


def pool_child_sigkill(ctx: Ctx) -> Scenario:
    sc = Scenario(
        "worker_sigkill_repeated",
        f"{ctx.repeats} jobs; each: SIGKILL the worker's pool child (the process "
        "running the job) during the model stage; Celery requeues the task, a new child runs it",
    )
    svc = _service(ctx, "sigkill")
    try:
        store = job_store(svc.work / "jobs")
        recoveries = []
        for n in range(ctx.repeats):
            sub = svc.api.submit_files(ctx.series(n).files)
            rec = wait_stage(store, sub.job_id, ("model",), STEP_TIMEOUT_S)
            if not sc.check(f"job {n + 1} reached the model stage", rec is not None and rec.state == "running"):
                continue
            t_kill = time.monotonic()
            killed = kill_pool_child(svc.workers[0])
            sc.check(f"job {n + 1}: pool child SIGKILLed mid-inference", killed is not None)
            done = wait_done(store, sub.job_id, STEP_TIMEOUT_S)
            if done is not None:
                recoveries.append(time.monotonic() - t_kill)
            finished_once(sc, store, sub.job_id, lambda: _logs(svc), attempts=2)
        sc.check("the worker process survived every kill (its pool child was replaced)", svc.workers[0].alive())
        if recoveries:
            sc.timings_s["kill_to_done_median"] = round(sorted(recoveries)[len(recoveries) // 2], 1)
    finally:
        svc.close()
    return sc


def poison_job(ctx: Ctx) -> Scenario:
    max_attempts = 1 + LIMITS["max_redeliveries"]
    sc = Scenario(
        "worker_sigkill_every_start",
        f"one job whose process is SIGKILLed at each of its {max_attempts} "
        "starts (a series that kills its worker): it must fail WORKER_LOST, not loop; the next job runs",
    )
    svc = _service(ctx, "poison")
    try:
        store = job_store(svc.work / "jobs")
        sub = svc.api.submit_files(ctx.series(0).files)
        for attempt in range(1, max_attempts + 1):
            rec = wait_stage(store, sub.job_id, ("model",), STEP_TIMEOUT_S, min_attempts=attempt)
            if not sc.check(f"start {attempt} reached the model stage", rec is not None and rec.state == "running"):
                break
            kill_pool_child(svc.workers[0])
        done = wait_done(store, sub.job_id, STEP_TIMEOUT_S)
        sc.check(
            "the job failed WORKER_LOST",
            done is not None and done.error is not None and done.error.code == "WORKER_LOST",
            done and (done.state, done.error),
        )
        sc.check(
            f"it was started {max_attempts} times, no more",
            done is not None and done.attempts == max_attempts,
            done and done.attempts,
        )
        outputs = list((store.job_path(sub.job_id) / "output").iterdir())
        sc.check(
            "no outputs and no inputs left for the failed job",
            not outputs and not (store.job_path(sub.job_id) / "input").exists(),
            outputs,
        )
        nxt = svc.api.submit_files(ctx.series(1).files)
        wait_done(store, nxt.job_id, STEP_TIMEOUT_S)
        finished_once(sc, store, nxt.job_id, lambda: _logs(svc), attempts=1)
    finally:
        svc.close()
    return sc


def whole_worker_sigkill(ctx: Ctx) -> Scenario:
    sc = Scenario(
        "worker_host_lost",
        "SIGKILL the whole worker (parent and pool child: a crashed machine) during the "
        "model stage; a supervisor restarts it at once; Redis redelivers the unacknowledged task after the "
        f"visibility timeout ({LIMITS['visibility_timeout_s']} s)",
    )
    svc = _service(ctx, "hostlost")
    try:
        store = job_store(svc.work / "jobs")
        sub = svc.api.submit_files(ctx.series(0).files)
        rec = wait_stage(store, sub.job_id, ("model",), STEP_TIMEOUT_S)
        if sc.check("the job reached the model stage", rec is not None and rec.state == "running"):
            t_kill = time.monotonic()
            old = svc.workers.pop()
            os.killpg(old.pid, signal.SIGKILL)
            old.popen.wait(10)
            svc.workers.insert(0, old)  # keep its log for the checks
            svc.add_worker()  # the supervisor (docker restart policy, systemd) starts a new one
            done = wait_done(store, sub.job_id, LIMITS["visibility_timeout_s"] + STEP_TIMEOUT_S)
            if done is not None:
                sc.timings_s["kill_to_done"] = round(time.monotonic() - t_kill, 1)
            finished_once(sc, store, sub.job_id, lambda: _logs(svc), attempts=2)
    finally:
        svc.close()
    return sc


def redis_restart(ctx: Ctx) -> Scenario:
    n_jobs = max(3, ctx.repeats + 1)
    sc = Scenario(
        "redis_restart",
        f"{n_jobs} jobs submitted (one running, the rest queued); Redis (appendonly, "
        "fsync always) stopped during the running job's model stage, kept down 5 s, started again",
    )
    svc = _service(ctx, "redis")
    try:
        store = job_store(svc.work / "jobs")
        ids = [svc.api.submit_files(ctx.series(n).files).job_id for n in range(n_jobs)]
        rec = wait_stage(store, ids[0], ("model",), STEP_TIMEOUT_S)
        sc.check(
            "first job running (model stage), the others queued",
            rec is not None and all(store.get(i).state == "queued" for i in ids[1:]),
        )
        assert svc.redis is not None
        redis_port = int(svc.env["PAROTID_BROKER_URL"].rsplit(":", 1)[1].split("/")[0])
        t_stop = time.monotonic()
        svc.redis.stop()
        probe = svc.api.submit_files(ctx.series(n_jobs).files)
        sc.check(
            "a whole series POSTed while Redis is down: 503 BROKER_UNAVAILABLE, nothing kept",
            probe.status == 503 and probe.body.get("error", {}).get("code") == "BROKER_UNAVAILABLE",
            (probe.status, probe.body.get("error")),
        )
        ready = httpx.get(f"{svc.api.base}/readyz", timeout=10)
        sc.check("/readyz is 503 while Redis is down", ready.status_code == 503, ready.status_code)
        time.sleep(max(0.0, 5 - (time.monotonic() - t_stop)))
        svc.redis, _ = start_redis(svc.work / "redis", svc.logs, port=redis_port)
        t_up = time.monotonic()
        ok = wait_for(lambda: httpx.get(f"{svc.api.base}/readyz", timeout=10).status_code == 200, 60, 0.2)
        sc.check("/readyz is 200 again by itself", ok)
        sc.timings_s["redis_up_to_ready"] = round(time.monotonic() - t_up, 1)
        done = [wait_done(store, i, STEP_TIMEOUT_S + LIMITS["visibility_timeout_s"]) for i in ids]
        sc.timings_s["redis_up_to_all_done"] = round(time.monotonic() - t_up, 1)
        sc.check("every job submitted before the outage ended", all(d is not None for d in done))
        for i in ids:
            finished_once(sc, store, i, lambda: _logs(svc))
        sc.check(
            "the job store holds exactly the submitted jobs (the 503 ones left nothing)",
            sorted(p.name for p in store.jobs_dir.iterdir()) == sorted(ids),
        )
        after = svc.api.submit_files(ctx.series(n_jobs).files)
        sc.check("a new job after the restart is accepted", after.status == 202, after.status)
        if after.status == 202:
            wait_done(store, after.job_id, STEP_TIMEOUT_S)
            finished_once(sc, store, after.job_id, lambda: _logs(svc))
        sc.check("Redis still listens on its port", port_open(redis_port))
    finally:
        svc.close()
    return sc
