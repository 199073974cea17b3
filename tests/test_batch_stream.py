"""Batch review over Bulk Data ndjson: discovery, manifests, streaming (plain / .gz), chunking, bad lines."""
from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest

from cds_hooks.batch.errors import InputError
from cds_hooks.batch.inputs import NdjsonFile, discover, type_from_name
from cds_hooks.batch.runner import RunConfig, run_review
from cds_hooks.batch.stream import chunk_lines, plan_chunks
from tests.builders import NOW, cramps, lab, med_request, patient, rx


def write_ndjson(path: Path, resources: list, *, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in resources)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def panel(folder: Path, *, gz: bool = False) -> Path:
    """Five patients over one file per type, the way a Bulk export arrives."""
    p = lambda pid: f"Patient/{pid}"
    write_ndjson(folder / "Patient.000.ndjson", [
        patient("p1"), patient("p2"), patient("p3"), patient("p4", deceasedDateTime="2025-01-02"), patient("p5")],
        gz=gz)
    write_ndjson(folder / "Medication.000.ndjson", [
        {"resourceType": "Medication", "id": "simva", "code": rx("83367", "simvastatin")}], gz=gz)
    write_ndjson(folder / "MedicationRequest.000.ndjson", [
        med_request("m1", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"), subject=p("p1")),
        med_request("m2", rx("36117", "salmeterol"), subject=p("p2")),
        med_request("m4", rx("310798"), subject=p("p4")),
        med_request("m5", subject=p("p5"), medicationReference={"reference": "Medication/simva"}),
        med_request("m6", rx("36117"), subject=p("p1"), status="stopped"),
    ], gz=gz)
    write_ndjson(folder / "Condition.000.ndjson", [
        cramps("c1") | {"subject": {"reference": p("p1")}}, cramps("c3") | {"subject": {"reference": p("p3")}}],
        gz=gz)
    write_ndjson(folder / "Observation.000.ndjson", [
        lab("mg1", "19123-9", 1.2, "mg/dL", subject=p("p1")),
        lab("k2", "2823-3", 4.2, "mmol/L", subject=p("p2")),
        {k: v for k, v in lab("orphan", "2823-3", 2.0, "mmol/L").items() if k != "subject"},
    ], gz=gz)
    write_ndjson(folder / "Encounter.000.ndjson", ["this file is never read: its type is not reviewed"], gz=gz)
    return folder


def findings(result) -> dict[str, list[str]]:
    return {r.patient: r.contributor_ids for r in result.reviewed}


EXPECTED = {
    "Patient/p1": ["leg-cramps-documented", "low-magnesium", "thiazide-diuretic"],
    "Patient/p2": ["laba"],
    "Patient/p3": ["leg-cramps-documented"],
    "Patient/p4": [],
    "Patient/p5": ["statin"],
}


@pytest.mark.parametrize(("name", "rtype"), [
    ("Condition.000.ndjson", "Condition"), ("2.Condition.ndjson", "Condition"), ("Observation.2.ndjson", "Observation"),
    ("MedicationRequest.ndjson.gz", "MedicationRequest"), ("log.ndjson", None), ("1.ndjson", None)])
def test_resource_type_comes_from_the_file_name(name, rtype):
    assert type_from_name(name) == rtype


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_an_export_folder_is_reviewed_per_patient(tmp_path, gz):
    result = run_review([str(panel(tmp_path / "export", gz=gz))], RunConfig(as_of=NOW))
    assert findings(result) == EXPECTED
    assert result.bad_records == []
    p4 = next(r for r in result.reviewed if r.patient == "Patient/p4")
    assert p4.review.deceased
    assert any("no patient reference: 1 Observation" in w for w in result.warnings)
    assert any("Encounter" in w and "skipped" in w for w in result.warnings)
    assert result.stats.resources == 16  # the Encounter file is skipped unread


def test_plain_and_gzip_give_the_same_report(tmp_path):
    plain = run_review([str(panel(tmp_path / "a"))], RunConfig(as_of=NOW))
    zipped = run_review([str(panel(tmp_path / "b", gz=True))], RunConfig(as_of=NOW))
    assert [r.review.to_dict() for r in plain.reviewed] == [r.review.to_dict() for r in zipped.reviewed]
    assert {r.patient: [f.contributor for f in r.review.findings] for r in zipped.reviewed} == EXPECTED


def _lines(size: int, *, trailing_newline: bool = True) -> bytes:
    parts = [json.dumps({"resourceType": "Basic", "id": str(i), "pad": "x" * (i * 7 % 23)}) for i in range(size)]
    parts.insert(5, "")  # a blank line is kept (and skipped by the reader)
    text = "\n".join(parts)
    return (text + "\n" if trailing_newline else text).encode()


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 17, 64, 100, 1000, 1 << 24])
@pytest.mark.parametrize("trailing", [True, False])
def test_chunks_end_on_newlines_and_lose_or_double_no_line(tmp_path, chunk_bytes, trailing):
    data = _lines(40, trailing_newline=trailing)
    path = tmp_path / "Condition.ndjson"
    path.write_bytes(data)
    chunks = plan_chunks([NdjsonFile(path, "Condition", "Condition.ndjson")], chunk_bytes)
    assert chunks[0].start == 0 and chunks[-1].end == len(data)
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start and data[after.start - 1:after.start] == b"\n"
    read = b"".join(line + b"\n" for c in chunks for line in chunk_lines(c))
    assert read == (data if trailing else data + b"\n")
    if chunk_bytes < 100:
        assert len(chunks) > 5


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_completes(tmp_path):
    folder = panel(tmp_path / "export")
    path = folder / "Condition.000.ndjson"
    good = path.read_text().splitlines()
    path.write_text("\n".join([
        good[0],
        '{"resourceType": "Condition", "id": ',      # 2: truncated JSON
        '["not", "an", "object"]',                   # 3
        '{"exportId": "x", "eventId": "kickoff"}',   # 4: no resourceType (a log line)
        "",                                          # 5: blank: not an error
        '"just a string"',                           # 6
        good[1],                                     # 7
        '{"resourceType": 42}',                      # 8
    ]) + "\n")
    for chunk_bytes in (16, 1 << 24):
        result = run_review([str(folder)], RunConfig(as_of=NOW, chunk_bytes=chunk_bytes))
        assert findings(result) == EXPECTED
        assert [(Path(b.file).name, b.line) for b in result.bad_records] == [
            ("Condition.000.ndjson", n) for n in (2, 3, 4, 6, 8)]
        errors = [b.error for b in result.bad_records]
        assert errors[0].startswith("invalid JSON") and "not a JSON object" in errors[1]
        assert "no resourceType" in errors[2] and "no resourceType" in errors[4]


