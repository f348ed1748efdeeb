"""The review tests reuse the service tests' fixtures: the oracle model store, the phantom series, the app."""

from tests.service.conftest import ct_series, embedded_client, model_store  # noqa: F401
