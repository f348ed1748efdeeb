"""Cumulative per-stage duration histograms, kept in the job store so every worker process (embedded threads,
Celery workers on other machines sharing the volume) adds to the one series the API exposes on /metrics.

``stats/stage_seconds.json``: ``{stage: {"buckets": [cumulative counts per BUCKETS_S bound], "count": n,
"sum": seconds}}``, updated under an ``flock`` and rewritten atomically. Counts only grow (Prometheus counters).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.fileio import write_atomic
from service.jobs.store import dump_json

BUCKETS_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STATS_FILE = "stage_seconds.json"


def record_stage_times(stats_dir: Path, stage_times_s: Mapping[str, float]) -> None:
    """Add one job's stage durations (and their total as stage ``total``) to the histograms."""
    times = {k: float(v) for k, v in stage_times_s.items()}
    times["total"] = sum(times.values())
    fd = os.open(stats_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = read_stage_histograms(stats_dir)
        for stage, seconds in times.items():
            h = data.setdefault(stage, {"buckets": [0] * len(BUCKETS_S), "count": 0, "sum": 0.0})
            for i, bound in enumerate(BUCKETS_S):
                if seconds <= bound:
                    h["buckets"][i] += 1
            h["count"] += 1
            h["sum"] += seconds
        write_atomic(stats_dir / STATS_FILE, dump_json(data))
    finally:
        os.close(fd)


def read_stage_histograms(stats_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((stats_dir / STATS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and len(v.get("buckets", [])) == len(BUCKETS_S)}
