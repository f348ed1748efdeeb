"""Headless Debian Chromium driven by selenium through chromedriver, for the browser tests (skipped locally, failing
in CI when the browser, its driver or selenium is missing)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.conftest import missing, require_tool

INSTALLER = "scripts/install-debian-tools.sh"


def start_chrome(args: Iterable[str], logging_prefs: dict[str, str]) -> Any:
    """A Chrome webdriver with these command-line ``args`` and ``goog:loggingPrefs``."""
    chromium = require_tool("chromium", INSTALLER)
    driver = require_tool("chromedriver", INSTALLER)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium (pip install -e '.[test]')")
    opts = webdriver.ChromeOptions()
    for arg in args:
        opts.add_argument(arg)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", logging_prefs)
    return webdriver.Chrome(service=Service(driver), options=opts)
