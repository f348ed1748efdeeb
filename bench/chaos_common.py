"""Shared pieces of ``make chaos``: the scenario record (checks, timings), the run context, and job-store probes."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data import GridSpec, SeriesOnDisk, write_series
from bench.procs import Proc, children
from bench.runs import ModelChoice

DONE_STATES = ("succeeded", "failed")


@dataclass
class Scenario:
    name: str
    action: str = ""
    checks: list[dict] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0

    def check(self, what: str, ok: bool, detail: object = "") -> bool:
        self.checks.append({"check": what, "ok": bool(ok), "detail": str(detail)[:300]})
        return bool(ok)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c["ok"] for c in self.checks)


@dataclass
class Ctx:
    work: Path
    model: ModelChoice
    grid: GridSpec
    volume: np.ndarray
    patient: str
    repeats: int
    _copies: list[SeriesOnDisk] = field(default_factory=list)

    def series(self, n: int) -> SeriesOnDisk:
        """The n-th copy of the input series (same pixels, its own UIDs), written on first use."""
        while len(self._copies) <= n:
            k = len(self._copies)
            self._copies.append(write_series(self.work / "series" / f"s{k:02d}", self.grid, self.patient, self.volume))
        return self._copies[n]


def job_store(job_dir: Path):
    from service.jobs.store import JobStore

    return JobStore(job_dir)


def wait_for(predicate, timeout_s: float, interval_s: float = 0.05):
    """Poll until ``predicate()`` is truthy; returns its value, or None after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value or None
        time.sleep(interval_s)


def wait_stage(store, job_id: str, stages: tuple[str, ...], timeout_s: float, min_attempts: int = 1):
    """Wait until the job's record shows one of ``stages`` (at attempt >= ``min_attempts``)."""

    def probe():
        r = store.get(job_id)
        return r if (r.stage in stages and r.attempts >= min_attempts) or r.state in DONE_STATES else None

    return wait_for(probe, timeout_s)


def wait_done(store, job_id: str, timeout_s: float):
    return wait_for(lambda: (r := store.get(job_id)) is not None and r.state in DONE_STATES and r, timeout_s, 0.1)


def kill_pool_child(worker: Proc) -> int | None:
    """SIGKILL the prefork pool child of a ``parotid-seg worker`` (the process running the job)."""
    kids = children(worker.pid)
    if not kids:
        return None
    import os

    os.kill(kids[0], signal.SIGKILL)
    return kids[0]


def finished_once(sc: Scenario, store, job_id: str, logs: Callable[[], str], attempts: int | None = None) -> None:
    """The checks every recovered job must pass: succeeded, ran to completion once, exactly one set of outputs.
    ``logs()`` returns the worker logs (the 'succeeded' line follows the record update by a moment)."""
    r = store.get(job_id)
    line = f"job {job_id}: succeeded"
    wait_for(lambda: line in logs(), 10, 0.1)
    sc.check(f"job {job_id[:8]} succeeded", r.state == "succeeded", f"{r.state} {r.error}")
    if attempts is not None:
        sc.check(f"job {job_id[:8]} started {attempts} times", r.attempts == attempts, f"attempts={r.attempts}")
    sc.check(f"job {job_id[:8]} completed once (record)", r.completions == 1, f"completions={r.completions}")
    n_lines = logs().count(line)
    sc.check(f"job {job_id[:8]} completed once (worker logs)", n_lines == 1, f"{n_lines} 'succeeded' log lines")
    outputs = sorted(p.name for p in (store.job_path(job_id) / "output").iterdir())
    sc.check(
        f"job {job_id[:8]} has one RTSTRUCT, QA and preview, no partial files",
        outputs == ["preview.png", "qa.json", "rtstruct.dcm"],
        outputs,
    )
