"""The HTTP API (FastAPI): ``create_app(settings)`` in ``service.api.app``; ``parotid-seg serve`` in ``app_cli``."""
