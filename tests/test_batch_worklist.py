"""The pharmacist's worklist (issue 16): ranking, identity (off unless asked, never logged), EHR links,
--since-report, the FHIR List/Task output, non-FHIR export files, and the detail's card = the live card."""
from __future__ import annotations

import csv
import io
import json
import logging
from datetime import date
from html import escape
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from cds_hooks.batch import errors
from cds_hooks.batch.cli import main
from cds_hooks.batch.reports.identity import age_at, identifier_of, patient_link
from cds_hooks.batch.reports.ranking import priority
from cds_hooks.batch.runner import RunConfig, run_review
from plugin import build_card, default_knowledge, review
from plugin.patient import identity_of
from plugin.record import PatientIdentity
from tests.builders import NOW, bundle, cramps, lab, med_request, patient, rx
from tests.test_batch_stream import panel, write_ndjson

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "patients"
AS_OF = "2026-11-01"
# samples/README.md gives each sample's findings as of 2026-11-01; the tiers follow from them
RANKED = [("Patient/sample-quinine", 1), ("Patient/sample-lss", 2), ("Patient/sample-cirrhosis", 2),
          ("Patient/sample-ckd", 2), ("Patient/sample-labstrings", 2), ("Patient/sample-lasix", 2),
          ("Patient/sample-diabetes", 3), ("Patient/sample-asthma", 3), ("Patient/sample-hctz", 3),
          ("Patient/sample-negation", 4), ("Patient/sample-pregnancy", 4), ("Patient/sample-esrd", 4),
          ("Patient/sample-e1drugs", 4), ("Patient/sample-stale", 4), ("Patient/sample-ckd3", 4),
          ("Patient/sample-cramps-only", 6)]
NAMES = ("Daniel Okafor", "Margaret Ashworth", "SAMPLE-CKD", "1955-11-02")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(SAMPLES), "--as-of", AS_OF, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_samples_are_ranked_by_what_needs_action_first(capsys):
    code, out, _ = run_cli(capsys, "--quiet")
    assert code == errors.OK
    doc = json.loads(out)
    ranked = [(p["patient"], p["priority"]["tier"]) for p in doc["patients"] if p["rank"] is not None]
    assert ranked == RANKED
    assert [p["rank"] for p in doc["patients"]] == [*range(1, 17), None]
    deceased = doc["patients"][-1]
    assert deceased["patient"] == "Patient/sample-deceased" and deceased["priority"]["reason"] == "deceased: not reviewed"
    first = doc["patients"][0]["priority"]
    assert first["name"] == "Quinine current" and "quinine sulfate 324 mg" in first["reason"]
    assert first["reason"].endswith("leg cramps documented")
    ckd = next(p for p in doc["patients"] if p["patient"] == "Patient/sample-ckd")["priority"]["reason"]
    assert ckd.startswith("Low potassium: Potassium") and "3.1 mmol/L on 2026-10-05" in ckd
    assert doc["worklist"] == {"onWorklist": 16, "reviewed": 16, "deceased": 1, "tiers": {
        "Quinine current": 1, "Electrolyte low": 5, "Recently started drug, cramps documented": 3,
        "Cramps documented, contributors on record": 6, "Cramps documented, no contributor found": 1}}


def test_a_recent_start_ranks_high_only_with_cramps_documented():
    knowledge = default_knowledge()
    hctz = med_request("m1", rx("310798"), authored="2026-09-01")
    with_cramps = review([bundle(patient(), hctz, cramps())], now=NOW)
    without = review([bundle(patient(), hctz)], now=NOW)
    assert priority(with_cramps, knowledge).tier == 3 and "started within 12 months" in priority(
        with_cramps, knowledge).reason
    assert priority(without, knowledge).tier == 5
    low_k = review([bundle(patient(), lab("k1", "2823-3", 2.9, "mmol/L"))], now=NOW)
    assert priority(low_k, knowledge).tier == 2
    assert priority(review([bundle(patient())], now=NOW), knowledge).tier is None


def test_identity_is_read_from_the_patient_but_shown_only_with_identifiers(capsys, caplog):
    caplog.set_level(logging.DEBUG)
    for fmt in ("json", "csv", "html"):
        _, out, _ = run_cli(capsys, "--quiet", "--format", fmt)
        assert not any(n in out for n in NAMES), fmt        # off by default
        assert "phi-notice" not in out
    code, out, err = run_cli(capsys, "--format", "csv", "--identifiers")
    assert code == errors.OK
    rows = list(csv.DictReader(io.StringIO(out)))
    ckd = next(r for r in rows if r["patient"] == "Patient/sample-ckd")
    assert (ckd["name"], ckd["identifier"], ckd["birth_date"], ckd["age"], ckd["sex"]) == (
        "Daniel Okafor", "SAMPLE-CKD", "1955-11-02", "70", "male")
    assert not any(n in err for n in NAMES)                 # the progress summary on stderr names nobody
    assert not any(n in caplog.text for n in NAMES)         # nor does any log record
    named = run_cli(capsys, "--quiet", "--format", "html", "--identifiers")[1]
    assert "Daniel Okafor" in named and 'data-testid="phi-notice"' in named
    _, out, _ = run_cli(capsys, "--quiet", "--identifiers", "--identifier-system", "http://example.org/none")
    ckd = next(p for p in json.loads(out)["patients"] if p["patient"] == "Patient/sample-ckd")
    assert ckd["identity"]["identifier"] is None and ckd["identity"]["name"] == "Daniel Okafor"


