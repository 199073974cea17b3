"""The sandbox's request builder: drug look-up, prefetch templates resolved against a Bundle like the reference
sandbox does (checklist §12), and the hook contexts of checklist §10 — checked against the real service."""
from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest

from cds_hooks.sandbox.requests_builder import (
    RXNORM,
    SandboxError,
    build_request,
    entries_of,
    lookup_drug,
    resolve_tokens,
    search,
    service_for_hook,
)
from cds_hooks.sandbox.samples import find_sample, list_samples, load_sample
from cds_hooks.sandbox.testing import sandbox_app

# Date-sensitive: requests are built as of today (draft order dates, prefetch date windows).
pytestmark = pytest.mark.date_sensitive

ROOT = Path(__file__).resolve().parents[1]
TODAY = date(2026, 11, 25)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return sandbox_app(tmp_path_factory.mktemp("builder")).test_client()


@pytest.fixture(scope="module")
def discovery(client):
    return client.get("/cds-services").get_json()


def call(client, discovery, body):
    service = service_for_hook(discovery, body["hook"])
    r = client.post(f"/cds-services/{service['id']}", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["cards"]


def patient_bundle(*resources, pid="p1"):
    patient = {"resourceType": "Patient", "id": pid}
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in (patient, *resources)]}


def potassium(oid, when, value=3.0, pid="p1"):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"}}


# --- drugs ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "code", "display"), [
    ("quinine", "997010", "quinine sulfate 324 MG Oral Capsule"),
    ("Quinine", "997010", "quinine sulfate 324 MG Oral Capsule"),
    ("9071", "9071", "quinine"),
    ("rxnorm:313988", "313988", "furosemide 40 MG Oral Tablet"),
    ("amlodipine", "197361", "Amlodipine 5 MG Oral Tablet"),
    ("hydrochlorothiazide", None, None),
])
def test_drug_lookup_by_name_and_code(text, code, display):
    drug = lookup_drug(text)
    if code:
        assert (drug.code, drug.display) == (code, display)
    else:
        assert drug.display.lower().startswith("hydrochlorothiazide ") and "MG" in drug.display


@pytest.mark.parametrize("text", ["frobnicate", "123456789", "rxnorm:1", ""])
def test_unknown_drug_is_a_clear_error_with_examples(text):
    with pytest.raises(SandboxError) as err:
        lookup_drug(text)
    assert "quinine" in str(err.value) and "rxnorm:313988" in str(err.value)


# --- tokens and the local FHIR search --------------------------------------------------------------------------

def test_tokens_resolve_like_the_reference_sandbox():
    ctx = {"patientId": "p1", "userId": "Practitioner/doc"}
    assert resolve_tokens("Patient/{{context.patientId}}", ctx, TODAY) == "Patient/p1"
    assert resolve_tokens("Observation?date=ge{{today() - 365 days}}", ctx, TODAY) == "Observation?date=ge2025-11-25"
    assert resolve_tokens("X?d={{ today() + 1 day }}", ctx, TODAY) == "X?d=2026-11-26"
    assert resolve_tokens("Practitioner/{{userPractitionerId}}", ctx, TODAY) == "Practitioner/doc"
    # unresolvable tokens: the template is skipped (None), never sent half-filled
    assert resolve_tokens("Encounter/{{context.encounterId}}", ctx, TODAY) is None
    assert resolve_tokens("PractitionerRole/{{userPractitionerRoleId}}", ctx, TODAY) is None


