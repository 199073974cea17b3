"""pytest plugin: loopback FHIR R4 server fixtures.

Register with ``pytest_plugins = ["tests.fhir_server.fixtures"]`` (root conftest.py).

* ``fhir_server`` (session): one server for the whole run. Tests share its data, so load what
  you need and find it again by the ids the transaction response gives you (or load with
  ``preserve_ids=True``); do not assume the server is empty.
* ``fresh_fhir_server`` (function): an empty server for each test. It is a second server
  process kept for the session and wiped (``POST /__admin/reset``, ~1 ms) before each test, so
  it costs one start-up (~0.6 s) per session, not per test. Under pytest-xdist each worker
  process has its own servers.

* ``fhir_server_factory`` (function): ``factory(token="s3cret")`` starts an extra server with
  other options (a bearer-token check, a page size) and stops it after the test (~0.6 s each).

All skip (``pytest.skip`` with the reason) when Node/npm cannot run the server here, e.g.
"node not found on PATH" or "npm install failed: ...". Set ``CRAMP_REQUIRE_NODE=1`` to turn
that skip into a failure (for a CI that must exercise the real server).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import FhirServer, ensure_installed, node_available


def _require_node() -> None:
    reason = node_available()
    if reason is None:
        return
    if os.environ.get("CRAMP_REQUIRE_NODE") == "1":
        pytest.fail(f"FHIR test server unavailable (CRAMP_REQUIRE_NODE=1): {reason}", pytrace=False)
    pytest.skip(f"FHIR test server unavailable: {reason}")


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    """A running loopback FHIR R4 server shared by the session (``.base_url``, ``.load()``)."""
    _require_node()
    ensure_installed()
    with FhirServer() as server:
        yield server


@pytest.fixture(scope="session")
def _fresh_fhir_server_process() -> Iterator[FhirServer]:
    _require_node()
    ensure_installed()
    with FhirServer() as server:
        yield server


@pytest.fixture
def fresh_fhir_server(_fresh_fhir_server_process: FhirServer) -> FhirServer:
    """An empty loopback FHIR server for this test (a session process, wiped before the test)."""
    server = _fresh_fhir_server_process
    if not server.running:  # a test stopped it: bring it back
        server.start()
    server.reset()
    return server


@pytest.fixture
def fhir_server_factory() -> Iterator[Callable[..., FhirServer]]:
    """``factory(token=..., default_count=..., log=...)`` -> a started FhirServer, stopped after the test."""
    _require_node()
    ensure_installed()
    started: list[FhirServer] = []

    def factory(**kwargs: Any) -> FhirServer:
        server = FhirServer(**kwargs).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