def test_identity_reading_prefers_official_names_and_mr_identifiers_and_never_prints_itself():
    resource = patient("x", name=[{"use": "old", "text": "Old Name"}, {"use": "official", "given": ["Ann", "B"],
                                                                           "family": "Cole"}],
                       identifier=[{"system": "urn:ssn", "value": "123"},
                                   {"system": "urn:mrn", "value": "M-9", "type": {"coding": [
                                       {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}},
                                   {"system": "urn:bad", "value": 7}],
                       gender="female", birthDate="1970-02")
    ident = identity_of(resource)
    assert ident.name == "Ann B Cole" and ident.sex == "female" and ident.birth_date == "1970-02"
    assert identifier_of(ident, None) == "M-9" and identifier_of(ident, "urn:ssn") == "123"
    assert "Cole" not in repr(ident) and "M-9" not in repr(ident) and "Cole" not in repr(
        review([bundle(resource)], now=NOW))
    assert identity_of({"resourceType": "Patient", "name": "x", "identifier": "y"}) == PatientIdentity()
    assert age_at("1970-02", date(2026, 1, 31)) == 55 and age_at("1970-02-01", date(2026, 2, 1)) == 56
    assert age_at("garbage", date(2026, 1, 1)) is None and age_at("2030", date(2026, 1, 1)) is None


def test_the_patient_link_template(capsys):
    assert patient_link("https://ehr.example.org/p/{id}", "Patient/a b", None) == "https://ehr.example.org/p/a%20b"
    assert patient_link("https://ehr/x?mrn={identifier}", "Patient/1", None) is None
    _, out, _ = run_cli(capsys, "--quiet", "--patient-link", "https://ehr.example.org/patient/{id}")
    ckd = next(p for p in json.loads(out)["patients"] if p["patient"] == "Patient/sample-ckd")
    assert ckd["link"] == "https://ehr.example.org/patient/sample-ckd"
    code, _, err = run_cli(capsys, "--quiet", "--patient-link", "https://ehr/x?mrn={identifier}")
    assert code == errors.USAGE and "add --identifiers" in err
    with pytest.raises(SystemExit):
        main([str(SAMPLES), "--patient-link", "javascript:alert(1)//{id}"])
    assert "must start with https://" in capsys.readouterr().err


def test_since_report_marks_new_and_changed_patients(tmp_path, capsys):
    before = tmp_path / "before"
    before.mkdir()
    for name in ("ckd-diuretics.json", "hctz-no-labs.json"):
        (before / name).write_text((SAMPLES / name).read_text())
    earlier = tmp_path / "earlier.json"
    assert main([str(before), "--as-of", AS_OF, "--quiet", "--out", str(earlier)]) == errors.OK
    doc = json.loads(earlier.read_text())
    # the earlier run had fewer contributors for sample-ckd: drop one as if it were new now
    ckd = next(p for p in doc["patients"] if p["patient"] == "Patient/sample-ckd")
    ckd["findings"] = [f for f in ckd["findings"] if f["contributor"] != "loop-diuretic"]
    earlier.write_text(json.dumps(doc))
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "--quiet", "--since-report", str(earlier))
    assert code == errors.OK
    now = json.loads(out)
    marks = {p["patient"]: p.get("sincePrevious") for p in now["patients"] if p["rank"]}
    assert marks["Patient/sample-ckd"] == "changed" and marks["Patient/sample-hctz"] is None
    assert marks["Patient/sample-quinine"] == "new" and list(marks.values()).count("new") == 14
    assert now["worklist"]["sincePrevious"] == {"report": str(earlier), "asOf": AS_OF, "new": 14, "changed": 1,
                                                "noLongerListed": 0}
    _, out, _ = run_cli(capsys, "--quiet", "--format", "csv", "--since-report", str(earlier))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["patient"]: r["since_previous"] for r in rows}["Patient/sample-ckd"] == "changed"
    page = run_cli(capsys, "--quiet", "--format", "html", "--since-report", str(earlier))[1]
    assert "<b>14</b> new on the worklist, <b>1</b> with a new" in page

    (tmp_path / "notes.json").write_text("[1, 2]")
    code, _, err = run_cli(capsys, "--quiet", "--since-report", str(tmp_path / "notes.json"))
    assert code == errors.USAGE and "not a cramp-cds JSON report" in err
    code, _, err = run_cli(capsys, "--quiet", "--since-report", str(tmp_path / "missing.json"))
    assert code == errors.USAGE and "cannot read" in err


