"""The review workstation page: static files in ``service/api/static`` served at ``/ui/`` (``/`` redirects there).

Plain HTML, CSS and ES modules, no build step; the viewer (NiiVue) is vendored under ``static/vendor/niivue``
by ``scripts/vendor-niivue.sh``, so the page loads nothing from outside the service and works offline. The page
holds no secret: it asks for an API key, keeps it in ``sessionStorage`` and sends it as the Bearer header (no
cookies, so no cross-site request forgery surface).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
# the page's own scripts only; blob: for the volumes handed to the viewer, WebGL needs no extra source
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self' blob: data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)


class _UiFiles(StaticFiles):
    async def get_response(self, path, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response


def install(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    def _ui() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    app.mount("/ui", _UiFiles(directory=STATIC_DIR, html=True), name="ui")
