"""Celery mode: the Celery app (one factory for producer and worker, so both share the Redis transport options),
the task, and the dispatcher the API uses to queue jobs.

Reliability settings (Celery docs "Tasks", "Optimizing", "Using Redis"; issues #1628, #5935, #3402):

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after the job ran, so a
  worker killed mid-job leaves it in Redis' unacked set and another worker gets it again.
- Redis redelivers an unacknowledged message after ``visibility_timeout``; it must exceed the longest job
  (``Settings`` refuses less than the hard time limit), on the producer as well as the worker (both use this
  factory). The restore sweep runs every ``visibility_timeout / 10`` s (at most 10 s).
- redeliveries are capped by ``run_job`` (``attempts`` in the job record, ``PAROTID_MAX_REDELIVERIES``).
- ``worker_prefetch_multiplier=1``, concurrency 1: a worker holds one job at a time. Pool ``prefork`` with one
  child: TensorFlow is imported (and the model loaded, once) only in the child, after the fork, never in the
  parent; the parent enforces the hard time limit by replacing the child. ``--pool solo`` is possible but has no
  time limits.
- soft limit ``PAROTID_JOB_TIME_LIMIT_S`` (the job fails with TIMEOUT), hard limit PAROTID_HARD_LIMIT_GRACE_S later.
- results: job state lives in the job store, so task results are ignored; ``result_expires`` bounds any kept.
"""

from __future__ import annotations

import logging
from typing import Literal
from urllib.parse import urlsplit

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel, Field

from service.config import Settings
from service.errors import ErrorCode
from service.jobs.dispatch import DispatchUnavailable
from service.jobs.models import JOB_ID_RE
from service.jobs.store import JobStore
from service.worker.runner import run_job

log = logging.getLogger(__name__)
TASK_NAME = "parotid_seg.run_job"


class RunJobArgs(BaseModel):
    """The task's only argument: which job to run (never arrays or paths)."""

    schema_version: Literal[1] = 1
    job_id: str = Field(pattern=JOB_ID_RE.pattern)


def transport_options(settings: Settings) -> dict:
    interval = max(1, min(10, settings.visibility_timeout_s // 10))
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": settings.broker_timeout_s,
        "socket_timeout": max(10.0, settings.broker_timeout_s),
    }


def create_celery(settings: Settings, store: JobStore | None = None) -> Celery:
    if settings.broker_url is None:
        raise ValueError("PAROTID_BROKER_URL is not set")
    app = Celery("parotid_seg", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_soft_time_limit=settings.job_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        task_ignore_result=True,
        result_expires=settings.result_expires_s,
        broker_transport_options=transport_options(settings),
        broker_connection_timeout=settings.broker_timeout_s,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    job_store = store or JobStore(settings.job_dir)

    @app.task(name=TASK_NAME, bind=True)
    def run_job_task(self, payload: dict) -> None:
        args = RunJobArgs.model_validate(payload)
        run_job(job_store, settings, args.job_id, timeout_exceptions=(SoftTimeLimitExceeded,))

    return app


def broker_label(url: str) -> str:
    """``host:port/db`` of a broker URL, without credentials (for messages)."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}{parts.path or ''}"


class CeleryDispatcher:
    kind = "celery"

    def __init__(self, settings: Settings) -> None:
        import redis

        self.settings = settings
        self.app = create_celery(settings)
        assert settings.broker_url is not None
        timeout = settings.broker_timeout_s
        self._redis = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=timeout, socket_timeout=timeout)

    def start(self) -> None:
        return None

    def _unavailable(self) -> DispatchUnavailable:
        assert self.settings.broker_url is not None
        return DispatchUnavailable(
            ErrorCode.BROKER_UNAVAILABLE,
            f"the job queue (Redis at {broker_label(self.settings.broker_url)}) is not reachable; the job was not "
            "accepted. Submit it again once GET /readyz reports ready",
            retry_after_s=30,
        )

    def submit(self, job_id: str) -> None:
        payload = RunJobArgs(job_id=job_id).model_dump()
        try:
            # a Redis that accepts connections but never answers would hold the publish for kombu's socket
            # timeout and its retries (~10 s and more): one PING bounded by PAROTID_BROKER_TIMEOUT_S first
            self._redis.ping()
            self.app.send_task(TASK_NAME, args=[payload], queue=self.settings.queue_name)
        except Exception as exc:  # kombu OperationalError, redis ConnectionError, OSError, ...
            log.warning("job %s: could not be queued (%s)", job_id, type(exc).__name__)
            raise self._unavailable() from None

    def check(self) -> tuple[bool, str]:
        try:
            self._redis.ping()
        except Exception as exc:
            return False, f"{self._unavailable().message} ({type(exc).__name__})"
        depth = self.queue_depth()
        assert self.settings.broker_url is not None
        return True, f"Redis at {broker_label(self.settings.broker_url)} reachable; {depth} job(s) waiting"

    def queue_depth(self) -> int | None:
        try:
            return int(self._redis.llen(self.settings.queue_name))
        except Exception:
            return None

    def close(self) -> None:
        self.app.close()
        self._redis.close()
