"""Prefetch policy (checklist P6, P7, R2): what arrives in ``prefetch``, the FHIR-server fallback with the
call's bearer token, paging, failures → 412, invalid FHIR → 400. The FHIR server is the network, served by
``responses``; our own code runs for real."""
from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

import plugin
from cds_hooks.service.prefetch import UnresolvedToken, resolve_template
from tests.service_fixtures.support import (
    FHIR,
    HYDROCHLOROTHIAZIDE,
    KEYS,
    PID,
    TOKEN,
    cramps,
    cramps_on_thiazide_prefetch,
    full_prefetch,
    hook_request,
    issue_diagnostics,
    make_client,
    med_request,
    outcome,
    patient,
    post_hook,
    prefetch_from,
    searchset,
    strip_uuids,
)

PATHS = {"patient": f"/Patient/{PID}", "medications": "/MedicationRequest", "statements": "/MedicationStatement",
         "dispenses": "/MedicationDispense", "administrations": "/MedicationAdministration",
         "conditions": "/Condition", "observations": "/Observation"}


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


def serve(rsps, data: dict, base: str = FHIR) -> None:
    """Put ``data`` (key → resource/Bundle, as a prefetch) on the mocked FHIR server, one URL per template."""
    for key, value in data.items():
        rsps.add(responses.GET, base + PATHS[key], json=value)


def calls_to(rsps, key: str) -> list:
    return [c for c in rsps.calls if urlsplit(c.request.url).path.endswith(PATHS[key])]


def without(prefetch: dict, *keys: str) -> dict:
    return {k: v for k, v in prefetch.items() if k not in keys}


# --- P6/P7: what arrived decides what is fetched --------------------------------------------------------------

def test_p7_missing_keys_fetched_from_fhir_server_with_bearer_token(client, rsps):
    data = cramps_on_thiazide_prefetch()
    serve(rsps, without(data, "patient"))
    body = hook_request(prefetch={"patient": data["patient"]}, fhir_server=FHIR, token=TOKEN)
    response = post_hook(client, body)
    assert response.status_code == 200
    assert len(response.get_json()["cards"]) == 1, "fetched data reaches the engine"
    assert sorted(urlsplit(c.request.url).path for c in rsps.calls) == sorted(
        "/r4" + PATHS[k] for k in KEYS if k != "patient")
    for call in rsps.calls:
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}", "I2: token presented on every call"
    assert calls_to(rsps, "patient") == [], "a prefetched key is not fetched again"


def test_p7_fetches_without_token_when_no_fhir_authorization(client, rsps):
    serve(rsps, full_prefetch())
    response = post_hook(client, hook_request(fhir_server=FHIR, omit_prefetch=True))
    assert response.status_code == 200
    assert len(rsps.calls) == len(KEYS)
    assert all("Authorization" not in c.request.headers for c in rsps.calls)