def test_search_filters_by_patient_status_code_and_date():
    other = {"resourceType": "MedicationRequest", "id": "m-other", "status": "active",
             "subject": {"reference": "Patient/p2"}}
    active = {"resourceType": "MedicationRequest", "id": "m1", "status": "active",
              "subject": {"reference": "Patient/p1"}}
    stopped = {"resourceType": "MedicationRequest", "id": "m2", "status": "stopped",
               "subject": {"reference": "Patient/p1"}}
    old, new = potassium("k-old", "2025-01-01T08:00:00Z"), potassium("k-new", "2026-10-01T08:00:00Z")
    sodium = {**potassium("na", "2026-10-02"), "code": {"coding": [{"system": "http://loinc.org", "code": "2951-2"}]}}
    entries = entries_of(patient_bundle(other, active, stopped, old, new, sodium))

    meds = search(entries, "MedicationRequest?patient=p1&status=active,on-hold,draft")
    assert meds["type"] == "searchset" and [e["resource"]["id"] for e in meds["entry"]] == ["m1"]
    assert all(e["search"]["mode"] == "match" for e in meds["entry"])

    obs = search(entries, "Observation?patient=Patient/p1&code=http://loinc.org|2823-3,http://loinc.org|6298-4"
                          "&date=ge2025-11-25&_sort=-date&_count=1")
    assert [e["resource"]["id"] for e in obs["entry"]] == ["k-new"]  # date filter; _count ignored (no paging)
    both = search(entries, "Observation?patient=p1&code=2823-3&_sort=-date")
    assert [e["resource"]["id"] for e in both["entry"]] == ["k-new", "k-old"]
    assert search(entries, "Observation?patient=p1&code=http://snomed.info/sct|2823-3") == {
        "resourceType": "Bundle", "type": "searchset", "total": 0}

    assert search(entries, "Patient/p1")["id"] == "p1"
    assert search(entries, "Patient/nobody") is None


def test_unsatisfiable_keys_are_left_out_never_null(client, discovery):
    service = dict(service_for_hook(discovery, "patient-view"))
    service["prefetch"] = {**service["prefetch"], "encounter": "Encounter/{{context.encounterId}}",
                           "user": "Practitioner/{{userPractitionerId}}"}
    body = build_request(patient_bundle(), "patient-view", service, today=TODAY)
    assert "encounter" not in body["prefetch"]  # unresolved token: skipped
    assert "user" not in body["prefetch"]  # read that found nothing: left out, not null
    assert None not in body["prefetch"].values()
    assert body["prefetch"]["conditions"] == {"resourceType": "Bundle", "type": "searchset", "total": 0}


# --- requests from the samples, through the real service -------------------------------------------------------

def test_patient_view_from_a_sample_gives_the_same_card_as_the_samples_own_hook_request(client, discovery):
    own = json.loads((ROOT / "samples" / "hooks" / "patient-view.json").read_text(encoding="utf-8"))
    service = service_for_hook(discovery, "patient-view")
    for key in service["prefetch"]:  # a key the hand-written sample predates: an empty search result
        own["prefetch"].setdefault(key, {"resourceType": "Bundle", "type": "searchset", "total": 0})
    built = build_request(load_sample(find_sample(own["context"]["patientId"]).name), "patient-view", service)

    assert built["context"]["patientId"] == own["context"]["patientId"] == "sample-ckd"
    assert set(built["prefetch"]) == set(service["prefetch"])
    (mine,), (theirs,) = call(client, discovery, built), call(client, discovery, own)
    for field in ("indicator", "summary", "detail", "links", "overrideReasons", "source"):
        assert mine[field] == theirs[field], field
    assert mine["extension"] == theirs["extension"]


def test_the_observation_template_keeps_only_results_inside_the_lookback_with_date_tokens(discovery):
    from cds_hooks.service.services import prefetch_templates

    recent = (date.today() - timedelta(days=30)).isoformat()
    stale = (date.today() - timedelta(days=400)).isoformat()
    bundle = patient_bundle(potassium("k-stale", stale, 2.9), potassium("k-recent", recent, 4.4))
    service = {**service_for_hook(discovery, "patient-view"),
               "prefetch": prefetch_templates(["2823-3"], 365, date_tokens=True)}  # CRAMP_PREFETCH_DATE_TOKENS=on
    body = build_request(bundle, "patient-view", service)
    ids = [e["resource"]["id"] for e in body["prefetch"]["observations"].get("entry", [])]
    assert ids == ["k-recent"]


def test_the_default_observation_template_gives_results_newest_first(client, discovery):
    """CDS Hooks 2.0 templates: bounded by _sort/_count; the engine's own lookback drops the stale result."""
    recent = (date.today() - timedelta(days=30)).isoformat()
    stale = (date.today() - timedelta(days=400)).isoformat()
    bundle = patient_bundle(potassium("k-stale", stale, 2.9), potassium("k-recent", recent, 4.4))
    body = build_request(bundle, "patient-view", service_for_hook(discovery, "patient-view"))
    ids = [e["resource"]["id"] for e in body["prefetch"]["observations"].get("entry", [])]
    assert ids == ["k-recent", "k-stale"]


