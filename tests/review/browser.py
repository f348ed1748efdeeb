"""Helpers of the browser tests: the API served by uvicorn in a thread, headless Chromium driven by selenium
(WebGL2 through SwiftShader), and reading the viewer's geometry and screenshots."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.support import browser

# no host but the test server resolves: the page must work without internet access
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=1400,950",
    "--force-device-scale-factor=1",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
)


class ThreadedServer:
    """``uvicorn.Server`` in a daemon thread (the app's lifespan starts its job service)."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the test server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_chrome():
    return browser.start_chrome(CHROME_ARGS, {"browser": "ALL"})


def wait_until(fn: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def screenshot_rgb(driver) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(np.int16)


def axial_tile(driver) -> tuple[float, float, float, float, int]:
    """(left, top, width, height) of the axial tile in page pixels, and the axial slice shown (canonical z)."""
    ltwh, k, canvas = driver.execute_script(
        """const nv = window.reviewApp.viewer.nv;
        const s = nv.screenSlices.find((t) => t.axCorSag === 0);
        const r = nv.canvas.getBoundingClientRect();
        const k = nv.frac2vox(nv.scene.crosshairPos)[2];
        return [Array.from(s.leftTopWidthHeight), k, [r.left, r.top, nv.canvas.width / r.width]];"""
    )
    scale = canvas[2]
    left, top, width, height = (v / scale for v in ltwh)
    return canvas[0] + left, canvas[1] + top, width, height, int(k)


def fit_image(tile, shape_zyx, spacing_mm_zyx):
    """The rectangle the axial image occupies in its tile: the field of view scaled to fit, centred (NiiVue keeps
    the aspect ratio in millimetres)."""
    left, top, width, height, k = tile
    _, ny, nx = shape_zyx
    _, sy, sx = spacing_mm_zyx
    fov_w, fov_h = nx * sx, ny * sy
    scale = min(width / fov_w, height / fov_h)
    w, h = fov_w * scale, fov_h * scale
    return left + (width - w) / 2, top + (height - h) / 2, w, h, k


def voxel_centre_px(tile, i: float, j: float, shape_zyx) -> tuple[int, int]:
    """Page pixel of canonical voxel (column i, row j) in the radiological axial view: patient's right (small i)
    on the left, anterior (small j) at the top."""
    left, top, width, height, _ = tile
    _, ny, nx = shape_zyx
    return int(left + width * (i + 0.5) / nx), int(top + height * (j + 0.5) / ny)


def colour_class(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """True where a pixel shows ``colour`` blended over the grey CT: its channels order as the colour's and the
    spread between its strongest and weakest channel is clearly not grey."""
    rgb = rgb.astype(np.int32)
    c = np.asarray(colour)
    hi, lo = int(np.argmax(c)), int(np.argmin(c))
    return (rgb[..., hi] - rgb[..., lo] > 50) & np.all(
        (rgb[..., hi, None] >= rgb) & (rgb[..., lo, None] <= rgb), axis=-1
    )
