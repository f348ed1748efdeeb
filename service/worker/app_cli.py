"""``parotid-seg worker``: one Celery worker process for one GPU (or CPU), taking jobs from PAROTID_QUEUE_NAME.

Concurrency is always 1. Pool ``prefork`` (default): one child process runs the jobs, imports TensorFlow and
loads the model lazily on its first job, then keeps it; the parent never imports TensorFlow, so forking is safe,
and it enforces the hard time limit. ``--pool solo`` runs jobs in the main process (no time limits).
Run more workers (on more machines sharing the job store volume) to scale out.
"""

from __future__ import annotations

import argparse
import logging
import os

from pydantic import ValidationError

from service.config import ConfigError, config_error, load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pool",
        choices=["prefork", "solo"],
        default="prefork",
        help="prefork: one child process, time limits enforced (default); solo: in-process",
    )
    parser.add_argument("--hostname", help="Celery node name (default parotid-<pid>@%%h: unique per process)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args)
        if not settings.celery_mode:
            raise ConfigError(
                "PAROTID_BROKER_URL is not set: a worker needs redis://...; without a broker, "
                "'parotid-seg serve' runs jobs itself"
            )
        from service.jobs.store import JobStore
        from service.worker.celery_app import create_celery

        store = JobStore(settings.job_dir).prepare()
        app = create_celery(settings, store)
    except (ValidationError, ConfigError, OSError) as exc:
        return config_error(exc)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = [
        "worker",
        f"--pool={args.pool}",
        "--concurrency=1",
        "--prefetch-multiplier=1",
        f"--queues={settings.queue_name}",
        f"--loglevel={settings.log_level}",
        f"--hostname={args.hostname or f'parotid-{os.getpid()}@%h'}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0
