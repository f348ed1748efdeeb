"""The embedded dispatcher: a bounded queue and ``embedded_workers`` threads in the API (or listener) process.

The default when no broker is configured: one machine, no Redis. The model is loaded once per process (the
bundle cache) and shared by the threads; TensorFlow releases the GIL while it computes. On start, jobs an
earlier process left queued or running (it stopped or crashed) are queued again; ``run_job`` counts the starts.
There is no hard time limit here (a thread cannot be killed); ``PAROTID_JOB_TIME_LIMIT_S`` applies to Celery.
"""

from __future__ import annotations

import logging
import queue
import threading

from service.config import Settings
from service.errors import ErrorCode
from service.jobs.dispatch import DispatchUnavailable
from service.jobs.models import JobState
from service.jobs.store import JobStore
from service.worker.runner import run_job

log = logging.getLogger(__name__)
_STOP = ""


class EmbeddedDispatcher:
    kind = "embedded"

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._queue: queue.Queue[str] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for n in range(self.settings.embedded_workers):
                t = threading.Thread(target=self._loop, name=f"parotid-embedded-{n}", daemon=True)
                t.start()
                self._threads.append(t)
        requeued = 0
        for record in self.store.list_jobs():
            if record.dispatcher == "embedded" and record.state in (JobState.QUEUED, JobState.RUNNING):
                self._queue.put(record.id)
                requeued += 1
        if requeued:
            log.info("embedded dispatcher: %d unfinished job(s) queued again", requeued)

    def submit(self, job_id: str) -> None:
        with self._lock:
            if self._closed:
                raise DispatchUnavailable(ErrorCode.SHUTTING_DOWN, "the service is shutting down; submit again shortly")
            if self._queue.qsize() >= self.settings.embedded_queue_max:
                raise DispatchUnavailable(
                    ErrorCode.QUEUE_FULL,
                    f"{self._queue.qsize()} jobs are waiting (PAROTID_EMBEDDED_QUEUE_MAX "
                    f"{self.settings.embedded_queue_max}); submit again later",
                    retry_after_s=60,
                )
            self._queue.put(job_id)

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id == _STOP:
                return
            try:
                run_job(self.store, self.settings, job_id)
            except Exception as exc:  # a broken store must not kill the pool thread
                log.error("embedded worker: job %s: %s", job_id, type(exc).__name__)

    def check(self) -> tuple[bool, str]:
        alive = sum(t.is_alive() for t in self._threads)
        if self._closed or alive == 0:
            return False, "embedded worker pool is not running"
        return True, f"embedded pool: {alive} worker thread(s), {self.queue_depth()} job(s) waiting"

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the threads to stop (after close); for tests and orderly shutdowns."""
        for t in self._threads:
            t.join(timeout_s)
