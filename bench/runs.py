"""The measurements of ``make bench``: the CLI, the service (embedded or Celery) per job, throughput with one and
two Celery workers, the API's ingest rate, and series reading against plainly reading the same bytes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench.client import Api
from bench.data import SeriesOnDisk
from bench.procs import PAROTID, Proc, base_env, free_port, new_api_key, start_redis, start_serve, start_worker

JOB_TIMEOUT_S = 1800.0
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ModelChoice:
    store: Path
    spec: str
    real: bool
    note: str


def job_run(api: Api, series: SeriesOnDisk, label: str) -> dict:
    """Submit the series (parts), wait for it, return timings; the job is deleted afterwards (so the same series
    can be submitted again: the service would otherwise return the existing job)."""
    sub = api.submit_files(series.files)
    if sub.status != 202:
        raise RuntimeError(f"{label}: POST answered {sub.status}: {sub.body}")
    record, t_done = api.wait(sub.job_id, JOB_TIMEOUT_S)
    if record["state"] != "succeeded":
        raise RuntimeError(f"{label}: job {record['state']}: {record.get('error')}")
    qa = api.qa(sub.job_id)
    api.delete(sub.job_id)
    return {
        "label": label,
        "post_s": round(sub.post_s, 3),
        "ingest_mb_s": round(series.n_bytes / 1e6 / sub.post_s, 1),
        "latency_s": round(t_done - sub.t_response, 3),  # POST answered (last byte received) -> RTSTRUCT ready
        "end_to_end_s": round(t_done - sub.t_response + sub.post_s, 3),
        "attempts": record["attempts"],
        "stages_s": qa.get("stage_times_s", {}),
    }


def run_cli(series: SeriesOnDisk, model: ModelChoice, out: Path, label: str, runtime: str | None = None) -> dict:
    """``parotid-seg segment`` as a fresh process (imports, model load and all stages), files already on disk."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        PAROTID,
        "--model-store",
        str(model.store),
        "segment",
        str(series.folder),
        "--model",
        model.spec,
        "--output",
        str(out / "RS.dcm"),
        "--qa",
        str(out / "qa.json"),
        "--preview",
        str(out / "preview.png"),
        "--quiet",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=base_env(runtime=runtime), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: parotid-seg segment exited {proc.returncode}: {err.decode()[-2000:]}")
    qa = json.loads((out / "qa.json").read_text())
    return {
        "label": label,
        "latency_s": round(wall, 3),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "stages_s": qa.get("stage_times_s", {}),
    }


class ServiceUnderTest:
    """``parotid-seg serve`` (+ a private Redis and ``parotid-seg worker`` processes in Celery mode)."""

    def __init__(self, work: Path, model: ModelChoice, celery: bool, **settings: object) -> None:
        self.work, self.celery = work, celery
        self.logs = work / "logs"
        self.key, line = new_api_key()
        self.redis: Proc | None = None
        broker = None
        if celery:
            self.redis, redis_port = start_redis(work / "redis", self.logs)
            broker = f"redis://127.0.0.1:{redis_port}/0"
        values: dict[str, object] = {"min_free_disk_bytes": 0, **settings}
        self.env = base_env(
            job_dir=work / "jobs",
            model_store=model.store,
            default_model=model.spec,
            api_keys=line,
            broker_url=broker,
            **values,
        )
        self.port = free_port()
        self.serve = start_serve(self.env, self.logs, self.port)
        self.workers: list[Proc] = []
        self.api = Api(self.port, self.key)

    def add_worker(self) -> Proc:
        w = start_worker(self.env, self.logs, f"worker{len(self.workers) + 1}")
        self.workers.append(w)
        return w

    def sample_memory(self) -> None:
        for p in [self.serve, *self.workers]:
            p.sample_memory()

    def worker_peak_rss(self) -> int:
        """Peak RSS of the process that runs the jobs: the API process (embedded) or the largest worker process
        (Celery: the prefork child that imports TensorFlow and holds the model)."""
        self.sample_memory()
        procs = self.workers if self.celery else [self.serve]
        return max((v for p in procs for v in p.peak_rss_seen.values()), default=0)

    def close(self) -> None:
        self.api.close()
        for p in [*self.workers, self.serve]:
            p.stop()
        if self.redis is not None:
            self.redis.stop()


def run_service(
    series: SeriesOnDisk,
    model: ModelChoice,
    work: Path,
    *,
    celery: bool,
    repeats: int,
    zip_upload: bool,
    runtime: str | None = None,
) -> dict:
    """One cold job (the worker loads the model), ``repeats`` warm jobs, optionally one upload as a zip."""
    svc = ServiceUnderTest(work, model, celery, runtime=runtime)
    try:
        if celery:
            svc.add_worker()
        kind = "celery" if celery else "embedded"
        cold = job_run(svc.api, series, f"{kind} cold")
        svc.sample_memory()
        warm = []
        for n in range(repeats):
            warm.append(job_run(svc.api, series, f"{kind} warm {n + 1}"))
            svc.sample_memory()
        result: dict = {"cold": cold, "runs": warm, "peak_rss_bytes": svc.worker_peak_rss()}
        if zip_upload:
            zpath = work / "series.zip"
            with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
                for f in series.files:
                    zf.write(f, f"series/{f.name}")
            sub = svc.api.submit_zip(zpath)
            if sub.status != 202:
                raise RuntimeError(f"zip upload answered {sub.status}: {sub.body}")
            svc.api.wait(sub.job_id, JOB_TIMEOUT_S)
            svc.api.delete(sub.job_id)
            result["zip_upload"] = {
                "bytes": zpath.stat().st_size,
                "post_s": round(sub.post_s, 3),
                "ingest_mb_s": round(zpath.stat().st_size / 1e6 / sub.post_s, 1),
            }
        return result
    finally:
        svc.close()


