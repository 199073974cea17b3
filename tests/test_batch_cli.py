"""`cramp-cds review` end to end (in process): formats, filters, exit codes, workers, Bundle inputs."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cds_hooks.batch import errors
from cds_hooks.batch.cli import add_parser, build_parser, main
from tests.builders import bundle, condition, cramps, icd, lab, med_request, patient, rx
from tests.test_batch_stream import EXPECTED, panel, write_ndjson

AS_OF = "2026-11-01"


def review(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--as-of", AS_OF])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_has_the_documented_shape(tmp_path, capsys):
    code, out, err = review(capsys, str(panel(tmp_path / "export")), "--workers", "1")
    assert code == errors.OK
    doc = json.loads(out)
    assert doc["asOf"] == AS_OF and doc["knowledgeVersion"]
    assert {p["patient"]: [f["contributor"] for f in p["findings"]] for p in doc["patients"]} == EXPECTED
    p1 = doc["patients"][0]
    assert p1["patient"] == "Patient/p1" and p1["documentedCramps"] is True and p1["deceased"] is False
    thiazide = next(f for f in p1["findings"] if f["contributor"] == "thiazide-diuretic")
    assert set(thiazide) >= {"contributor", "category", "grade", "sources", "reason", "references", "date"}
    assert thiazide["references"] == ["MedicationRequest/m1"] and thiazide["date"] == "2026-01-10"
    assert doc["totals"]["leg-cramps-documented"] == 2 and doc["totals"]["thiazide-diuretic"] == 1
    assert doc["badRecords"] == []
    assert doc["counts"] == {"patients": 5, "documentedCramps": 2, "withContributor": 3, "deceased": 1,
                             "listed": 5, "badRecords": 0}
    summary = json.loads(err.strip().splitlines()[-1])   # stderr is not a terminal: one JSON line
    assert summary["patients"] == 5 and summary["bad_records"] == 0 and set(summary) == {
        "patients", "resources", "bad_records", "seconds"}


def test_csv_has_one_row_per_finding(tmp_path, capsys):
    code, out, _ = review(capsys, str(panel(tmp_path / "export")), "--format", "csv", "--quiet")
    assert code == errors.OK
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["rank", "priority", "priority_reason", "patient", "contributor", "category", "grade",
                             "sources", "date", "references", "reason", "documented_cramps", "possibly_stale"]
    assert sorted((r["patient"], r["contributor"]) for r in rows) == [
        (p, c) for p, cs in EXPECTED.items() for c in cs]
    # rank order: the low magnesium first; p3 (cramps, no contributor) after those with contributors
    assert list(dict.fromkeys((r["rank"], r["patient"]) for r in rows)) == [
        ("1", "Patient/p1"), ("2", "Patient/p2"), ("3", "Patient/p5"), ("4", "Patient/p3")]
    assert rows[0]["priority"] == "Electrolyte low" and "1.2 mg/dL" in rows[0]["priority_reason"]
    mg = next(r for r in rows if r["contributor"] == "low-magnesium")
    assert mg["documented_cramps"] == "true" and mg["references"] == "Observation/mg1" and "1.2 mg/dL" in mg["reason"]


def test_html_is_one_self_contained_escaped_page(tmp_path, capsys):
    folder = panel(tmp_path / "export")
    write_ndjson(folder / "MedicationStatement.ndjson", [{
        "resourceType": "MedicationStatement", "id": "evil", "status": "active", "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "310798", "display": "<script>alert(1)</script>"}]}}])
    out_path = tmp_path / "report" / "review.html"
    code, out, _ = review(capsys, str(folder), "--out", str(out_path), "--quiet")
    assert code == errors.OK and out == ""
    page = out_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<svg" in page
    assert page.count("<script") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page   # only the page's own
    assert "src=" not in page and "<link" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "As of 2026-11-01" in page
    assert "<b>5</b>patients listed" in page and '<b data-testid="count-reviewed">4</b>reviewed' in page
    assert "Percentages are of the 4 patients reviewed (5 listed, less 1 deceased who are not reviewed)" in page
    assert "Thiazide or thiazide-like diuretic" in page and "Low magnesium" in page
    assert "Patient/p1" in page and "1.2 mg/dL" in page


def test_filters_list_only_matching_patients(tmp_path, capsys):
    folder = str(panel(tmp_path / "export"))
    _, out, _ = review(capsys, folder, "--only-documented-cramps", "--quiet")
    doc = json.loads(out)
    assert [p["patient"] for p in doc["patients"]] == ["Patient/p1", "Patient/p3"]
    assert doc["counts"]["patients"] == 5 and doc["counts"]["listed"] == 2
    _, out, _ = review(capsys, folder, "--contributor", "laba", "--contributor", "statin", "--quiet")
    assert [p["patient"] for p in json.loads(out)["patients"]] == ["Patient/p2", "Patient/p5"]
    _, out, _ = review(capsys, folder, "--contributor", "laba", "--only-documented-cramps", "--quiet")
    assert json.loads(out)["patients"] == [] and json.loads(out)["totals"] == {}


def test_unknown_contributor_is_a_usage_error_listing_the_valid_ids(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--contributor", "thiazide"])
    assert exc.value.code == errors.USAGE
    err = capsys.readouterr().err
    assert "unknown contributor 'thiazide'" in err and "thiazide-diuretic" in err and "laba" in err


def test_server_options_without_a_server_are_usage_errors(tmp_path, capsys):
    code, _, err = review(capsys, str(panel(tmp_path / "e")), "--patients", "a,b")
    assert code == errors.USAGE and "FHIR server URL" in err


def test_bad_records_give_exit_3_and_are_listed(tmp_path, capsys):
    folder = panel(tmp_path / "export")
    with (folder / "Observation.000.ndjson").open("a") as fh:
        fh.write("not json\n")
    code, out, _ = review(capsys, str(folder), "--quiet")
    assert code == errors.COMPLETED_WITH_BAD_RECORDS
    doc = json.loads(out)
    assert doc["badRecords"] == [{"file": str(folder / "Observation.000.ndjson"), "line": 4,
                                  "error": doc["badRecords"][0]["error"]}]
    assert len(doc["patients"]) == 5


def test_could_not_run(tmp_path, capsys):
    code, out, err = review(capsys, str(tmp_path / "missing"))
    assert code == errors.COULD_NOT_RUN and out == "" and "input not found" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = review(capsys, str(panel(tmp_path / "e")), "--out", str(blocker / "r.json"), "--quiet")
    assert code == errors.COULD_NOT_RUN and "could not write the report" in err


def test_workers_and_chunk_size_do_not_change_the_report(tmp_path, capsys):
    folder = panel(tmp_path / "export")
    with (folder / "Condition.000.ndjson").open("a") as fh:   # bad lines, to check their numbering too
        fh.write("[]\n{bad\n")
    outputs = set()
    for workers, chunk in (("1", str(1 << 24)), ("1", "40"), ("2", "40"), ("2", "300")):
        for fmt in ("json", "csv", "html"):
            code, out, _ = review(capsys, str(folder), "--workers", workers, "--chunk-bytes", chunk, "--format", fmt,
                                  "--quiet")
            assert code == errors.COMPLETED_WITH_BAD_RECORDS
            outputs.add((fmt, out))
    assert len(outputs) == 3
    doc = json.loads(next(out for fmt, out in outputs if fmt == "json"))
    assert [b["line"] for b in doc["badRecords"]] == [3, 4]


def test_bundle_folder_one_and_several_patients_and_loose_resources(tmp_path, capsys):
    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "one.json").write_text(json.dumps(bundle(
        patient("b1"), med_request("m1", rx("310798"), subject="Patient/b1"), cramps() | {
            "subject": {"reference": "Patient/b1"}})))
    two = bundle(patient("b2"), patient("b3"), med_request("m2", rx("36117"), subject="Patient/b2"),
                 condition("d3", icd("E11.9", "Type 2 diabetes"), subject="Patient/b3"),
                 {"resourceType": "Medication", "id": "shared"}, btype="searchset")
    (folder / "two.json").write_text(json.dumps(two))
    (folder / "loose-patient.json").write_text(json.dumps(patient("b4")))
    (folder / "loose-lab.json").write_text(json.dumps(lab("k4", "2823-3", 2.9, "mmol/L", subject="Patient/b4")))
    (folder / "broken.json").write_text("{nope")
    code, out, _ = review(capsys, str(folder), "--quiet")
    assert code == errors.COMPLETED_WITH_BAD_RECORDS
    doc = json.loads(out)
    got = {p["patient"]: ([f["contributor"] for f in p["findings"]], Path(p["source"]).name) for p in doc["patients"]}
    assert got == {
        "Patient/b1": (["leg-cramps-documented", "thiazide-diuretic"], "one.json"),
        "Patient/b2": (["laba"], "two.json"),
        "Patient/b3": (["diabetes"], "two.json"),
        "Patient/b4": (["low-potassium"], "loose resource files"),
    }
    assert [(Path(b["file"]).name, b["line"]) for b in doc["badRecords"]] == [("broken.json", None)]


def test_format_follows_the_out_suffix_and_stdout_dash(tmp_path, capsys):
    folder = str(panel(tmp_path / "export"))
    review(capsys, folder, "--out", str(tmp_path / "r.csv"), "--quiet")
    assert (tmp_path / "r.csv").read_text().startswith("rank,priority,priority_reason,patient,contributor,")
    _, out, _ = review(capsys, folder, "--out", "-", "--quiet")
    assert json.loads(out)["asOf"] == AS_OF


def test_add_parser_registers_the_review_subcommand(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="cramp-cds")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["review", str(panel(tmp_path / "e")), "--as-of", AS_OF, "--quiet", "--format", "csv"])
    assert args.run(args) == errors.OK
    assert capsys.readouterr().out.startswith("rank,")
    assert build_parser().parse_args(["x"]).workers >= 1


def test_an_earlier_report_in_the_input_folder_is_skipped_not_a_bad_record(tmp_path, capsys):
    folder = panel(tmp_path / "export")
    code, _, _ = review(capsys, str(folder), "--out", str(folder / "review.json"), "--quiet")
    assert code == errors.OK
    code, out, _ = review(capsys, str(folder), "--quiet")
    doc = json.loads(out)
    assert code == errors.OK and doc["patients"] == json.loads((folder / "review.json").read_text())["patients"]
    assert any("review.json: not a FHIR resource (no resourceType), skipped" in w for w in doc["warnings"])
    code, out, _ = review(capsys, str(folder / "review.json"), "--quiet")   # named explicitly: a bad record
    assert code == errors.COMPLETED_WITH_BAD_RECORDS
    assert json.loads(out)["badRecords"][0]["error"] == "no resourceType: not a FHIR resource"
