"""A FHIR server as batch input: Bulk `$export` and the per-patient search fallback (`responses` mocks the network)."""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from cds_hooks.batch import errors
from cds_hooks.batch.cli import main
from cds_hooks.batch.errors import FhirSourceError
from cds_hooks.batch.fhir_source import FhirOptions, FhirSource, retry_after
from plugin import default_knowledge
from tests.builders import cramps, lab, med_request, patient, rx

BASE = "https://fhir.example.org/r4"
STATUS = "https://fhir.example.org/r4/$export-poll-status?_jobId=42"
FILES = "https://files.example.org/bulk"
TOKEN = "s3cr3t-token-value"
AS_OF = "2026-11-01"


def ndjson(*resources: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in resources)


def p(pid: str) -> str:
    return f"Patient/{pid}"


def export_server(rsps: responses.RequestsMock, *, fail_download: bool = False, token_required: bool = True) -> None:
    rsps.add(responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
    rsps.add(responses.GET, STATUS, status=202, headers={"Retry-After": "3", "X-Progress": "50%"})
    rsps.add(responses.GET, STATUS, status=200, json={
        "transactionTime": "2026-11-01T00:00:00Z", "request": f"{BASE}/$export", "requiresAccessToken": token_required,
        "output": [
            {"type": "Patient", "url": f"{FILES}/1.Patient.ndjson?X-Sig=presigned"},
            {"type": "MedicationRequest", "url": f"{FILES}/2.MedicationRequest.ndjson"},
            {"type": "Condition", "url": f"{FILES}/3.Condition.ndjson"},
            {"type": "Observation", "url": f"{FILES}/4.Observation.ndjson"},
        ],
        "error": [{"type": "OperationOutcome", "url": f"{FILES}/err.ndjson"}]})
    rsps.add(responses.GET, f"{FILES}/1.Patient.ndjson", body=ndjson(patient("a"), patient("b")))
    rsps.add(responses.GET, f"{FILES}/2.MedicationRequest.ndjson",
             body=ndjson(med_request("m1", rx("310798"), subject=p("a")), med_request("m2", rx("36117"), subject=p("b"))))
    rsps.add(responses.GET, f"{FILES}/3.Condition.ndjson", body=ndjson(cramps() | {"subject": {"reference": p("a")}}))
    if fail_download:
        rsps.add(responses.GET, f"{FILES}/4.Observation.ndjson", status=500)
    else:
        rsps.add(responses.GET, f"{FILES}/4.Observation.ndjson", body=ndjson(lab("k", "2823-3", 2.8, "mmol/L",
                                                                                 subject=p("b"))))
    rsps.add(responses.GET, f"{FILES}/err.ndjson", body=ndjson({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "exception", "diagnostics": "1 Observation could not be exported"}]}))


def source(**kw) -> tuple[FhirSource, list[float]]:
    slept: list[float] = []
    options = FhirOptions(token=TOKEN, **kw)
    return FhirSource(BASE, options, default_knowledge(), sleep=slept.append), slept


@responses.activate
def test_export_kicks_off_polls_with_retry_after_and_downloads_with_the_token(tmp_path):
    export_server(responses.mock)
    src, slept = source()
    fetched = src.fetch(tmp_path)
    kick = responses.calls[0].request
    assert kick.headers["Accept"] == "application/fhir+json" and kick.headers["Prefer"] == "respond-async"
    assert parse_qs(urlsplit(kick.url).query)["_type"] == [
        "Patient,Medication,MedicationRequest,MedicationStatement,MedicationDispense,Condition,Observation"]
    assert kick.headers["Authorization"] == f"Bearer {TOKEN}"
    assert slept == [3.0]
    downloads = [c.request for c in responses.calls if c.request.url.startswith(FILES)]
    assert len(downloads) == 5 and all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in downloads)
    assert [f.type_hint for f in fetched.files] == ["Patient", "MedicationRequest", "Condition", "Observation"]
    assert fetched.files[0].label == f"{FILES}/1.Patient.ndjson"    # no query string: pre-signed secrets stay out
    assert fetched.bad_records == []
    assert [str(b) for b in fetched.export_errors] == [
        f"{FILES}/err.ndjson:1: server reported: error: 1 Observation could not be exported"]