def run_throughput(copies: list[SeriesOnDisk], model: ModelChoice, work: Path, worker_counts: list[int]) -> list[dict]:
    """Celery: all ``copies`` (same pixels, different series UIDs) submitted at once, per number of workers.
    Workers are warmed first (one job each), so the figures are steady-state."""
    svc = ServiceUnderTest(work, model, celery=True)
    out = []
    try:
        for n_workers in worker_counts:
            while len(svc.workers) < n_workers:
                svc.add_worker()
            warmups = [svc.api.submit_files(copies[i].files) for i in range(n_workers)]
            for w in warmups:
                svc.api.wait(w.job_id, JOB_TIMEOUT_S)
                svc.api.delete(w.job_id)
            t0 = time.monotonic()
            subs = [svc.api.submit_files(c.files) for c in copies]
            t_submitted = time.monotonic()
            done = [svc.api.wait(s.job_id, JOB_TIMEOUT_S) for s in subs]
            t_end = max(t for _, t in done)
            states = [r["state"] for r, _ in done]
            for s in subs:
                svc.api.delete(s.job_id)
            wall = t_end - t0
            out.append(
                {
                    "workers": n_workers,
                    "jobs": len(copies),
                    "states": states,
                    "wall_s": round(wall, 2),
                    "submit_s": round(t_submitted - t0, 2),
                    "jobs_per_min": round(len(copies) * 60 / wall, 2),
                }
            )
            svc.sample_memory()
        return out
    finally:
        svc.close()


def measure_read(series: SeriesOnDisk, repeats: int) -> dict:
    """``load_series`` (header scan + validation + pixel decoding to HU) against reading the same bytes from disk,
    both with the files in the page cache (median of ``repeats``)."""
    from service.pipeline.series import load_series

    def plain() -> float:
        t0 = time.perf_counter()
        for f in series.files:
            f.read_bytes()
        return time.perf_counter() - t0

    def pipeline() -> float:
        t0 = time.perf_counter()
        load_series(series.folder)
        return time.perf_counter() - t0

    plain(), pipeline()  # warm the page cache and imports
    plain_s = statistics.median(plain() for _ in range(repeats))
    load_s = statistics.median(pipeline() for _ in range(repeats))
    return {
        "plain_read_s": round(plain_s, 4),
        "load_series_s": round(load_s, 3),
        "plain_read_mb_s": round(series.n_bytes / 1e6 / plain_s, 1),
        "load_series_mb_s": round(series.n_bytes / 1e6 / load_s, 1),
        "ratio": round(load_s / plain_s, 1),
    }


def run_probe(series: SeriesOnDisk, model: ModelChoice, runtime: str, repeats: int) -> dict:
    """``bench.probe`` in a fresh process: warm pipeline latency (no HTTP), stage times and the process' peak RSS."""
    argv = [sys.executable, "-m", "bench.probe", str(series.folder), "--runtime", runtime, "--repeats", str(repeats)]
    argv += ["--model", model.spec, "--model-store", str(model.store)]
    proc = subprocess.run(argv, env=base_env(), capture_output=True, text=True, cwd=REPO_ROOT, timeout=JOB_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.probe {runtime} exited {proc.returncode}: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    stages = out["stages_s"]
    latency = statistics.median(out["latencies_s"])
    return {
        "runtime": out["runtime"],
        "latency_s": round(latency, 3),
        "model_s": stages.get("model"),
        "not_model_s": round(latency - stages.get("model", 0.0), 3),
        "stages_s": stages,
        "peak_rss_bytes": out["peak_rss_bytes"],
    }


def run_rejection(work: Path, model: ModelChoice, repeats: int) -> dict:
    """``parotid-seg segment`` on a series the service must reject (fewer slices than the plan's minimum): the wall
    time to the exit status 2 (the input is checked before the model is loaded)."""
    import numpy as np

    from tests.dicom_factory import write_ct_series

    series = work / "short-series"
    write_ct_series(series, np.zeros((4, 512, 512), dtype=np.float32), (2.5, 1.0, 1.0))
    argv = [PAROTID, "--model-store", str(model.store), "segment", str(series), "--model", model.spec]
    argv += ["--output", str(work / "RS.dcm"), "--quiet"]
    walls = []
    for _ in range(repeats):
        t0 = time.monotonic()
        proc = subprocess.run(argv, env=base_env(), capture_output=True, text=True)
        walls.append(time.monotonic() - t0)
        if proc.returncode != 2:
            raise RuntimeError(f"rejection: expected exit 2, got {proc.returncode}: {proc.stderr[-1000:]}")
    return {
        "latency_s": round(statistics.median(walls), 3),
        "runs": len(walls),
        "error": proc.stderr.strip().split(":")[0],
    }
