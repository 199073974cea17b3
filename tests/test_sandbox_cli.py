"""``cramp-cds sandbox`` in-process and against a real server on loopback (``--url``), and the ``/sandbox`` web
API through the Flask test client."""
from __future__ import annotations

import json
import socket

import pytest

from cds_hooks.sandbox.cli import main, markdown_to_text
from cds_hooks.sandbox.testing import live_server, sandbox_app

# The CLI and the service read the wall clock (the review's "now", the draft order's date).
pytestmark = pytest.mark.date_sensitive


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    for name in ("CRAMP_TRIGGER_POLICY", "CRAMP_AUTH", "CRAMP_PROFILE", "CRAMP_DATABASE", "CRAMP_SANDBOX_SAMPLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may be written to the working directory


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- in-process ----------------------------------------------------------------------------------------------

def test_list_shows_every_sample_with_a_description(capsys):
    code, out, _ = run(capsys, "--list")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("quinine-cramps"))
    assert "sample-quinine" in line and "Quinine active" in line


def test_patient_view_prints_the_card_readably(capsys, tmp_path, frozen_now):
    # The sample's labs are dated 2026: as of a later "now" they age out of the 365-day lookback.
    code, out, err = run(capsys, "ckd-diuretics")
    assert code == 0, err
    assert out.startswith("leg-cramp-patient-view for Patient/sample-ckd: 1 card")
    assert "[INFO] Leg cramps documented" in out
    assert "- Low potassium: Potassium" in out and "**" not in out and "\\[" not in out
    assert "Override reasons: Already known or addressed (already-addressed)" in out
    assert "Links:" in out and "Source: Leg-cramp medication review" in out
    assert list(tmp_path.iterdir()) == []


def test_order_select_quinine_shows_the_warning_and_its_suggestion(capsys):
    code, out, _ = run(capsys, "quinine-cramps", "--hook", "order-select", "--order", "quinine")
    assert code == 0
    assert "[WARNING] Quinine ordered" in out
    assert "Suggestions (" in out and "* Remove the quinine draft order" in out
    assert "- delete MedicationRequest/sandbox-draft-" in out


def test_json_prints_the_raw_response(capsys, tmp_path):
    bundle = tmp_path / "mine.json"
    from cds_hooks.sandbox.samples import find_sample

    bundle.write_text(find_sample("hctz-no-labs").path.read_text(encoding="utf-8"), encoding="utf-8")
    code, out, _ = run(capsys, str(bundle), "--hook", "order-sign", "--order", "rxnorm:310798", "--json")
    assert code == 0
    (card,) = json.loads(out)["cards"]
    assert card["indicator"] == "info" and "thiazide" in card["summary"].lower()


