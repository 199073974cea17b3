"""Prefetch's pure steps one by one (checklist P2/P3/P6): template tokens, what each prefetched value means,
and why a value is not usable FHIR. The service-level behaviour (fetching, 412s) is in test_service_prefetch.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses

from cds_hooks.service.prefetch import (
    Slot,
    Strategy,
    UnresolvedToken,
    classify,
    count_resources,
    fhir_problem,
    resolve_template,
)
from tests.service_fixtures.support import (
    FHIR,
    TOKEN,
    full_prefetch,
    hook_request,
    make_client,
    med_request,
    post_hook,
)
from tests.service_fixtures.support import cramps as service_cramps

NOW = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
CTX = {"patientId": "p 1/x", "userId": "Practitioner/doc-1", "encounterId": 42, "flag": True, "empty": ""}


@pytest.mark.parametrize(("template", "expected"), [
    ("Patient/{{context.patientId}}", "Patient/p%201%2Fx"),                 # quoted: a context value is data
    ("Encounter/{{context.encounterId}}", "Encounter/42"),                  # numbers are allowed
    ("X?d={{today()}}", "X?d=2026-03-01"),
    ("X?d=ge{{today() - 365 days}}", "X?d=ge2025-03-01"),
    ("X?d=le{{ today()+1 day }}", "X?d=le2026-03-02"),
    ("X?d={{today() - 0 days}}", "X?d=2026-03-01"),
    ("Practitioner/{{userPractitionerId}}", "Practitioner/doc-1"),
    ("X?u={{user}}", "X?u=Practitioner/doc-1"),                              # the 1.0 token, slash kept
    ("No tokens here", "No tokens here"),
])
def test_p2_template_tokens(template, expected):
    assert resolve_template(template, CTX, NOW) == expected


@pytest.mark.parametrize(("user", "token", "expected"), [
    ("PractitionerRole/r9", "userPractitionerRoleId", "r9"),
    ("Patient/pat 2", "userPatientId", "pat%202"),
    ("RelatedPerson/rp", "userRelatedPersonId", "rp"),
])
def test_p3_user_tokens_follow_the_user_type(user, token, expected):
    assert resolve_template(f"X/{{{{{token}}}}}", {"userId": user}, NOW) == f"X/{expected}"
    with pytest.raises(UnresolvedToken):
        resolve_template(f"X/{{{{{token}}}}}", {"userId": "Device/d1"}, NOW)


@pytest.mark.parametrize("template", [
    "X?{{context.flag}}", "X?{{context.empty}}", "X?{{context.missing}}", "X?{{context.draftOrders}}",
    "X?{{Patient.id}}", "X?{{today() * 2 days}}", "X?{{userPractitionerId}}", "X?{{user}}",
])
def test_p2_unresolvable_tokens(template):
    with pytest.raises(UnresolvedToken):
        resolve_template(template, {"flag": True, "empty": "", "draftOrders": {"resourceType": "Bundle"}}, NOW)


TEMPLATES = {"patient": "Patient/{{context.patientId}}", "meds": "MedicationRequest?patient={{context.patientId}}",
             "labs": "Observation?patient={{context.patientId}}", "conds": "Condition?patient={{context.patientId}}",
             "paged": "Condition?patient={{context.patientId}}"}


def test_p6_what_each_prefetched_value_means():
    paged = {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": "https://x/2"}]}
    outcome = {"resourceType": "OperationOutcome", "issue": []}
    sent = {"patient": {"resourceType": "Patient", "id": "p1"}, "meds": None, "labs": outcome, "paged": paged}
    slots = {s.key: s for s in classify(sent, TEMPLATES)}
    assert [s.key for s in classify(sent, TEMPLATES)] == list(TEMPLATES)
    assert (slots["patient"].strategy, slots["patient"].pages, slots["patient"].why) == (
        Strategy.USE, [sent["patient"]], "")
    assert (slots["meds"].strategy, slots["meds"].pages) == (Strategy.NO_DATA, [])
    assert (slots["labs"].strategy, slots["labs"].sent, slots["labs"].pages) == (Strategy.FETCH, outcome, [])
    assert "OperationOutcome" in slots["labs"].why
    assert (slots["conds"].strategy, slots["conds"].why) == (Strategy.FETCH, "it was not prefetched")
    assert (slots["paged"].strategy, slots["paged"].pages) == (Strategy.COMPLETE, [paged])
    assert "paginated" in slots["paged"].why


def test_slot_read_or_search_and_its_resource_type():
    read, search = Slot("p", TEMPLATES["patient"], Strategy.USE), Slot("m", TEMPLATES["meds"], Strategy.USE)
    assert (read.is_read, read.resource_type) == (True, "Patient")
    assert (search.is_read, search.resource_type) == (False, "MedicationRequest")


def _entry(resource):
    return {"resource": resource}


MED = {"resourceType": "MedicationRequest", "subject": {"reference": "Patient/p1"}}


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("patient", {"resourceType": "Patient", "id": "p1"}, None),
    ("patient", {"resourceType": "Patient"}, None),
    ("meds", {"resourceType": "Bundle", "entry": [_entry(MED), {"fullUrl": "x"}]}, None),
    ("meds", MED, None),
    ("meds", {**MED, "subject": {"reference": "https://fhir.example/r4/Patient/p1/_history/3"}}, None),
    ("patient", ["Patient"], "is not a FHIR resource object"),
    ("patient", {"id": "p1"}, "has no resourceType"),
    ("patient", {"resourceType": ""}, "has no resourceType"),
    ("patient", {"resourceType": "Practitioner", "id": "p1"}, "is a Practitioner, expected a Patient"),
    ("patient", {"resourceType": "Patient", "id": "p2"}, "is another patient than context.patientId"),
    ("meds", {"resourceType": "Condition"}, "is a Condition, expected a Bundle of MedicationRequest"),
    ("meds", {**MED, "subject": {"reference": "Patient/p2"}}, "is a resource of another patient"),
    ("meds", {**MED, "subject": {"reference": "https://fhir.example/r4/Patient/p2"}},
     "is a resource of another patient"),
    ("meds", {"resourceType": "Bundle", "entry": [_entry(MED), _entry({**MED, "patient": {"reference": "Patient/p9"}})]},
     "holds a resource of another patient"),
    ("meds", {"resourceType": "Bundle", "entry": {"resource": MED}},
     "is a Bundle whose entries are not FHIR resource objects"),
    ("meds", {"resourceType": "Bundle", "entry": ["x"]}, "is a Bundle whose entries are not FHIR resource objects"),
    ("meds", {"resourceType": "Bundle", "entry": [_entry({"id": "1"})]},
     "is a Bundle whose entries are not FHIR resource objects"),
    ("meds", {"resourceType": "Bundle", "entry": [_entry({"resourceType": " "})]},
     "is a Bundle whose entries are not FHIR resource objects"),
])
def test_p6_why_a_value_is_not_usable(key, value, problem):
    assert fhir_problem(Slot(key, TEMPLATES[key], Strategy.USE), value, "p1") == problem


def test_resources_are_counted_per_entry():
    assert count_resources({"resourceType": "Bundle", "entry": [_entry(MED)] * 3}) == 3
    assert count_resources({"resourceType": "Bundle"}) == 0
    assert count_resources(MED) == 1


def test_every_referenced_medication_read_is_kept_and_non_medications_dropped(tmp_path, caplog):
    """Two orders name two Medications prefetch lacks: both are read and both count; a read answering with
    something else than a Medication is not taken for one."""
    def by_reference(mid: str, medication_id: str) -> dict:
        order = med_request(mid, ("0", "x"))
        del order["medicationCodeableConcept"]
        order["medicationReference"] = {"reference": f"Medication/{medication_id}"}
        return order

    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    meds = {"hctz": "310798", "furo": "313988"}
    prefetch = full_prefetch(meds=[by_reference("m0", "gone"), by_reference("m1", "hctz"), by_reference("m2", "furo"),
                                   by_reference("m3", "odd")], conditions=[service_cramps()])
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{FHIR}/Medication/gone", status=404)  # a failed read: the others go on
        for mid, code in meds.items():
            rsps.add(responses.GET, f"{FHIR}/Medication/{mid}",
                     json={"resourceType": "Medication", "id": mid, "code": {"coding": [{"system": rxnorm,
                                                                                         "code": code}]}})
        rsps.add(responses.GET, f"{FHIR}/Medication/odd", json={"resourceType": "Basic", "id": "odd",
                                                                "code": {"text": "quinine"}})
        response = post_hook(make_client(tmp_path), hook_request(prefetch=prefetch, fhir_server=FHIR, token=TOKEN))
        assert len(rsps.calls) == 4
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    assert card["indicator"] == "info"
    assert set(card["extension"]["org.cramp-cds.review"]["contributors"]) == {"thiazide-diuretic", "loop-diuretic"}
    assert "prefetch completed from fhirServer for keys: medication-references" in caplog.text


def test_p7_data_that_cannot_be_had_is_412_incomplete_naming_the_key(tmp_path):
    body = hook_request(prefetch={k: v for k, v in full_prefetch().items() if k != "conditions"})
    response = post_hook(make_client(tmp_path), body)
    assert response.status_code == 412
    (issue,) = response.get_json()["issue"]
    assert (issue["severity"], issue["code"], issue["expression"]) == ("error", "incomplete", ["prefetch.conditions"])
    assert issue["diagnostics"].startswith("prefetch 'conditions' could not be obtained: ")
