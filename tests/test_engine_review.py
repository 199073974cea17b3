"""The review entry point: draft orders, deceased patients, monitoring gap, warnings, determinism."""
from __future__ import annotations

from datetime import datetime

import pytest

from plugin import review
from tests.builders import NOW, bundle, condition, cramps, icd, lab, med_request, patient, rx


def draft(mid: str, med: dict) -> dict:
    return med_request(mid, med, status="draft")


def test_order_select_reviews_only_the_selections():
    context = {"patientId": "p1", "selections": ["MedicationRequest/q1"],
               "draftOrders": {"resourceType": "Bundle", "entry": [  # no Bundle.type, as the sandbox sends
                   {"resource": draft("q1", rx("9071", "quinine"))},
                   {"resource": draft("h1", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"))}]}}
    rv = review([patient()], now=NOW, hook="order-select", context=context)
    ordered = [f for f in rv.findings if f.ordered]
    assert [f.contributor for f in ordered] == ["quinine"]
    assert ordered[0].references == ("MedicationRequest/q1",)


def test_order_sign_reviews_every_draft_and_tolerates_a_draft_without_medication():
    context = {"patientId": "p1", "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": draft("h1", rx("310798"))},
        {"resource": {"resourceType": "MedicationRequest", "id": "blank", "status": "draft",
                      "subject": {"reference": "Patient/p1"}}},
        {"resource": {"resourceType": "ServiceRequest", "id": "sr", "status": "draft", "intent": "order"}}]}}
    rv = review([patient()], now=NOW, hook="order-sign", context=context)
    assert [(f.contributor, f.ordered) for f in rv.findings] == [("thiazide-diuretic", True)]


def test_draft_also_in_prefetch_is_counted_once_as_ordered():
    d = draft("h1", rx("310798"))
    context = {"patientId": "p1", "draftOrders": bundle(d)}
    rv = review([patient(), bundle(d, btype="searchset")], now=NOW, hook="order-sign", context=context)
    assert [(f.contributor, f.ordered) for f in rv.findings] == [("thiazide-diuretic", True)]


def test_missing_selection_is_reported():
    context = {"patientId": "p1", "selections": ["MedicationRequest/zz"], "draftOrders": bundle()}
    rv = review([patient()], now=NOW, hook="order-select", context=context)
    assert any("MedicationRequest/zz" in w for w in rv.warnings)


def test_deceased_patient_is_not_reviewed():
    rv = review([patient(deceasedDateTime="2025-02-01"), med_request("m1", rx("313988")), cramps()], now=NOW)
    assert rv.deceased and rv.findings == []
    assert any("deceased" in w for w in rv.warnings)


def test_recent_start_is_flagged_for_classes_studied_by_e2():
    recent = review([patient(), med_request("m1", rx("310798"), authored="2026-06-01")], now=NOW).findings[0]
    old = review([patient(), med_request("m1", rx("310798"), authored="2023-06-01")], now=NOW).findings[0]
    assert recent.recent_start and "started within 12 months" in recent.reason
    assert not old.recent_start and "since 2023-06-01" in old.reason


def test_monitoring_gap_for_diuretic_without_recent_labs():
    assert review([patient(), med_request("m1", rx("313988"))], now=NOW).monitoring_gap
    with_lab = review([patient(), med_request("m1", rx("313988")), lab("c", "2160-0", 1.0, "mg/dL")], now=NOW)
    assert not with_lab.monitoring_gap
    assert not review([patient(), med_request("m1", rx("617312"))], now=NOW).monitoring_gap  # a statin


def test_findings_are_ordered_and_deduplicated_per_contributor():
    rv = review([patient(), condition("c1", icd("E11.9")), med_request("m1", rx("617312")),
                 med_request("m2", rx("259255", "Atorvastatin 80 MG Oral Tablet")), cramps(),
                 lab("k", "2823-3", 3.0, "mmol/L"), med_request("q", rx("9071"))], now=NOW)
    assert [f.contributor for f in rv.findings] == [
        "quinine", "leg-cramps-documented", "low-potassium", "statin", "diabetes"]
    statin = rv.findings[3]
    assert statin.references == ("MedicationRequest/m1", "MedicationRequest/m2")


def test_garbage_input_gives_warnings_not_exceptions():
    junk = [None, 1, "x", [], {"no": "type"}, {"resourceType": "Bundle", "entry": [None, 5, {"resource": "x"}]},
            {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": "nope"}},
            {"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
             "valueQuantity": {"value": "three"}, "effectiveDateTime": "not a date"},
            {"resourceType": "Condition", "code": {"coding": [None, {"code": 5}]}, "clinicalStatus": "active"}]
    rv = review(junk, now=NOW)
    assert rv.findings == []
    assert any("not FHIR resources" in w for w in rv.warnings)


def test_invalid_fhir_is_read_anyway_and_reported():
    bad = med_request("m1", rx("313988"), status="bogus-status")
    bad["status"] = "active"
    bad["intent"] = 42  # wrong type
    rv = review([patient(), bad], now=NOW)
    assert [f.contributor for f in rv.findings] == ["loop-diuretic"]
    assert any("MedicationRequest/m1 is not valid FHIR R4" in w for w in rv.warnings)


def test_now_must_be_timezone_aware_and_review_is_deterministic():
    with pytest.raises(ValueError):
        review([], now=datetime(2026, 1, 1))
    data = [patient(), med_request("m1", rx("313988")), cramps(), lab("k", "2823-3", 3.0, "mmol/L")]
    forward, backward = review(data, now=NOW).to_dict(), review(list(reversed(data)), now=NOW).to_dict()
    assert forward == backward
    assert forward["findings"], "an empty review would make the comparison meaningless"


def test_review_to_dict_shape():
    """The JSON the batch report and integrations get: camelCase flags, findings without empty members."""
    data = [patient(), med_request("m1", rx("313988")), cramps(), lab("k", "2823-3", 3.0, "mmol/L")]
    d = review(data, now=NOW).to_dict()
    assert set(d) == {"patient", "deceased", "documentedCramps", "monitoringGap", "findings", "warnings"}
    assert (d["patient"], d["deceased"], d["documentedCramps"], d["monitoringGap"], d["warnings"]) == (
        "Patient/p1", False, True, False, [])
    assert [(f["contributor"], f["category"], f["date"], f["references"], f["ordered"], f.get("recent_start"))
            for f in d["findings"]] == [
        ("leg-cramps-documented", "trigger", "2025-05-01", ["Condition/cramp1"], False, None),
        ("low-potassium", "electrolyte", "2026-10-01", ["Observation/k"], False, None),
        ("loop-diuretic", "medication", "2026-01-10", ["MedicationRequest/m1"], False, True)]
    for f in d["findings"]:
        assert set(f) >= {"contributor", "category", "label", "grade", "sources", "reason", "references", "date",
                          "ordered"}
        assert isinstance(f["sources"], list) and f["sources"] and f["reason"] and f["label"] and f["grade"]


def test_records_dated_after_now_are_not_yet_current():
    """A review as of a past date ignores orders and diagnoses that came later."""
    rv = review([patient(), med_request("m1", rx("310798"), authored="2027-03-01"),
                 condition("c1", icd("K74.60"), onset="2027-01-01")], now=NOW)
    assert rv.findings == []


def test_compact_record_keeps_only_what_the_rules_can_use():
    """With `now`, a record keeps the latest usable result per analyte (and the latest lab of any kind)."""
    from plugin import default_knowledge
    from plugin.fhir_read import Resolver
    from plugin.record import PatientRecord
    from plugin.review import facts_of

    record = PatientRecord(now=NOW)
    labs = [lab(f"k{i}", "2823-3", 3.0 + i / 10, "mmol/L", when=f"2026-0{i}-01T08:00:00Z") for i in range(1, 8)]
    labs.append(lab("future", "2823-3", 2.0, "mmol/L", when="2027-01-01T08:00:00Z"))
    labs.append(lab("cr", "2160-0", 1.0, "mg/dL", when="2026-09-01T08:00:00Z"))
    stopped = med_request("s", rx("617312"), status="stopped")
    for resource in [*labs, stopped]:
        for fact in facts_of(resource, default_knowledge(), Resolver(), []):
            record.add(fact)
    assert sorted(f.reference for f in record.labs) == ["Observation/cr", "Observation/k7"]
    assert record.medications == []  # a stopped order can never be a finding
    full = review([patient(), *labs, stopped], now=NOW)
    assert [f.contributor for f in full.findings] == []  # 3.7 mmol/L is the latest potassium: not low