def test_trigger_any_makes_patient_view_speak_without_documented_cramps(capsys, tmp_path):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "t1"}},
        {"resource": {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                      "subject": {"reference": "Patient/t1"}, "authoredOn": "2026-10-01",
                      "medicationCodeableConcept": {"coding": [{
                          "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "617312"}]}}}]}
    path = tmp_path / "statin.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    assert run(capsys, str(path))[1].splitlines()[0].endswith("0 cards")
    code, out, _ = run(capsys, str(path), "--trigger", "any")
    assert code == 0 and "1 card" in out.splitlines()[0] and "statin" in out.lower()


@pytest.mark.parametrize(("argv", "message"), [
    ((), "give a Bundle file or a sample name"),
    (("nobody-here",), "unknown sample 'nobody-here' (samples: "),
    (("cramps-only", "--hook", "order-select", "--order", "unobtainium"), "e.g. quinine"),
    (("cramps-only", "--hook", "order-select"), "needs a drug"),
    (("cramps-only", "--order", "quinine"), "--order is for order-select and order-sign"),
    (("cramps-only", "--service", "nope"), "no service 'nope'"),
])
def test_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and out == ""


def test_a_bad_hook_name_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cramps-only", "--hook", "chart-open"])
    assert exc.value.code == 2


def test_service_error_exits_1_with_the_diagnostics(capsys):
    # "nobody" is not a Practitioner reference: the service answers 400 with an OperationOutcome
    code, out, err = run(capsys, "ckd-diuretics", "--user", "nobody")
    assert code == 1 and out == ""
    assert "answered HTTP 400" in err and "context.userId must be a reference" in err


def test_markdown_to_text_drops_marks_and_escapes():
    assert markdown_to_text(r"**Bold** *it* `x` \[a\] 2\*3") == "Bold it x [a] 2*3"


# --- --url: a real server on loopback ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(sandbox_app(tmp_path_factory.mktemp("server"))) as base:
        yield base


def test_url_calls_a_running_service(capsys, server):
    code, out, err = run(capsys, "quinine-cramps", "--hook", "order-select", "--order", "quinine", "--url", server)
    assert code == 0, err
    assert "[WARNING] Quinine ordered" in out and "Remove the quinine draft order" in out
    code, out, _ = run(capsys, "ckd-diuretics", "--url", server + "/cds-services/", "--json")
    assert code == 0 and json.loads(out)["cards"][0]["indicator"] == "info"


def test_url_errors_exit_1(capsys, server):
    code, _, err = run(capsys, "ckd-diuretics", "--url", server + "/elsewhere")
    assert code == 1 and "discovery at" in err and "404" in err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(capsys, "ckd-diuretics", "--url", f"http://127.0.0.1:{port}")
    assert code == 1 and "cannot reach" in err
    code, _, err = run(capsys, "ckd-diuretics", "--url", server, "--trigger", "any")
    assert code == 2


# --- the web API ---------------------------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path):
    return sandbox_app(tmp_path / "web").test_client()


def test_the_page_and_its_assets_are_served(web):
    assert web.get("/sandbox").status_code == 308
    page = web.get("/sandbox/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'src="static/sandbox.js"' in html and 'id="run-button"' in html and "https://" not in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for asset, kind in (("sandbox.js", "javascript"), ("sandbox.css", "text/css")):
        r = web.get(f"/sandbox/static/{asset}")
        assert r.status_code == 200 and kind in r.mimetype
    js = web.get("/sandbox/static/sandbox.js").get_data(as_text=True)
    assert "innerHTML" not in js.replace("never uses innerHTML", "")


def test_samples_api(web):
    samples = web.get("/sandbox/api/samples").get_json()["samples"]
    quinine = next(s for s in samples if s["name"] == "quinine-cramps")
    assert quinine["patientId"] == "sample-quinine" and quinine["description"]
    bundle = web.get("/sandbox/api/samples/quinine-cramps").get_json()
    assert bundle["resourceType"] == "Bundle" and bundle["entry"][0]["resource"]["id"] == "sample-quinine"
    for bad in ("nope", "..%2F..%2Fpyproject.toml", "%2Fetc%2Fpasswd"):
        r = web.get(f"/sandbox/api/samples/{bad}")
        assert r.status_code == 404 and r.get_json()["resourceType"] == "OperationOutcome"
    drugs = web.get("/sandbox/api/drugs").get_json()["drugs"]
    assert {"name": "quinine", "code": "997010", "display": "quinine sulfate 324 MG Oral Capsule"} in drugs


def test_build_request_then_call_then_feedback_like_the_page(web):
    built = web.post("/sandbox/api/build-request", json={"sample": "quinine-cramps", "hook": "order-select",
                                                          "drug": "quinine"}).get_json()
    assert built["serviceId"] == "leg-cramp-order-select"
    assert built["serviceUrl"] == "/cds-services/leg-cramp-order-select"
    request = built["request"]
    assert request["context"]["selections"] and request["prefetch"]["patient"]["id"] == "sample-quinine"
    (card,) = web.post(built["serviceUrl"], json=request).get_json()["cards"]
    assert card["indicator"] == "warning"
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted",
                              "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                              "outcomeTimestamp": "2026-11-25T10:00:00.000Z"}]}
    assert web.post(built["serviceUrl"] + "/feedback", json=feedback).status_code == 200


def test_build_request_from_an_uploaded_bundle(web):
    bundle = web.get("/sandbox/api/samples/ckd-diuretics").get_json()
    built = web.post("/sandbox/api/build-request", json={"bundle": bundle, "hook": "patient-view"}).get_json()
    assert built["request"]["context"] == {"userId": "Practitioner/sandbox", "patientId": "sample-ckd"}
    (card,) = web.post(built["serviceUrl"], json=built["request"]).get_json()["cards"]
    assert card["indicator"] == "info"


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"sample": "quinine-cramps", "hook": "chart-open"}, 400, "hook must be one of"),
    ({"hook": "patient-view"}, 400, "give \"sample\""),
    ({"sample": "nobody", "hook": "patient-view"}, 404, "unknown sample"),
    ({"sample": "cramps-only", "hook": "order-sign", "drug": "unobtainium"}, 400, "e.g. quinine"),
    ({"bundle": {"resourceType": "Bundle"}, "hook": "patient-view"}, 400, "no Patient"),
])
def test_build_request_errors_are_operation_outcomes(web, body, status, message):
    r = web.post("/sandbox/api/build-request", json=body)
    assert r.status_code == status
    outcome = r.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and message in outcome["issue"][0]["diagnostics"]
