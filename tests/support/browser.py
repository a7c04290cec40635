"""A real headless Chromium driven by Selenium through chromedriver, for the admin dashboard.

``chromium`` and ``chromedriver`` come from Debian's ``chromium`` and ``chromium-driver`` packages
(``scripts/install-test-deps``, which ``scripts/test`` runs); Selenium is a test extra. A test that
needs them fails with that instruction when one is missing; it does not skip. Nothing is
downloaded: the driver and browser paths are given, so Selenium Manager has nothing to look up.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MISSING = (
    "{what} not found: the dashboard test needs Debian's chromium and chromium-driver packages and "
    "Selenium (the test extra); run scripts/install-test-deps and scripts/bootstrap test "
    "(scripts/test runs both)"
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(MISSING.format(what=name))
    return path


@contextmanager
def chromium(profile: Path, size: tuple[int, int] = (1400, 1000)) -> Iterator[Any]:
    """A Selenium ``WebDriver`` for a headless Chromium with a fresh profile under ``profile``;
    the browser's console is kept (``driver.get_log("browser")``)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise AssertionError(MISSING.format(what="the selenium package")) from None
    browser = _which("chromium")
    driver_path = _which("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log = profile.parent / "chromedriver.log"
    driver = webdriver.Chrome(options=options, service=Service(driver_path, log_output=str(log)))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """Console entries logged at error level (``SEVERE``) since the last call."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
