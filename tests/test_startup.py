"""Start-up stays under 1 s (issue 11, point 5; figures in docs/performance.md, "Start-up under 1 s").

What made it so is checked here without timing anything: in a fresh interpreter, the deployable app starts with
the cyclic garbage collector paused (no collection runs while it builds over 100,000 long-lived objects, and the
collector is on again afterwards); a new database is created without loading Alembic; and requests is not
loaded by a start and a hook call that fetches nothing. The call answers with a card, so the store is really
read (suppression) and written (the issued card).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.service_fixtures.support import cramps_on_thiazide_prefetch, hook_request

# Runs in a fresh interpreter: the request body on stdin, what happened as JSON on stdout.
START_AND_CALL = """
import gc, json, sys

from cds_hooks.app import create_app  # a few small modules: the service itself loads in create_app

collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
app = create_app()
during_start = list(collections)
response = app.test_client().post("/cds-services/leg-cramp-patient-view", data=sys.stdin.buffer.read(),
                                  content_type="application/json")
print(json.dumps({
    "status": response.status_code,
    "cards": len(response.get_json()["cards"]),
    "collections_during_start": during_start,
    "collector_on_after_start": gc.isenabled(),
    "loaded": sorted(m for m in ("sqlalchemy", "alembic", "requests") if m in sys.modules),
}))
"""


def start_and_call(data_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAMP_")}
    env.update(CRAMP_PROFILE="local", CRAMP_DATA_DIR=str(data_dir), CRAMP_LOG_LEVEL="WARNING")
    body = json.dumps(hook_request(prefetch=cramps_on_thiazide_prefetch()))
    out = subprocess.run([sys.executable, "-c", START_AND_CALL], input=body, capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_start_collects_no_garbage_needs_no_alembic_and_answers_with_a_card(tmp_path):
    first = start_and_call(tmp_path)  # a fresh install: the secret key and the database are created
    assert (first["status"], first["cards"]) == (200, 1)
    assert first["collections_during_start"] == []
    assert first["collector_on_after_start"] is True
    assert first["loaded"] == ["sqlalchemy"], "Alembic only to upgrade, requests only to fetch"
    again = start_and_call(tmp_path)  # a restart on the database the first start made
    assert (again["status"], again["cards"], again["loaded"]) == (200, 1, ["sqlalchemy"])