def test_medication_file_bad_lines_are_reported_too(tmp_path):
    folder = panel(tmp_path / "export")
    with (folder / "Medication.000.ndjson").open("a") as fh:
        fh.write("{oops\n")
    result = run_review([str(folder)], RunConfig(as_of=NOW))
    assert [(Path(b.file).name, b.line) for b in result.bad_records] == [("Medication.000.ndjson", 2)]
    assert findings(result)["Patient/p5"] == ["statin"]


def test_a_file_of_unknown_type_is_read_line_by_line(tmp_path):
    """No type in the name (`data.ndjson`): every line is read by its own resourceType, Medications included."""
    folder = panel(tmp_path / "export")
    mixed = [line for f in sorted(folder.glob("*.ndjson")) if "Encounter" not in f.name
             for line in f.read_text().splitlines()]
    for f in folder.glob("*.ndjson"):
        f.unlink()
    (folder / "data.ndjson").write_text("\n".join(mixed) + "\n")
    result = run_review([str(folder / "data.ndjson")], RunConfig(as_of=NOW, chunk_bytes=100))
    assert findings(result) == EXPECTED


def manifest(folder: Path, outputs: list[dict], **extra) -> Path:
    doc = {"transactionTime": "2026-11-01T00:00:00Z", "request": "http://127.0.0.1:9/fhir/$export",
           "requiresAccessToken": False, "output": outputs, "error": [], **extra}
    path = folder / "manifest.json"
    path.write_text(json.dumps(doc))
    return path


