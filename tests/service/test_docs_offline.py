"""``/docs`` and ``/redoc`` render with no network: Debian's headless Chromium (driven by selenium through
chromedriver) loads them from a real uvicorn server on loopback while every other host name fails to resolve.
Swagger UI must list the API's operations and ReDoc its operation sections; every request the browser made went
to the service. The control: FastAPI's stock CDN pages stay empty under the same conditions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from service.api.app import create_app
from tests.service.conftest import make_settings
from tests.support.browser import start_chrome
from tests.support.net import free_port, wait_for

CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=1280,1000",
    # no network: every host name but the loopback address fails to resolve (CDNs, fonts, validators)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class Server:
    """A uvicorn server for ``app`` on a free loopback port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def chrome() -> Iterator[Any]:
    driver = start_chrome(CHROME_ARGS, {"performance": "ALL"})
    yield driver
    driver.quit()


def _requests(driver) -> dict[str, str | None]:
    """URL -> why it was blocked (Chrome's ``blockedReason``, e.g. "csp"; None: not blocked) of every request the
    browser started since the last call (Chrome's performance log, Network domain)."""
    urls: dict[str, str] = {}
    blocked: dict[str, str] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked[params["requestId"]] = params["blockedReason"]
    return {url: blocked.get(rid) for rid, url in urls.items()}


def _requested_urls(driver) -> list[str]:
    return list(_requests(driver))


def _count(driver, css: str) -> int:
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, css))


def test_swagger_ui_and_redoc_render_offline_from_the_installation(chrome, tmp_path: Path, model_store: Path):
    from selenium.webdriver.common.by import By

    app = create_app(make_settings(tmp_path / "jobs", model_store))
    with Server(app) as server:
        chrome.get(f"{server.url}/docs")
        wait_for(lambda: _count(chrome, ".opblock") >= 5, 60, "Swagger UI to list the operations")
        paths = {e.get_attribute("data-path") for e in chrome.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/v1/jobs", "/v1/jobs/{job_id}", "/healthz"} <= paths, paths
        assert "parotid-seg" in chrome.find_element(By.CSS_SELECTOR, ".info .title").text
        urls = _requests(chrome)
        assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in urls), urls
        assert any(u.endswith("/openapi.json") for u in urls), urls

        chrome.get(f"{server.url}/redoc")
        wait_for(lambda: _count(chrome, "[data-section-id^='operation/']") >= 5, 60, "ReDoc to render the operations")
        assert "/v1/jobs" in chrome.find_element(By.TAG_NAME, "body").text
        urls.update(_requests(chrome))
        assert any(u.endswith("/docs-assets/redoc.standalone.js") for u in urls), urls
    # anything else the bundles ask for (ReDoc's Redocly logo on cdn.redoc.ly) is stopped by the pages' CSP
    outside = {u: why for u, why in urls.items() if not u.startswith((server.url, "data:", "blob:"))}
    assert all(why == "csp" for why in outside.values()), outside


def test_control_fastapis_cdn_pages_stay_blank_without_network(chrome):
    """Proves the browser really has no network: the stock pages (assets on cdn.jsdelivr.net) render nothing."""
    app = FastAPI(title="control")

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    with Server(app) as server:
        chrome.get(f"{server.url}/docs")
        time.sleep(3)
        assert _count(chrome, ".opblock") == 0
        assert any("cdn.jsdelivr.net" in u for u in _requested_urls(chrome))
