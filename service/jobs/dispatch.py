"""How a job id reaches a worker: the interface the job service submits through, and its error.

The implementations live in ``service.worker`` (``make_dispatcher`` chooses one):

- ``EmbeddedDispatcher`` (default, no broker configured): a bounded queue and a few threads in this process.
- ``CeleryDispatcher`` (``PAROTID_BROKER_URL=redis://...``): a Celery task on Redis, run by ``parotid-seg worker``.

Both pass only the job id; the job's files and state live in the job store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from service.config import Settings
from service.errors import ErrorCode
from service.jobs.store import JobStore


class DispatchUnavailable(Exception):
    """The job cannot be queued now (broker down, queue full); the message says why. HTTP 503."""

    def __init__(self, code: ErrorCode | str, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.retry_after_s = retry_after_s


class Dispatcher(Protocol):
    kind: str  # "embedded" or "celery"

    def start(self) -> None:
        """Begin taking jobs (embedded: start threads and requeue jobs left by a previous process)."""

    def submit(self, job_id: str) -> None:
        """Queue the job; raises DispatchUnavailable when it cannot."""

    def check(self) -> tuple[bool, str]:
        """Readiness of the queue: (ok, detail)."""

    def queue_depth(self) -> int | None:
        """Jobs waiting (not yet started), or None when unknown."""

    def close(self) -> None:
        """Stop taking jobs (embedded: a running job finishes in the background)."""


DispatcherFactory = Callable[[Settings, JobStore], Dispatcher]
"""Builds the dispatcher for a job store (``service.worker.dispatcher.make_dispatcher`` in the service)."""