def test_manifest_maps_output_urls_to_local_files_and_follows_continues_in_file(tmp_path):
    folder = panel(tmp_path / "export")
    obs = (folder / "Observation.000.ndjson").read_text().splitlines()
    (folder / "Observation.000.ndjson").write_text(obs[0] + "\n")
    (folder / "7.Observation.ndjson").write_text("\n".join(obs[1:]) + "\n")
    (folder / "log.ndjson").write_text('{"eventId": "kickoff"}\n')
    base = "http://127.0.0.1:9443/eyJpZCI6IjEifQ/fhir/bulkfiles"
    outputs = [{"type": t, "url": f"{base}/{t}.000.ndjson?sig=secret", "count": 1}
               for t in ("Patient", "Medication", "MedicationRequest", "Condition")]
    outputs.append({"type": "Observation", "url": f"{base}/Observation.000.ndjson",
                    "continuesInFile": f"{base}/7.Observation.ndjson"})   # bulk-data-server's non-standard key
    path = manifest(folder, outputs)
    for arg in (path, folder):
        found = discover([str(arg)])
        assert sorted(f.path.name for f in found.ndjson) == sorted([
            "Patient.000.ndjson", "Medication.000.ndjson", "MedicationRequest.000.ndjson", "Condition.000.ndjson",
            "Observation.000.ndjson", "7.Observation.ndjson"])
        result = run_review([str(arg)], RunConfig(as_of=NOW))
        assert findings(result) == EXPECTED and result.bad_records == []
    # the export's log is named as what it is, not as an unlisted data file
    assert [(Path(f.file).name, f.kind) for f in result.non_fhir_files] == [
        ("log.ndjson", "Bulk Data export log (not FHIR resources)")]
    (folder / "extra.ndjson").write_text('{"resourceType": "Patient", "id": "x"}\n')
    result = run_review([str(folder)], RunConfig(as_of=NOW))
    assert any(w.endswith("not listed in manifest.json, not read: Encounter.000.ndjson, extra.ndjson")
               for w in result.warnings)


def test_manifest_missing_files_are_bad_records_and_its_errors_are_export_errors(tmp_path):
    folder = panel(tmp_path / "export")
    write_ndjson(folder / "errors.ndjson", [{"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing", "diagnostics": "Observation/77 could not be exported"}]}])
    manifest(folder, [{"type": "Patient", "url": "http://x/Patient.000.ndjson"},
                      {"type": "Condition", "url": "http://x/Condition.000.ndjson"},
                      {"type": "Observation", "url": "http://x/gone.ndjson"}],
             error=[{"type": "OperationOutcome", "url": "http://x/errors.ndjson"}])
    result = run_review([str(folder)], RunConfig(as_of=NOW))
    messages = [str(b) for b in result.bad_records]
    assert any("gone.ndjson listed in the manifest is not next to it" in m for m in messages)
    assert not any("errors.ndjson" in m for m in messages)
    assert [(Path(b.file).name, b.line, b.error) for b in result.export_errors] == [
        ("errors.ndjson", 1, "server reported: error: Observation/77 could not be exported")]
    assert not any("errors.ndjson" in w for w in result.warnings)   # read as the errors, not "not listed"
    assert findings(result)["Patient/p3"] == ["leg-cramps-documented"]


def test_not_a_manifest_and_missing_inputs_are_input_errors(tmp_path):
    (tmp_path / "manifest.json").write_text('{"transactionTime": "x"}')
    with pytest.raises(InputError, match="no \"output\" list"):
        discover([str(tmp_path / "manifest.json")])
    with pytest.raises(InputError, match="input not found"):
        discover([str(tmp_path / "nope")])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported input"):
        discover([str(tmp_path / "notes.txt")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no FHIR input"):
        run_review([str(empty)], RunConfig(as_of=NOW))


def test_patients_are_merged_within_an_export_never_across_exports(tmp_path):
    a = panel(tmp_path / "a")
    b = tmp_path / "b"
    write_ndjson(b / "MedicationRequest.ndjson", [med_request("x", rx("4603", "furosemide"), subject="Patient/p2")])
    result = run_review([str(a), str(b)], RunConfig(as_of=NOW))
    p2 = [r for r in result.reviewed if r.patient == "Patient/p2"]
    assert [(Path(r.source).name, r.contributor_ids) for r in p2] == [("a", ["laba"]), ("b", ["loop-diuretic"])]
    assert any("Patient/p2 appears in 2 inputs" in w for w in result.warnings)


def test_observations_no_rule_reads_are_skipped_unparsed_but_broken_lines_still_reported(tmp_path):
    """Most Observations are vital signs or other labs: they are counted but not parsed. A line that is not
    even shaped like one JSON object is still parsed, and reported."""
    folder = panel(tmp_path / "export")
    path = folder / "Observation.000.ndjson"
    vital = {"resourceType": "Observation", "id": "bp", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
             "subject": {"reference": "Patient/p1"}}
    with path.open("a") as fh:
        fh.write(json.dumps(vital) + "\n")                                    # 4: skipped, counted
        fh.write('{"resourceType": "Observation", "oops" }\n')                 # 5: object-shaped, no lab code
        fh.write('{"resourceType": "Observation", "code": "2823-3" \n')        # 6: truncated, names a lab code
        fh.write("garbage\n")                                                  # 7
    result = run_review([str(folder)], RunConfig(as_of=NOW))
    assert findings(result) == EXPECTED
    assert [(Path(b.file).name, b.line) for b in result.bad_records] == [
        ("Observation.000.ndjson", 6), ("Observation.000.ndjson", 7)]
