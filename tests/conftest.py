"""Shared pytest fixtures. Feature-specific fixtures live in their own plugin modules listed below."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SHARED_DATA = ROOT.parent / "shared" / "data"

pytest_plugins = ["tests.fhir_server.fixtures", "tests.service_fixtures.postgres"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only synthetic FHIR data beside the project; skip cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (only present inside the workplace)")
    return SHARED_DATA
