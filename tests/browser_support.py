"""Headless Debian Chromium for the browser tests: found, or the test module skips with the reason — except in CI.

`.ci/run` installs chromium and chromium-driver and sets CRAMP_REQUIRE_BROWSER=1: there a missing browser fails
the module instead of skipping it, so the browser tests can never silently stop running.
The driver path is always given, so Selenium Manager never downloads anything.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CRAMP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CRAMP_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRED = os.environ.get("CRAMP_REQUIRE_BROWSER") == "1"
WAIT = 15   # seconds for a page load or a wait on the page


def missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)) and not shutil.which(path):
            return f"{path} not found (apt-get install {package})"
    return None


def require_browser() -> None:
    """Call at module level: skip the module without a browser, or fail it when CI requires one."""
    if (reason := missing()) is None:
        return
    if REQUIRED:
        pytest.fail(f"CRAMP_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def chromium(profile: Path, width: int = 1280, height: int = 1400):
    """A headless Chromium WebDriver (call `quit()` when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def by_testid(root, testid: str):
    from selenium.webdriver.common.by import By

    return root.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')