def test_referenced_medications_come_along_as_includes(discovery):
    body = build_request(load_sample("e1-drugs"), "patient-view", service_for_hook(discovery, "patient-view"))
    entries = body["prefetch"]["medications"]["entry"]
    included = [e["resource"]["id"] for e in entries if e["search"]["mode"] == "include"]
    assert "e1drugs-med-raloxifene" in included
    assert all(e["resource"]["resourceType"] == "Medication" for e in entries if e["search"]["mode"] == "include")


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_order_contexts_follow_the_hook_library(client, discovery, hook):
    service = service_for_hook(discovery, hook)
    body = build_request(load_sample("quinine-cramps"), hook, service, "quinine", today=TODAY)
    assert str(uuid.UUID(body["hookInstance"], version=4)) == body["hookInstance"]
    assert body["hook"] == hook
    ctx = body["context"]
    assert ctx["userId"] == "Practitioner/sandbox" and ctx["patientId"] == "sample-quinine"
    drafts = ctx["draftOrders"]
    assert drafts["resourceType"] == "Bundle" and drafts["type"] == "collection"
    (order,) = [e["resource"] for e in drafts["entry"]]
    assert order["resourceType"] == "MedicationRequest"
    assert (order["status"], order["intent"]) == ("draft", "order")
    assert order["subject"] == {"reference": "Patient/sample-quinine"}
    assert order["authoredOn"] == "2026-11-25"
    assert order["medicationCodeableConcept"]["coding"] == [
        {"system": RXNORM, "code": "997010", "display": "quinine sulfate 324 MG Oral Capsule"}]
    if hook == "order-select":
        assert ctx["selections"] == [f"MedicationRequest/{order['id']}"]
    else:
        assert "selections" not in ctx
    assert set(body["prefetch"]) == set(service["prefetch"])

    body = build_request(load_sample("quinine-cramps"), hook, service, "quinine")  # today: the real date
    (card,) = call(client, discovery, body)
    assert card["indicator"] == "warning"
    if hook == "order-select":
        (suggestion,) = card["suggestions"]
        assert suggestion["label"] == "Remove the quinine draft order"
        drafted = body["context"]["draftOrders"]["entry"][0]["resource"]["id"]
        assert suggestion["actions"][0] == {**suggestion["actions"][0], "type": "delete",
                                            "resourceId": f"MedicationRequest/{drafted}"}


def test_the_reference_sandbox_shape_is_tolerated(client, discovery):
    service = service_for_hook(discovery, "order-select")
    body = build_request(load_sample("cramps-only"), "order-select", service, "9071", style="reference-sandbox")
    drafts = body["context"]["draftOrders"]
    assert "type" not in drafts  # the sandbox sends no Bundle.type ...
    assert isinstance(drafts["entry"][0]["resource"]["category"], dict)  # ... and category as one object
    (card,) = call(client, discovery, body)
    assert card["indicator"] == "warning"


def test_usage_errors(discovery):
    service = service_for_hook(discovery, "order-select")
    with pytest.raises(SandboxError, match="needs a drug"):
        build_request(load_sample("cramps-only"), "order-select", service)
    with pytest.raises(SandboxError, match="no Patient"):
        build_request({"resourceType": "Bundle", "type": "collection"}, "order-select", service, "quinine")
    with pytest.raises(SandboxError, match="not 'patient-view'"):
        build_request(load_sample("cramps-only"), "patient-view", service)
    with pytest.raises(SandboxError, match="no service for hook"):
        service_for_hook({"services": []}, "patient-view")


def test_every_sample_is_listed_with_a_description():
    samples = {s.name: s for s in list_samples()}
    assert {"quinine-cramps", "ckd-diuretics", "cramps-only"} <= set(samples)
    assert samples["quinine-cramps"].patient_id == "sample-quinine"
    assert all(s.description for s in samples.values())
    with pytest.raises(SandboxError, match="unknown sample"):
        find_sample("../../etc/passwd")
