"""Issue 6: for each sample patient, the batch finding set equals what the live service puts on its card.

The batch side runs `cramp-cds review` on the sample Bundle file; the live side is the real Flask app
answering the patient-view request an EHR would send (prefetch resolved from the service's own discovery
templates against the same Bundle).
"""
from __future__ import annotations

import json

import pytest

from cds_hooks.batch.cli import main as batch_main
from cds_hooks.sandbox.requests_builder import build_request
from tests.builders import NOW
from tests.conftest import SAMPLES
from tests.service_fixtures.support import make_client

SAMPLE_FILES = sorted((SAMPLES / "patients").glob("*.json"))
# The samples are dated around NOW: both sides review as of that day (the service through a frozen wall clock),
# so the comparison stays as rich in findings in 2030 as it is today.
TODAY = NOW.date()
pytestmark = pytest.mark.date_sensitive


@pytest.fixture(scope="module")
def batch_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "report.json"
    code = batch_main([str(SAMPLES / "patients"), "--as-of", TODAY.isoformat(), "--quiet", "--workers", "1",
                       "--format", "json", "--out", str(out)])
    assert code == 0
    return {p["patient"]: p for p in json.loads(out.read_text())["patients"]}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_batch_findings_equal_the_live_card(path, batch_report, tmp_path, frozen_now):
    bundle = json.loads(path.read_text())
    client = make_client(tmp_path, {"CRAMP_TRIGGER_POLICY": "any"})
    service = next(s for s in client.get("/cds-services").get_json()["services"] if s["hook"] == "patient-view")
    request = build_request(bundle, "patient-view", service, today=TODAY)
    response = client.post(f"/cds-services/{service['id']}", json=request)
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    on_card = cards[0]["extension"]["org.cramp-cds.review"]["contributors"] if cards else []

    patient = batch_report[f"Patient/{request['context']['patientId']}"]
    in_batch = [f["contributor"] for f in patient["findings"] if f["contributor"] != "leg-cramps-documented"]
    assert sorted(in_batch) == sorted(on_card)
