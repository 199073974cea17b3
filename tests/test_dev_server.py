"""``cramp-cds serve`` (the `make run` server) keeps its memory flat under many calls (issue 13, item 8).

It grew by 5-15 MiB per thousand calls without end: every request ran on a new Werkzeug thread, and the
feedback store opened a new SQLite connection for each thread (schema, page cache), freed at the thread's
end into a fragmented C heap. The store now keeps a bounded pool of connections (SQLAlchemy), so the growth
stops once their page caches are warm (5,000-6,000 calls on a fresh database). The real command runs on
loopback, 4 clients call patient-view concurrently, and the server's RSS (/proc) after the warm-up is
compared with its RSS after two more rounds of calls.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, SAMPLES
from tests.service_fixtures.postgres import free_port
from tests.service_fixtures.waiting import wait_until_answering

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the RSS")]

CALLS_PER_ROUND = 1000
WARM_UP_ROUNDS = 6  # measured on a quiet machine: RSS levels off after 5,000-6,000 calls
ALLOWED_GROWTH_MIB = 4  # over the two measured rounds; the old store grew 15-30 MiB over two rounds here


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_serve_memory_stays_flat_under_many_calls(tmp_path):
    port = free_port()
    env = {**os.environ, "CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path), "CRAMP_LOG_LEVEL": "WARNING",
           "CRAMP_SECRET_KEY": "test-secret-key-0123456789abcdef"}
    command = [str(Path(sys.executable).parent / "cramp-cds"), "serve", "--port", str(port)]
    body = json.loads((SAMPLES / "hooks" / "patient-view.json").read_text())
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_answering(proc, url + "/healthz")

        def call(_: int) -> None:
            response = requests.post(url + "/cds-services/leg-cramp-patient-view", json=body, timeout=30)
            assert response.status_code == 200

        def round_of_calls() -> float:
            with ThreadPoolExecutor(4) as clients:
                list(clients.map(call, range(CALLS_PER_ROUND)))
            return rss_mib(proc.pid)

        for _ in range(WARM_UP_ROUNDS - 1):  # warm-up: the connections' page caches, the allocator's pools
            round_of_calls()
        warm = round_of_calls()
        rounds = [round_of_calls(), round_of_calls()]
        assert rounds[-1] - warm <= ALLOWED_GROWTH_MIB, f"RSS {warm:.1f} MiB after warm-up, then {rounds}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