@responses.activate
def test_the_token_is_not_sent_to_files_that_do_not_require_it(tmp_path):
    export_server(responses.mock, token_required=False)
    src, _ = source()
    src.fetch(tmp_path)
    downloads = [c.request for c in responses.calls if c.request.url.startswith(FILES)]
    assert downloads and all("Authorization" not in r.headers for r in downloads)


@responses.activate
def test_export_end_to_end_through_the_cli_with_a_failing_download(tmp_path, capsys, monkeypatch):
    export_server(responses.mock, fail_download=True)
    responses.mock.replace(responses.GET, STATUS, status=202, headers={"Retry-After": "0"})
    monkeypatch.setenv("CRAMP_FHIR_TOKEN", TOKEN)
    code = main([BASE, "--as-of", AS_OF, "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == errors.COMPLETED_WITH_BAD_RECORDS
    doc = json.loads(out)
    assert {x["patient"]: [f["contributor"] for f in x["findings"]] for x in doc["patients"]} == {
        "Patient/a": ["leg-cramps-documented", "thiazide-diuretic"], "Patient/b": ["laba"]}
    assert {"file": f"{FILES}/4.Observation.ndjson", "line": None,
            "error": "download failed: HTTP 500"} in doc["badRecords"]
    assert TOKEN not in out and TOKEN not in err and "presigned" not in out


@responses.activate
def test_export_that_never_finishes_is_cancelled_after_the_bounded_wait(tmp_path):
    responses.add(responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
    responses.add(responses.GET, STATUS, status=202)
    responses.add(responses.DELETE, STATUS, status=202)
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    src = FhirSource(BASE, FhirOptions(max_wait=20, poll_min=1, poll_max=8), default_knowledge(), sleep=sleep,
                     clock=lambda: clock[0])
    with pytest.raises(FhirSourceError, match="not finished after 20 s; cancelled"):
        src.fetch(tmp_path)
    assert slept == [1, 2, 4, 8]   # exponential backoff without Retry-After, capped; 15 s + 8 s > 20 s
    assert responses.calls[-1].request.method == "DELETE"


@responses.activate
def test_export_failure_and_auth_errors(tmp_path):
    responses.add(responses.GET, f"{BASE}/$export", status=401)
    with pytest.raises(FhirSourceError, match="CRAMP_FHIR_TOKEN") as exc:
        source()[0].fetch(tmp_path)
    assert TOKEN not in str(exc.value)
    responses.replace(responses.GET, f"{BASE}/$export", status=202, headers={"Content-Location": STATUS})
    responses.add(responses.GET, STATUS, status=500, json={
        "resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception",
                                                       "diagnostics": "disk full"}]})
    with pytest.raises(FhirSourceError, match="export failed: HTTP 500 disk full"):
        source()[0].fetch(tmp_path)


def test_retry_after_reads_seconds_and_http_dates():
    from datetime import UTC, datetime

    def resp(value):
        r = requests.Response()
        r.headers["Retry-After"] = value
        return r

    now = lambda: datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after(resp("7"), now) == 7.0
    assert retry_after(resp("Sun, 01 Nov 2026 12:00:30 GMT"), now) == 30.0
    assert retry_after(resp("soon"), now) is None


def search_server(rsps: responses.RequestsMock, *, broken: str | None = None) -> None:
    """A server without $export: Group/g1 has members a, b, c; searches page through `next` links."""
    rsps.add(responses.GET, f"{BASE}/Group/g1/$export", status=404, json={
        "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported",
                                                       "diagnostics": "Unknown operation $export"}]})
    rsps.add(responses.GET, f"{BASE}/Group/g1", json={"resourceType": "Group", "id": "g1", "member": [
        {"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Patient/b"}},
        {"entity": {"reference": "Patient/c"}}]})
    data = {
        "a": {"MedicationRequest": [med_request("m1", rx("310798"), subject=p("a")),
                                    med_request("m3", rx("36117"), subject=p("a"))],
              "Condition": [cramps() | {"subject": {"reference": p("a")}}]},
        "b": {"Observation": [lab("k", "2823-3", 2.8, "mmol/L", subject=p("b"))]},
        "c": {},
    }
    for pid, by_type in data.items():
        if pid == broken:
            rsps.add(responses.GET, f"{BASE}/Patient/{pid}", status=503)
            continue
        rsps.add(responses.GET, f"{BASE}/Patient/{pid}", json=patient(pid))
        for rtype in ("MedicationRequest", "MedicationStatement", "MedicationDispense", "Condition", "Observation"):
            found = by_type.get(rtype, [])
            url = f"{BASE}/{rtype}"
            if len(found) > 1:   # two pages
                page2 = f"{BASE}?_getpages=abc&page={pid}2"
                rsps.add(responses.GET, url, match=[responses.matchers.query_param_matcher({"patient": pid})],
                         json={"resourceType": "Bundle", "type": "searchset",
                               "entry": [{"resource": found[0]}], "link": [{"relation": "next", "url": page2}]})
                rsps.add(responses.GET, page2, json={"resourceType": "Bundle", "type": "searchset",
                                                     "entry": [{"resource": r} for r in found[1:]]})
            else:
                rsps.add(responses.GET, url, match=[responses.matchers.query_param_matcher(
                    {"patient": pid}, strict_match=False)], json={
                    "resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]})


@responses.activate
def test_without_export_the_group_members_are_searched_one_by_one_with_paging(tmp_path, capsys):
    search_server(responses.mock)
    code = main([BASE, "--group", "g1", "--as-of", AS_OF, "--quiet"])
    out, _ = capsys.readouterr()
    assert code == errors.OK
    doc = json.loads(out)
    assert {x["patient"]: [f["contributor"] for f in x["findings"]] for x in doc["patients"]} == {
        "Patient/a": ["leg-cramps-documented", "thiazide-diuretic", "laba"],
        "Patient/b": ["low-potassium"], "Patient/c": []}
    assert any("per-patient searches were used" in w for w in doc["warnings"])
    obs = next(c.request for c in responses.calls if "/Observation?" in c.request.url)
    codes = parse_qs(urlsplit(obs.url).query)["code"][0].split(",")
    assert codes == [f"http://loinc.org|{c}" for c in default_knowledge().lab_loincs]


@responses.activate
def test_one_failing_patient_is_reported_and_the_rest_complete(tmp_path, capsys):
    search_server(responses.mock, broken="b")
    code = main([BASE, "--patients", "a,b,c", "--as-of", AS_OF, "--quiet"])
    out, _ = capsys.readouterr()
    assert code == errors.COMPLETED_WITH_BAD_RECORDS
    doc = json.loads(out)
    assert [x["patient"] for x in doc["patients"]] == ["Patient/a", "Patient/c"]
    assert doc["badRecords"] == [{"file": "Patient/b", "line": None, "error": "skipped: the FHIR server answered HTTP 503"}]
    assert not any("$export" in c.request.url for c in responses.calls)   # --patients searches directly


@responses.activate
def test_no_export_and_no_patients_cannot_run(tmp_path, capsys):
    responses.add(responses.GET, f"{BASE}/$export", status=405)
    code = main([BASE, "--as-of", AS_OF, "--quiet"])
    err = capsys.readouterr().err
    assert code == errors.COULD_NOT_RUN and "--patients" in err and "HTTP 405" in err


@responses.activate
def test_paging_stops_at_the_limit_and_never_leaves_the_server():
    responses.add(responses.GET, f"{BASE}/Patient/a", json=patient("a"))
    pages = iter(range(1, 100))
    responses.add_callback(responses.GET, f"{BASE}/MedicationRequest", callback=lambda _req: (200, {}, json.dumps({
        "resourceType": "Bundle", "type": "searchset",
        "link": [{"relation": "next", "url": f"{BASE}/MedicationRequest?page={next(pages)}"}]})))
    src = FhirSource(BASE, FhirOptions(patients=("a",), max_pages=3, token=TOKEN), default_knowledge())
    fetched = src.fetch(None)
    assert "more than 3 pages" in fetched.bad_records[0].error
    responses.remove(responses.GET, f"{BASE}/MedicationRequest")
    responses.add(responses.GET, f"{BASE}/MedicationRequest", json={
        "resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": "https://evil.example/x"}]})
    fetched = src.fetch(None)
    assert "leaves the FHIR server" in fetched.bad_records[0].error
    assert not any("evil.example" in c.request.url for c in responses.calls)


def test_ids_are_checked():
    with pytest.raises(errors.UsageError):
        FhirOptions(patients=("../x",))
