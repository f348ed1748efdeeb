"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served from the installation, without any CDN.

FastAPI's own pages load Swagger UI and ReDoc from cdn.jsdelivr.net (and ReDoc's fonts from Google Fonts): on a
closed hospital network they are blank. The assets come from the ``fastapi-offline`` package (MIT; it ships
``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js`` and a favicon, refreshed by its maintainer
with each Swagger UI / ReDoc release), are served under ``/docs-assets/`` and the pages are FastAPI's own HTML
(``get_swagger_ui_html``, ``get_redoc_html``) pointed at them, with the Swagger validator badge (an outside call)
and ReDoc's Google Fonts turned off. Both pages carry a Content-Security-Policy that allows only this server (and
inline/blob code the two libraries need), so nothing left in the bundles (ReDoc's "API docs by Redocly" logo is an
image on cdn.redoc.ly) can reach outside. Upgrading the assets is upgrading the package.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'self'"
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def assets_dir() -> str:
    """The folder of the installed ``fastapi_offline`` package's static files."""
    return str(files("fastapi_offline") / "static")


def install_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add ``docs_url``, ``redoc_url`` and the assets to ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"
    favicon = f"{ASSETS_PATH}/favicon.png"

    async def swagger_ui() -> HTMLResponse:
        return _offline(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=oauth2_redirect_url,
                swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                swagger_favicon_url=favicon,
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc() -> HTMLResponse:
        return _offline(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
                redoc_favicon_url=favicon,
                with_google_fonts=False,
            )
        )

    app.add_api_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_api_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_api_route(redoc_url, redoc, include_in_schema=False)
