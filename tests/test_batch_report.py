"""The reports are written patient by patient from the on-disk shards: the same text as building them whole."""
from __future__ import annotations

import csv
import io
import json

import pytest

from cds_hooks.batch import shards
from cds_hooks.batch.model import BatchResult, PatientRows, Summary
from cds_hooks.batch.reports import html as html_report
from cds_hooks.batch.reports.summary import entry_dict, totals, worklist_dict
from cds_hooks.batch.reports.worklist import Worklist
from cds_hooks.batch.reports.writer import render, write_report
from cds_hooks.batch.runner import RunConfig, run_review
from plugin import default_knowledge
from tests.builders import NOW, bundle, cramps, med_request, patient, rx
from tests.test_batch_stream import EXPECTED, panel, write_ndjson

FILTERS = [{}, {"only_documented_cramps": True}, {"contributors": ("laba", "statin")},
           {"contributors": ("laba",), "only_documented_cramps": True}]


def whole_json(result: BatchResult) -> str:
    """The JSON report as it was built before streaming: one document, one `json.dumps`."""
    listed = list(result.patients)
    reviewed = list(result.reviewed)
    with Worklist(result, default_knowledge()) as worklist:
        entries = [entry_dict(e) for e in worklist]
        summary = worklist_dict(worklist)
    doc = {
        "asOf": result.as_of.date().isoformat(),
        "knowledgeVersion": result.knowledge_version,
        "filters": result.filters,
        "counts": {"patients": len(reviewed), "documentedCramps": sum(p.review.documented_cramps for p in reviewed),
                   "withContributor": sum(bool(p.review.contributors) for p in reviewed),
                   "deceased": sum(p.review.deceased for p in reviewed), "listed": len(listed),
                   "badRecords": len(result.bad_records)},
        "worklist": summary,
        "patients": entries,
        "badRecords": [b.to_dict() for b in result.bad_records],
        "exportErrors": [b.to_dict() for b in result.export_errors],
        "nonFhirFiles": [f.to_dict() for f in result.non_fhir_files],
        "warnings": list(result.warnings),
        "totals": totals(result, default_knowledge()),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("filters", FILTERS, ids=["all", "cramps", "contributors", "none-listed"])
def test_streamed_json_is_the_one_document_text(tmp_path, filters):
    folder = panel(tmp_path / "export")
    write_ndjson(folder / "Condition.001.ndjson", [cramps("c9") | {"subject": {"reference": "Patient/p5"}}])
    result = run_review([str(folder)], RunConfig(as_of=NOW, **filters))
    assert render(result, "json") == whole_json(result)
    assert json.loads(render(result, "json"))["counts"]["patients"] == 5


def test_rows_are_read_back_sorted_from_every_shard_and_can_be_read_again(tmp_path, monkeypatch):
    folder = panel(tmp_path / "export")
    (tmp_path / "b.json").write_text(json.dumps(bundle(patient("p2"), med_request("x", rx("36117"), subject="Patient/p2"))))
    default = run_review([str(folder), str(tmp_path / "b.json")], RunConfig(as_of=NOW))
    monkeypatch.setattr(shards, "SHARDS", 3)
    few = run_review([str(folder), str(tmp_path / "b.json")], RunConfig(as_of=NOW, workers=2, chunk_bytes=200))
    assert isinstance(few.reviewed, PatientRows) and len(few.reviewed.files) <= 3
    keys = [(r.patient, r.source) for r in few.reviewed]
    assert keys == sorted(keys) and len(keys) == len(few.reviewed) == 6
    assert [(r.patient, r.source) for r in few.reviewed] == keys          # a second pass reads the files again
    assert few.reviewed[0].patient == "Patient/p1" and few.reviewed[-1].patient == "Patient/p5"
    for fmt in ("json", "csv", "html"):
        assert render(few, fmt) == render(default, fmt)
    assert any("Patient/p2 appears in 2 inputs" in w for w in few.warnings)


def test_write_report_streams_the_same_bytes_as_render(tmp_path):
    result = run_review([str(panel(tmp_path / "export"))], RunConfig(as_of=NOW))
    for fmt in ("json", "csv", "html"):
        out = tmp_path / f"report.{fmt}"
        write_report(result, fmt, str(out))
        assert out.read_text(encoding="utf-8") == render(result, fmt)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert sorted((r["patient"], r["contributor"]) for r in rows) == [
        (p, c) for p, cs in EXPECTED.items() for c in cs]


def test_a_result_built_by_hand_is_summarised_from_its_lists(tmp_path):
    ran = run_review([str(panel(tmp_path / "export"))], RunConfig(as_of=NOW, only_documented_cramps=True))
    by_hand = BatchResult(ran.as_of, ran.knowledge_version, reviewed=list(ran.reviewed), bad_records=ran.bad_records,
                          warnings=ran.warnings, selected=list(ran.selected), filters=ran.filters)
    assert by_hand.get_summary() == ran.summary == Summary.of(ran.reviewed, ran.selected)
    for fmt in ("json", "csv", "html"):
        assert render(by_hand, fmt) == render(ran, fmt)


def test_html_rows_show_their_first_warnings_and_the_page_the_first_run_warnings(tmp_path, monkeypatch):
    folder = panel(tmp_path / "export")
    bad_rx = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "310798"}], "text": 7}
    write_ndjson(folder / "MedicationRequest.001.ndjson", [
        med_request(f"v{i}", bad_rx, subject="Patient/p1") for i in range(6)])
    result = run_review([str(folder)], RunConfig(as_of=NOW))
    p1 = next(p for p in result.reviewed if p.patient == "Patient/p1")
    assert len(p1.review.warnings) > html_report.MAX_ROW_WARNINGS
    assert len(result.warnings) >= 2
    monkeypatch.setattr(html_report, "MAX_LISTED_ISSUES", 1)
    page = render(result, "html")
    assert f"Run warnings ({len(result.warnings)})" in page
    assert f"and {len(result.warnings) - 1} more (see the JSON report)" in page
    assert f"and {len(p1.review.warnings) - html_report.MAX_ROW_WARNINGS} more (open)" in page
