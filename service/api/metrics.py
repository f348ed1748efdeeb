"""Prometheus metrics for ``GET /metrics``, on a registry per app (never the process-global one).

- ``parotid_jobs{state}``: jobs in the store by state (read at scrape time: workers are other processes).
- ``parotid_stage_duration_seconds{stage}``: histogram of pipeline stage durations of succeeded jobs, cumulative
  across every worker process (kept in the job store by ``service.jobs.stats``); stage ``total`` is the sum.
- ``parotid_queue_depth``: jobs waiting in the queue (embedded pool or Redis list).
- ``parotid_jobs_submitted_total{result}``: POST outcomes in this API process (created, existing, refused,
  unavailable).
"""

from __future__ import annotations

from collections import Counter as TallyCounter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from service.jobs.models import JobState
from service.jobs.service import JobService
from service.jobs.stats import BUCKETS_S, read_stage_histograms


class _StoreCollector(Collector):
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator:
        by_state = TallyCounter(r.state for r in self.jobs.store.list_jobs())
        g = GaugeMetricFamily("parotid_jobs", "jobs in the job store by state", labels=["state"])
        for state in JobState:
            g.add_metric([state.value], by_state.get(state, 0))
        yield g
        depth = self.jobs.dispatcher.queue_depth()
        q = GaugeMetricFamily("parotid_queue_depth", "jobs waiting to start (NaN: queue unreachable)")
        q.add_metric([], float("nan") if depth is None else depth)
        yield q
        h = HistogramMetricFamily(
            "parotid_stage_duration_seconds", "pipeline stage durations of succeeded jobs", labels=["stage"]
        )
        for stage, data in sorted(read_stage_histograms(self.jobs.store.stats_dir).items()):
            buckets = [(str(b), c) for b, c in zip(BUCKETS_S, data["buckets"], strict=True)]
            buckets.append(("+Inf", data["count"]))
            h.add_metric([stage], buckets, data["sum"])
        yield h


class ApiMetrics:
    def __init__(self, jobs: JobService) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StoreCollector(jobs))
        self.submitted = Counter(
            "parotid_jobs_submitted", "POST /v1/jobs outcomes in this API process", ["result"], registry=self.registry
        )
