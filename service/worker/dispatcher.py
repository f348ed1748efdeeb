"""The choice between the two dispatcher implementations (the interface is ``service.jobs.dispatch.Dispatcher``).

- ``EmbeddedDispatcher`` (default, no broker configured): a bounded queue and a few threads in this process.
- ``CeleryDispatcher`` (``PAROTID_BROKER_URL=redis://...``): a Celery task on Redis, run by ``parotid-seg worker``.
"""

from __future__ import annotations

from service.config import Settings
from service.jobs.dispatch import Dispatcher
from service.jobs.store import JobStore


def make_dispatcher(settings: Settings, store: JobStore) -> Dispatcher:
    if settings.celery_mode:
        from service.worker.celery_app import CeleryDispatcher

        return CeleryDispatcher(settings)
    from service.worker.embedded import EmbeddedDispatcher

    return EmbeddedDispatcher(settings, store)
