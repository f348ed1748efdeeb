"""The review tests reuse the service tests' fixtures (the oracle model store, the phantom series, the app) and
the listener tests' (a job service, listeners on free ports, phantom series with new UIDs)."""

from tests.listener.conftest import job_service, make_series, start_listener  # noqa: F401
from tests.service.conftest import ct_series, embedded_client, model_store  # noqa: F401