def test_fhir_worklist_is_a_valid_transaction_of_a_list_and_tasks(tmp_path, capsys):
    out = tmp_path / "worklist-bundle.json"
    code, _, _ = run_cli(capsys, "--quiet", "--identifiers", "--fhir-worklist", str(out))
    assert code == errors.OK
    text = out.read_text()
    assert not any(n in text for n in NAMES)                 # identity stays out of the FHIR output
    doc = json.loads(text)
    Bundle.model_validate(doc)
    assert doc["type"] == "transaction"
    (lst, *tasks) = [e["resource"] for e in doc["entry"]]
    assert lst["resourceType"] == "List" and lst["mode"] == "working" and lst["orderedBy"]["coding"][0]["code"] == "priority"
    assert [e["item"]["reference"] for e in lst["entry"]] == [p for p, _ in RANKED]
    assert [t["for"]["reference"] for t in tasks] == [p for p, _ in RANKED]
    assert [t["priority"] for t in tasks[:7]] == ["urgent"] * 6 + ["routine"]
    assert tasks[0]["intent"] == "proposal" and tasks[0]["status"] == "requested"
    assert tasks[0]["description"].startswith("Rank 1: Quinine current. Quinine: quinine sulfate")
    assert all(e["request"]["ifNoneExist"].startswith("identifier=") for e in doc["entry"][1:])
    again = tmp_path / "again.json"
    run_cli(capsys, "--quiet", "--fhir-worklist", str(again))
    assert again.read_text() == text                         # deterministic: reloading creates nothing new


def test_the_detail_shows_the_live_card_text(tmp_path, capsys):
    page = run_cli(capsys, "--quiet", "--format", "html")[1]
    result = run_review([str(SAMPLES)], RunConfig(as_of=NOW))
    cards = 0
    for row in result.reviewed:
        card = build_card(row.review, hook="patient-view", knowledge=default_knowledge())
        if card:
            cards += 1
            assert f'<span data-testid="card-summary">{escape(card.body["summary"])}</span>' in page
    # every worklist patient but the one with cramps and no contributor gets a card, as in the live service
    assert cards == 15 and page.count('data-testid="card"') == 15 and page.count('data-testid="no-card"') == 1


def test_export_logs_and_event_files_are_not_fhir_and_not_bad_records(tmp_path, capsys):
    folder = panel(tmp_path / "export")
    write_ndjson(folder / "log.ndjson", [{"exportId": "e1", "eventId": "kickoff", "eventDetail": {}}])
    write_ndjson(folder / "events.ndjson", [{"eventId": "status_complete", "timestamp": "2026-01-01"}])
    write_ndjson(folder / "broken.ndjson", [{"hello": "world"}])      # not a log: still a bad record
    code = main([str(folder), "--as-of", AS_OF, "--quiet", "--format", "html", "--out", str(tmp_path / "r.html")])
    assert code == errors.COMPLETED_WITH_BAD_RECORDS
    page = (tmp_path / "r.html").read_text()
    assert "Files that are not FHIR (2)" in page and "Bulk Data export log (not FHIR resources); not read" in page
    assert "Bad records (1)" in page and "broken.ndjson:1: no resourceType" in page
    result = run_review([str(folder)], RunConfig(as_of=NOW))
    assert [Path(f.file).name for f in result.non_fhir_files] == ["events.ndjson", "log.ndjson"]
    assert [Path(b.file).name for b in result.bad_records] == ["broken.ndjson"]


def test_identity_travels_from_an_ndjson_patient_line_to_the_worklist(tmp_path, capsys):
    folder = panel(tmp_path / "export")
    write_ndjson(folder / "Patient.000.ndjson", [   # the Patient file after the others: any order works
        patient("p1", name=[{"given": ["Ann"], "family": "Cole"}], birthDate="1950-02-01", gender="female",
                identifier=[{"system": "urn:mrn", "value": "M-1"}]),
        patient("p2"), patient("p3"), patient("p4", deceasedDateTime="2025-01-02"), patient("p5")])
    result = run_review([str(folder)], RunConfig(as_of=NOW, workers=2, chunk_bytes=100))
    p1 = next(r for r in result.reviewed if r.patient == "Patient/p1")
    assert p1.review.identity == PatientIdentity("Ann Cole", "1950-02-01", "female", (("urn:mrn", "", "M-1"),))
    code = main([str(folder), "--as-of", AS_OF, "--quiet", "--identifiers", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert code == errors.OK
    assert {(r["name"], r["identifier"], r["age"]) for r in rows if r["patient"] == "Patient/p1"} == {
        ("Ann Cole", "M-1", "76")}


def test_the_detail_follows_the_services_trigger_policy(tmp_path, capsys):
    folder = str(panel(tmp_path / "export"))   # p2 (LABA) and p5 (statin): contributors, cramps not documented
    common = [folder, "--as-of", AS_OF, "--quiet", "--format", "html"]
    main(common)
    documented = capsys.readouterr().out
    assert documented.count('data-testid="card"') == 1 and documented.count('data-testid="no-card"') == 3
    assert "“documented” (a card needs leg cramps documented or quinine" in documented
    main([*common, "--card-trigger", "any"])
    with_any = capsys.readouterr().out
    assert with_any.count('data-testid="card"') == 3 and with_any.count('data-testid="no-card"') == 1
    assert "Leg-cramp review; possible contributor: long-acting beta-2 agonist (LABA)" in with_any
