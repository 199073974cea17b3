"""Issue 7: the batch review's per-patient search against a real FHIR server on loopback (no mocks)."""
from __future__ import annotations

import json

import pytest

from cds_hooks.batch.cli import main as batch_main
from tests.conftest import SAMPLES

pytestmark = pytest.mark.node
SAMPLE_IDS = {"ckd-diuretics.json": "sample-ckd", "hctz-no-labs.json": "sample-hctz",
              "e1-drugs.json": "sample-e1drugs", "lss-venous.json": "sample-lss"}


def test_per_patient_search_matches_reviewing_the_files(fresh_fhir_server, tmp_path, capsys):
    for name in SAMPLE_IDS:
        fresh_fhir_server.load(json.loads((SAMPLES / "patients" / name).read_text()), preserve_ids=True)
    as_of = "2026-11-01"
    code = batch_main([fresh_fhir_server.base_url, "--patients", ",".join(SAMPLE_IDS.values()), "--no-export",
                       "--as-of", as_of, "--quiet", "--workers", "1", "--format", "json"])
    from_server = json.loads(capsys.readouterr().out)
    assert code == 0, from_server.get("badRecords")

    files = [str(SAMPLES / "patients" / name) for name in SAMPLE_IDS]
    assert batch_main([*files, "--as-of", as_of, "--quiet", "--workers", "1", "--format", "json"]) == 0
    from_files = json.loads(capsys.readouterr().out)

    def findings(doc):
        return {p["patient"]: sorted(f["contributor"] for f in p["findings"]) for p in doc["patients"]}

    assert findings(from_server) == findings(from_files)
    assert set(findings(from_server)) == {f"Patient/{pid}" for pid in SAMPLE_IDS.values()}


def test_unknown_patient_is_reported_and_the_rest_complete(fresh_fhir_server, capsys):
    fresh_fhir_server.load(json.loads((SAMPLES / "patients" / "hctz-no-labs.json").read_text()), preserve_ids=True)
    code = batch_main([fresh_fhir_server.base_url, "--patients", "sample-hctz,nobody-here", "--no-export",
                       "--quiet", "--workers", "1", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3
    assert [p["patient"] for p in doc["patients"]] == ["Patient/sample-hctz"]
    assert any("nobody-here" in b["error"] or "nobody-here" in b["file"] for b in doc["badRecords"])
