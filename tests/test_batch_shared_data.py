"""The batch review over every data set in ../shared/data (real synthetic data written by others)."""
from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_hooks.batch import errors
from cds_hooks.batch.cli import main
from cds_hooks.batch.reports.writer import to_json
from cds_hooks.batch.runner import RunConfig, run_review
from plugin import ReviewOptions

pytestmark = pytest.mark.shared_data
AS_OF = datetime(2021, 6, 1, 23, 59, 59, tzinfo=UTC)
WIDE = ReviewOptions(lab_lookback_days=3650, monitoring_months=120)


def run(*paths: Path, workers: int = 1, **kw):
    return run_review([str(p) for p in paths], RunConfig(as_of=AS_OF, options=WIDE, workers=workers, **kw))


def totals(result) -> Counter:
    return Counter(cid for r in result.reviewed for cid in set(r.contributor_ids))


def test_bundle_folder(shared_data):
    result = run(shared_data / "bundles")
    assert len(result.reviewed) == 20 and result.bad_records == []
    assert {Path(r.source).name for r in result.reviewed} == {p.name for p in (shared_data / "bundles").glob("*.json")}
    deceased = [Path(r.source).name for r in result.reviewed if r.review.deceased]
    # Synthea leaves medications active on the dead (data README); inferno patient 85 is deceased too
    for prefix in ("gsd__Parker_Casper", "gsd__Tristan_Gleason", "gsd__Cathryn_Windler", "inferno__uscore_bundle_patient_85"):
        assert any(name.startswith(prefix) for name in deceased), prefix
    assert all(r.review.findings == [] for r in result.reviewed if r.review.deceased)
    assert totals(result)["thiazide-diuretic"] >= 2


def test_bulk_data_server_100_patients_matches_its_bundles(shared_data):
    export = shared_data / "ndjson" / "bulk-data-server-100-patients"
    result = run(export / "manifest.json")
    assert len(result.reviewed) == 100 and result.bad_records == [] and result.stats.resources == 11032
    t = totals(result)
    assert t["thiazide-diuretic"] >= 10 and t["statin"] >= 10 and t["naproxen"] >= 5
    # the same synthetic patients as the bds__ bundles: ndjson facts + evaluate == plugin.review of the Bundle
    bundles = run(*sorted((shared_data / "bundles").glob("bds__*.json")))
    by_patient = {r.patient: r.review.findings for r in result.reviewed}
    assert len(bundles.reviewed) == 5
    for r in bundles.reviewed:
        assert by_patient[r.patient] == r.review.findings, r.source


def test_bulk_data_server_export_is_the_same_for_any_worker_count(shared_data):
    export = shared_data / "ndjson" / "bulk-data-server-100-patients"
    one = to_json(run(export, workers=1))
    assert to_json(run(export, workers=2, chunk_bytes=256 * 1024)) == one


def test_inferno_group_export(shared_data):
    result = run(shared_data / "ndjson" / "inferno-group-1a")
    assert [r.patient for r in result.reviewed] == ["Patient/355", "Patient/85", "Patient/907"]
    assert result.bad_records == []
    assert [r.patient for r in result.reviewed if r.review.deceased] == ["Patient/85"]
    assert any("skipped" in w and "Encounter" in w for w in result.warnings)


def test_synthea_export_reports_its_log_file_as_not_fhir_not_as_bad_records(shared_data, capsys):
    folder = shared_data / "ndjson" / "synthea-bulk-10-patients"
    code = main([str(folder), "--as-of", "2026-11-01", "--quiet", "--lab-lookback-days", "3650"])
    doc = json.loads(capsys.readouterr().out)
    assert code == errors.OK
    assert doc["badRecords"] == []
    assert [(Path(f["file"]).name, f["kind"]) for f in doc["nonFhirFiles"]] == [
        ("log.ndjson", "Bulk Data export log (not FHIR resources)")]
    assert doc["counts"]["patients"] == 13 and doc["counts"]["deceased"] == 3
    assert doc["totals"]["statin"] >= 1 and doc["totals"]["thiazide-diuretic"] >= 1


def test_hl7_loose_resources(shared_data):
    result = run(shared_data / "resources" / "hl7-r4-examples")
    assert result.bad_records == []
    assert {r.patient for r in result.reviewed} >= {"Patient/pat1", "Patient/pat2"}


def test_everything_at_once(shared_data):
    result = run(shared_data, workers=2)
    assert len({(r.patient, r.source) for r in result.reviewed}) == len(result.reviewed) >= 20 + 100 + 3 + 13
    assert result.bad_records == []
    assert {Path(f.file).name for f in result.non_fhir_files} == {"log.ndjson"}