def test_p6_null_prefetch_means_no_data_and_is_not_refetched(client, rsps):
    body = hook_request(prefetch={k: None for k in KEYS}, fhir_server=FHIR, token=TOKEN)
    response = post_hook(client, body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert len(rsps.calls) == 0, "null is the client's answer: no FHIR call is made"


def test_p6_operation_outcome_prefetch_is_refetched(client, rsps):
    data = cramps_on_thiazide_prefetch()
    serve(rsps, {"medications": data["medications"]})
    body = hook_request(prefetch={**data, "medications": outcome()}, fhir_server=FHIR, token=TOKEN)
    response = post_hook(client, body)
    assert response.status_code == 200
    assert len(response.get_json()["cards"]) == 1
    assert len(calls_to(rsps, "medications")) == 1 and len(rsps.calls) == 1


def test_p6_operation_outcome_prefetch_without_fhir_server_is_412(client):
    body = hook_request(prefetch={**full_prefetch(), "conditions": outcome()})
    response = post_hook(client, body)
    assert response.status_code == 412
    assert "'conditions'" in issue_diagnostics(response) and "OperationOutcome" in issue_diagnostics(response)


def test_p6_paginated_prefetch_is_completed_by_paging_from_fhir_server(client, rsps):
    page2_url = f"{FHIR}/page/meds-2"
    first = searchset(med_request("a1", ("313782", "Acetaminophen 325 MG Oral Tablet")), next_url=page2_url)
    rsps.add(responses.GET, page2_url, json=searchset(med_request("hctz1", HYDROCHLOROTHIAZIDE)))
    prefetch = {**full_prefetch(conditions=[cramps()]), "medications": first}
    response = post_hook(client, hook_request(prefetch=prefetch, fhir_server=FHIR, token=TOKEN))
    assert response.status_code == 200
    assert "hydrochlorothiazide" in response.get_json()["cards"][0]["detail"].lower(), "page 2 was read"
    assert [c.request.url for c in rsps.calls] == [page2_url]
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_p6_paginated_prefetch_without_fhir_server_is_412(client):
    first = searchset(next_url=f"{FHIR}/page/meds-2")
    response = post_hook(client, hook_request(prefetch={**full_prefetch(), "medications": first}))
    assert response.status_code == 412
    assert "'medications'" in issue_diagnostics(response)


def test_p7_fallback_follows_next_links(client, rsps):
    data = full_prefetch(conditions=[cramps()])
    serve(rsps, without(data, "medications"))
    rsps.add(responses.GET, FHIR + PATHS["medications"],
             json=searchset(next_url=f"{FHIR}/page/m2"))
    rsps.add(responses.GET, f"{FHIR}/page/m2", json=searchset(next_url=f"{FHIR}/page/m3"))
    rsps.add(responses.GET, f"{FHIR}/page/m3", json=searchset(med_request("hctz1", HYDROCHLOROTHIAZIDE)))
    response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
    assert response.status_code == 200
    assert len(response.get_json()["cards"]) == 1
    assert len(rsps.calls) == len(KEYS) + 2  # two more medication pages


def test_p7_page_limit_exceeded_is_412_naming_the_limit(tmp_path, rsps):
    client = make_client(tmp_path, {"CRAMP_FHIR_MAX_PAGES": "2"})
    serve(rsps, without(full_prefetch(), "conditions"))
    for n in range(1, 4):
        url = FHIR + PATHS["conditions"] if n == 1 else f"{FHIR}/page/c{n}"
        rsps.add(responses.GET, url, json=searchset(next_url=f"{FHIR}/page/c{n + 1}"))
    response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
    assert response.status_code == 412
    assert "'conditions'" in issue_diagnostics(response) and "2 pages" in issue_diagnostics(response)


def test_next_link_to_another_host_is_not_followed_and_the_token_not_sent(client, rsps):
    evil = "https://attacker.example.net/steal?page=2"
    prefetch = {**full_prefetch(), "medications": searchset(next_url=evil)}
    response = post_hook(client, hook_request(prefetch=prefetch, fhir_server=FHIR, token=TOKEN))
    assert response.status_code == 412
    assert "outside fhirServer" in issue_diagnostics(response)
    assert len(rsps.calls) == 0


# --- template tokens -----------------------------------------------------------------------------------------

@pytest.mark.date_sensitive  # the fallback query's date window is counted back from the wall clock
def test_p2_p3_template_tokens_resolved_in_fallback_queries(client, rsps):
    serve(rsps, full_prefetch())
    assert post_hook(client, hook_request(fhir_server=FHIR, omit_prefetch=True)).status_code == 200
    [obs] = calls_to(rsps, "observations")
    query = parse_qs(urlsplit(obs.request.url).query)
    assert query["patient"] == [PID] and "date" not in query  # 2.0 templates: bounded by _sort/_count
    assert query["_sort"] == ["-date"] and query["_count"] == ["200"]
    codes = query["code"][0].split(",")
    assert codes == [f"http://loinc.org|{c}" for c in plugin.load_knowledge().lab_loincs]
    [meds] = calls_to(rsps, "medications")
    assert parse_qs(urlsplit(meds.request.url).query) == {"patient": [PID], "status": ["active,on-hold,draft"]}


def test_p4_date_tokens_resolved_in_fallback_queries_when_opted_in(tmp_path, rsps):
    client = make_client(tmp_path, {"CRAMP_PREFETCH_DATE_TOKENS": "on"})
    serve(rsps, full_prefetch())
    assert post_hook(client, hook_request(fhir_server=FHIR, omit_prefetch=True)).status_code == 200
    [obs] = calls_to(rsps, "observations")
    query = parse_qs(urlsplit(obs.request.url).query)
    today = datetime.now(UTC).date()
    assert query["patient"] == [PID]
    assert query["date"][0] in {f"ge{today - timedelta(days=365 + d)}" for d in (0, 1)}
    assert query["_sort"] == ["-date"] and query["_count"] == ["200"]
    codes = query["code"][0].split(",")
    assert codes == [f"http://loinc.org|{c}" for c in plugin.load_knowledge().lab_loincs]
    [meds] = calls_to(rsps, "medications")
    assert parse_qs(urlsplit(meds.request.url).query) == {"patient": [PID], "status": ["active,on-hold,draft"]}


def test_p2_resolve_template_tokens():
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    ctx = {"patientId": "p1", "userId": "PractitionerRole/r9", "encounterId": "e 1"}
    assert resolve_template("Patient/{{context.patientId}}", ctx, now) == "Patient/p1"
    assert resolve_template("X?d=ge{{today() - 30 days}}&e={{today()}}&f=le{{ today() + 1 day }}", ctx, now) == \
        "X?d=ge2026-01-30&e=2026-03-01&f=le2026-03-02"
    assert resolve_template("PractitionerRole/{{userPractitionerRoleId}}", ctx, now) == "PractitionerRole/r9"
    assert resolve_template("Encounter/{{context.encounterId}}", ctx, now) == "Encounter/e%201"
    for bad in ("Practitioner/{{userPractitionerId}}", "X?{{context.draftOrders}}", "X?{{context.missing}}",
                "X?{{Patient.id}}"):
        with pytest.raises(UnresolvedToken):
            resolve_template(bad, {**ctx, "draftOrders": {"resourceType": "Bundle"}}, now)


# --- failures from the FHIR server → 412 (R2) ----------------------------------------------------------------

@pytest.mark.parametrize(("status", "words"), [
    (401, "refused the access token"), (403, "refused the access token"), (404, "404"), (500, "HTTP 500"),
    (503, "HTTP 503"),
])
def test_r2_fhir_server_error_statuses_are_412_naming_key_never_token(client, rsps, status, words):
    serve(rsps, without(full_prefetch(), "conditions"))
    rsps.add(responses.GET, FHIR + PATHS["conditions"], status=status, json=outcome("nope"))
    response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
    assert response.status_code == 412
    text = issue_diagnostics(response)
    assert "'conditions'" in text and words in text
    assert TOKEN not in response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.conditions"]


def test_r2_expired_token_401_is_412(client, rsps, caplog):
    rsps.add(responses.GET, FHIR + PATHS["patient"], status=401,
             headers={"WWW-Authenticate": 'Bearer error="invalid_token", error_description="expired"'})
    body = hook_request(prefetch=without(full_prefetch(), "patient"), fhir_server=FHIR, token=TOKEN)
    response = post_hook(client, body)
    assert response.status_code == 412
    assert "'patient'" in issue_diagnostics(response)
    assert TOKEN not in response.get_data(as_text=True) and TOKEN not in caplog.text


def test_r2_patient_read_404_is_412(client, rsps):
    rsps.add(responses.GET, FHIR + PATHS["patient"], status=404)
    response = post_hook(client, hook_request(prefetch=without(full_prefetch(), "patient"), fhir_server=FHIR))
    assert response.status_code == 412
    assert "'patient'" in issue_diagnostics(response) and "404" in issue_diagnostics(response)


@pytest.mark.parametrize(("error", "words"), [
    (requests.exceptions.ReadTimeout(), "timed out"),
    (requests.exceptions.ConnectTimeout(), "timed out"),
    (requests.exceptions.ConnectionError(), "could not be reached"),
])
def test_r2_fhir_server_timeouts_and_unreachable_are_412(client, rsps, error, words):
    rsps.add(responses.GET, FHIR + PATHS["observations"], body=error)
    body = hook_request(prefetch=without(full_prefetch(), "observations"), fhir_server=FHIR, token=TOKEN)
    response = post_hook(client, body)
    assert response.status_code == 412
    assert "'observations'" in issue_diagnostics(response) and words in issue_diagnostics(response)


def test_r2_invalid_json_from_fhir_server_is_412(client, rsps):
    rsps.add(responses.GET, FHIR + PATHS["medications"], body="<html>login</html>", content_type="text/html")
    response = post_hook(client, hook_request(prefetch=without(full_prefetch(), "medications"), fhir_server=FHIR))
    assert response.status_code == 412
    assert "invalid JSON" in issue_diagnostics(response)


def test_r2_fhir_server_answers_another_patient_is_412(client, rsps):
    rsps.add(responses.GET, FHIR + PATHS["patient"], json=patient("someone-else"))
    response = post_hook(client, hook_request(prefetch=without(full_prefetch(), "patient"), fhir_server=FHIR))
    assert response.status_code == 412


def test_p7_missing_keys_and_no_fhir_server_is_412_naming_each_key(client):
    response = post_hook(client, hook_request(prefetch=without(full_prefetch(), "conditions", "observations")))
    assert response.status_code == 412
    issues = response.get_json()["issue"]
    assert [i["expression"] for i in issues] == [["prefetch.conditions"], ["prefetch.observations"]]
    assert all(i["severity"] == "error" and "no fhirServer" in i["diagnostics"] for i in issues)


# --- the time budget -----------------------------------------------------------------------------------------

def _slow(payload: dict, seconds: float):
    def callback(_request):
        time.sleep(seconds)
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(payload)
    return callback


def test_slow_fhir_server_inside_the_time_budget_is_fine(tmp_path, rsps):
    client = make_client(tmp_path, {"CRAMP_FHIR_BUDGET": "3"})
    for key, value in cramps_on_thiazide_prefetch().items():
        rsps.add_callback(responses.GET, FHIR + PATHS[key], callback=_slow(value, 0.2))
    started = time.monotonic()
    response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1
    assert time.monotonic() - started < 2, "keys are fetched concurrently"


def test_slow_fhir_server_exhausting_the_time_budget_is_412(tmp_path, rsps):
    client = make_client(tmp_path, {"CRAMP_FHIR_BUDGET": "0.5"})
    serve(rsps, without(full_prefetch(), "medications"))
    rsps.add_callback(responses.GET, FHIR + PATHS["medications"],
                      callback=_slow(searchset(next_url=f"{FHIR}/page/m2"), 0.3))
    rsps.add_callback(responses.GET, f"{FHIR}/page/m2", callback=_slow(searchset(), 0.3))
    started = time.monotonic()
    response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
    assert response.status_code == 412
    assert "'medications'" in issue_diagnostics(response) and "budget" in issue_diagnostics(response)
    assert time.monotonic() - started < 2


# --- invalid FHIR in prefetch → 400 naming the key -----------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "words"), [
    ("medications", ["not", "an", "object"], "not a FHIR resource object"),
    ("conditions", {"entry": []}, "no resourceType"),
    ("observations", {"resourceType": "Bundle", "entry": ["x"]}, "entries are not FHIR resource objects"),
    ("observations", {"resourceType": "Bundle", "entry": [{"resource": {"id": "x"}}]}, "entries are not"),
    ("patient", patient("p2"), "another patient"),
    ("patient", {"resourceType": "Practitioner", "id": "x"}, "expected a Patient"),
    ("medications", searchset(med_request("m1", HYDROCHLOROTHIAZIDE, pid="p2")), "another patient"),
])
def test_invalid_fhir_in_prefetch_is_400_naming_the_key(client, key, value, words):
    response = post_hook(client, hook_request(prefetch={**full_prefetch(), key: value}))
    assert response.status_code == 400
    assert f"'{key}'" in issue_diagnostics(response) and words in issue_diagnostics(response)
    assert response.get_json()["issue"][0]["expression"] == [f"prefetch.{key}"]


