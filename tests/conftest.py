"""Shared pytest fixtures. Feature-specific fixtures live in their own plugin modules listed below."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SHARED_DATA = ROOT.parent / "shared" / "data"

pytest_plugins = ["tests.fhir_server.fixtures", "tests.service_fixtures.postgres", "tests.wall_clock"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only synthetic FHIR data beside the project; skip cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (only present inside the workplace)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium per browser-test module (those call `tests.browser_support.require_browser()`)."""
    from tests.browser_support import WAIT, chromium

    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