def test_too_many_prefetched_resources_is_413_naming_the_limit(tmp_path):
    client = make_client(tmp_path, {"CRAMP_MAX_PREFETCH_RESOURCES": "3"})
    meds = [med_request(f"m{i}", HYDROCHLOROTHIAZIDE) for i in range(4)]
    response = post_hook(client, hook_request(prefetch=full_prefetch(meds=meds)))
    assert response.status_code == 413
    assert "limit of 3" in issue_diagnostics(response)


def test_unknown_prefetch_keys_are_ignored(client):
    prefetch = {**full_prefetch(), "com.example.extra": {"resourceType": "Basic", "id": "b"}}
    assert post_hook(client, hook_request(prefetch=prefetch)).status_code == 200


# --- P6 equivalence: a real patient, prefetched vs fetched ---------------------------------------------------

def _as_server_would_store(transaction: dict) -> list[dict]:
    """The resources of a transaction Bundle with urn:uuid references rewritten to Type/id, as a FHIR server
    does when it processes the transaction (the inferno bundles reference the patient by fullUrl)."""
    resources = [copy.deepcopy(e["resource"]) for e in transaction["entry"]]
    local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in transaction["entry"]
             if e.get("fullUrl") and e["resource"].get("id")}

    def rewrite(value):
        if isinstance(value, dict):
            return {k: (local.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    return [rewrite(r) for r in resources]


@pytest.mark.shared_data
@pytest.mark.parametrize("alive", [True, False])
def test_p6_equivalence_real_patient_prefetched_or_fetched_gives_the_same_card(shared_data, tmp_path, rsps, alive):
    transaction = json.loads((shared_data / "bundles" / "inferno__uscore_bundle_patient_85.json").read_text())
    resources = _as_server_would_store(transaction)
    if alive:
        # MODIFIED COPY (in memory only): patient 85 is deceased in 1977, and the engine never speaks for the
        # deceased; removing deceasedDateTime lets the active furosemide order produce a card.
        for r in resources:
            if r["resourceType"] == "Patient":
                r.pop("deceasedDateTime", None)
    medications = [r for r in resources if r["resourceType"] == "Medication"]
    data = prefetch_from([r for r in resources if r["resourceType"] != "Medication"], "85")
    client = make_client(tmp_path, {"CRAMP_TRIGGER_POLICY": "any"})
    # The furosemide order that uses medicationReference: the Medication is read from fhirServer both ways.
    for med in medications:
        rsps.add(responses.GET, f"{FHIR}/Medication/{med['id']}", json=med)

    prefetched = post_hook(client, hook_request(prefetch=data, pid="85", fhir_server=FHIR, token=TOKEN))
    serve(rsps, {k: v for k, v in data.items() if k != "patient"})
    rsps.add(responses.GET, f"{FHIR}/Patient/85", json=data["patient"])
    fetched = post_hook(client, hook_request(pid="85", fhir_server=FHIR, token=TOKEN, omit_prefetch=True))

    assert prefetched.status_code == fetched.status_code == 200
    assert len(rsps.calls) == len(KEYS) + 2 * len(medications)
    cards_a, cards_b = prefetched.get_json()["cards"], fetched.get_json()["cards"]
    assert strip_uuids(cards_a) == strip_uuids(cards_b)
    if alive:
        assert len(cards_a) == 1 and "furosemide" in cards_a[0]["detail"].lower()
        refs = cards_a[0]["extension"]["org.cramp-cds.review"]["references"]["loop-diuretic"]
        # the coded order and the one via medicationReference (ids in the card's JSON, names in its sentences)
        assert len(refs) == 2 and all(r.startswith("MedicationRequest/") for r in refs)
        assert "MedicationRequest/" not in cards_a[0]["detail"]
    else:
        assert cards_a == []


# --- Medications referenced by orders (P5 has no _include: read them one by one) ------------------------------

def _order_by_reference(mid: str, medication_id: str) -> dict:
    order = med_request(mid, HYDROCHLOROTHIAZIDE)
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": f"Medication/{medication_id}"}
    return order


def test_referenced_medication_is_read_from_fhir_server_with_the_token(tmp_path, rsps):
    medication = {"resourceType": "Medication", "id": "med-9",
                  "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "9071"}]}}
    rsps.add(responses.GET, f"{FHIR}/Medication/med-9", json=medication)
    prefetch = full_prefetch(meds=[_order_by_reference("m1", "med-9")])
    response = post_hook(make_client(tmp_path), hook_request(prefetch=prefetch, fhir_server=FHIR, token=TOKEN))
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    assert card["indicator"] == "warning"  # quinine, known only through the referenced Medication
    (call,) = rsps.calls
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_failed_medication_read_is_not_fatal(tmp_path, rsps):
    rsps.add(responses.GET, f"{FHIR}/Medication/gone", status=404,
             json=outcome("not found"))
    prefetch = full_prefetch(meds=[_order_by_reference("m1", "gone")], conditions=[cramps()])
    response = post_hook(make_client(tmp_path), hook_request(prefetch=prefetch, fhir_server=FHIR, token=TOKEN))
    assert response.status_code == 200 and response.get_json() == {"cards": []}


def test_referenced_medication_present_in_prefetch_is_not_re_read(tmp_path, rsps):
    medication = {"resourceType": "Medication", "id": "med-9",
                  "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "9071"}]}}
    prefetch = full_prefetch(meds=[_order_by_reference("m1", "med-9"), medication])
    response = post_hook(make_client(tmp_path), hook_request(prefetch=prefetch, fhir_server=FHIR, token=TOKEN))
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1
    assert len(rsps.calls) == 0


def test_supplementary_key_the_server_cannot_give_does_not_fail_the_call(client, rsps):
    """A FHIR server without MedicationDispense search: the review goes on without dispenses."""
    data = cramps_on_thiazide_prefetch()
    serve(rsps, without(data, "dispenses"))
    rsps.add(responses.GET, FHIR + PATHS["dispenses"], status=400, json=outcome("unknown search parameter"))
    response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1


def test_hapi_style_next_link_on_the_base_itself_is_followed(client, rsps):
    """HAPI FHIR pages as "{base}?_getpages=…" (no trailing slash): that is still fhirServer."""
    data = full_prefetch(conditions=[cramps()])
    serve(rsps, without(data, "medications"))
    rsps.add(responses.GET, FHIR + PATHS["medications"], json=searchset(next_url=f"{FHIR}?_getpages=x&_getpagesoffset=1"))
    rsps.add(responses.GET, FHIR, json=searchset(med_request("hctz1", HYDROCHLOROTHIAZIDE)))
    response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1
