"""Reading FHIR the way records really arrive (README "How the record is read"): each path pinned with the
value it must give, so that a reading that quietly stops working fails here.
"""
from __future__ import annotations

import pytest

from plugin import review
from plugin.fhir_read import (
    Resolver,
    flatten,
    medication_fact,
    missing_medication_references,
    normalise_reference,
)
from plugin.knowledge import default_knowledge
from tests.builders import (
    ATC,
    NOW,
    PATIENT,
    UCUM,
    bundle,
    concept,
    condition,
    icd,
    lab,
    med_request,
    patient,
    rx,
    sct,
)


def found(*resources, **kw) -> dict:
    return {f.contributor: f for f in review([patient(), *resources], now=NOW, **kw).findings}


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(("reference", "expected"), [
    ("Patient/1", "Patient/1"),
    ("https://fhir.example.org/r4/Patient/1", "Patient/1"),
    ("https://fhir.example.org/r4/Patient/1/_history/2", "Patient/1"),
    ("Medication/med.1-a", "Medication/med.1-a"),
    ("urn:uuid:0b1c", None), ("#contained", None), ("patient/1", None),
])
def test_references_are_normalised_to_type_and_id(reference, expected):
    assert normalise_reference(reference) == expected


def test_resolver_finds_by_type_id_full_url_and_normalised_url():
    med = {"resourceType": "Medication", "id": "m1", "code": rx("313988")}
    resolver = Resolver()
    resolver.add(med, "urn:uuid:abc")
    resolver.add({"resourceType": "Observation", "id": "o1"}, "urn:uuid:obs")  # never followed: not kept
    assert resolver.get("Medication/m1") is med and resolver.get("urn:uuid:abc") is med
    assert resolver.get("https://elsewhere.example/fhir/Medication/m1") is med
    assert resolver.get("urn:uuid:obs") is None and resolver.get(None) is None and resolver.get("") is None
    assert resolver.reference_of("urn:uuid:abc") == "Medication/m1"
    assert resolver.reference_of("https://x.example/Patient/p9/_history/1") == "Patient/p9"
    assert resolver.reference_of(5) is None


def test_nested_bundles_and_bare_entries_are_flattened():
    inner = bundle(patient("p2"))
    items = list(flatten([bundle(inner, btype="batch"), {"resourceType": "Patient", "id": "p3"}]))
    assert [(r["id"], url) for r, url in items] == [("p2", None), ("p3", None)]
    with_urls = {"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:1", "resource": patient("p4")},
                                                     {"fullUrl": 7, "resource": patient("p5")}, "junk", None]}
    assert list(flatten([with_urls])) == [(patient("p4"), "urn:uuid:1"), (patient("p5"), None), ("junk", None)]


def test_medications_referenced_but_absent_are_listed_once():
    a = med_request("a", medicationReference={"reference": "Medication/x"})
    b = med_request("b", medicationReference={"reference": "Medication/x"})
    c = med_request("c", medicationReference={"reference": "Medication/present"})
    d = med_request("d", medicationReference={"reference": "#contained"})
    present = {"resourceType": "Medication", "id": "present"}
    assert missing_medication_references([bundle(a, b, c, d, present)]) == ["Medication/x"]
    assert missing_medication_references(["junk", None, a]) == ["Medication/x"]


def test_resources_about_another_patient_are_ignored_with_a_warning():
    other = med_request("m2", rx("310798"), subject="Patient/someone-else")
    rv = review([patient(), other, lab("k", "2823-3", 3.0, "mmol/L", subject="Patient/someone-else")], now=NOW)
    assert rv.findings == []
    assert "ignored resources about another patient: 1 MedicationRequest, 1 Observation" in rv.warnings


# --------------------------------------------------------------------------- medications


def test_contained_medication_by_hash_reference():
    contained = {"resourceType": "Medication", "id": "med", "code": rx("310798", "hydrochlorothiazide 25 MG")}
    m = med_request("m1", medicationReference={"reference": "#med"}, contained=[{"id": "other"}, contained])
    f = found(m)["thiazide-diuretic"]
    assert "hydrochlorothiazide 25 MG" in f.reason


def test_medication_ingredients_are_read():
    med = {"resourceType": "Medication", "id": "combo", "code": concept(text="Combination tablet"),
           "ingredient": [{"itemCodeableConcept": rx("6916", "metolazone")}, {"itemReference": {}}, "junk"]}
    f = found(med, med_request("m1", medicationReference={"reference": "Medication/combo"}))
    assert "thiazide-diuretic" in f


def test_dangling_medication_reference_is_a_warning():
    rv = review([patient(), med_request("m1", medicationReference={"reference": "Medication/gone"})], now=NOW)
    assert rv.findings == []
    assert "MedicationRequest/m1: medication reference 'Medication/gone' could not be resolved" in rv.warnings


def test_matched_by_names_the_first_path():
    k = default_knowledge()
    how = {m["id"]: medication_fact(m, k, Resolver()).matched_by for m in (
        med_request("a", rx("310798")), med_request("b", concept(ATC, "C03CA01")),
        med_request("c", concept(text="Lasix 40 mg")))}
    assert how == {"a": "RxNorm 310798", "b": "ATC C03CA01", "c": "name 'lasix'"}


def test_atc_class_prefix_matches_and_other_systems_do_not():
    assert "loop-diuretic" in found(med_request("m1", concept(ATC, "C03CA")))
    assert "loop-diuretic" in found(med_request("m1", concept(ATC, "c03ca01")))   # normalised case
    assert found(med_request("m1", concept("http://example.org/local-codes", "313988"))) == {}


def test_knowledge_name_only_for_an_rxnorm_code():
    # Matched by ATC, with a SNOMED coding whose code happens to be an RxNorm code: not named by RxNorm.
    med = {"coding": [{"system": ATC, "code": "C03CA01"}, {"system": "http://snomed.info/sct", "code": "313988"}]}
    assert "medication (no name on record)" in found(med_request("m1", med))["loop-diuretic"].reason


@pytest.mark.parametrize(("status", "counts"), [
    ("active", True), ("on-hold", True), ("draft", True),
    ("stopped", False), ("completed", False), ("cancelled", False), ("entered-in-error", False), ("unknown", False),
])
def test_request_status(status, counts):
    assert ("thiazide-diuretic" in found(med_request("m", rx("310798"), status=status))) is counts


def test_do_not_perform_never_counts():
    assert found(med_request("m", rx("310798"), doNotPerform=True)) == {}
    assert "thiazide-diuretic" in found(med_request("m", rx("310798"), doNotPerform=False))


@pytest.mark.parametrize(("status", "counts"), [("active", True), ("intended", True), ("on-hold", True),
                                                ("completed", False), ("stopped", False)])
def test_statement_status(status, counts):
    st = {"resourceType": "MedicationStatement", "id": "s", "status": status, "subject": {"reference": PATIENT},
          "medicationCodeableConcept": rx("310798"), "effectivePeriod": {"start": "2026-02-01"}}
    f = found(st)
    assert ("thiazide-diuretic" in f) is counts
    if counts:
        assert f["thiazide-diuretic"].date == "2026-02-01"


@pytest.mark.parametrize(("resource", "date"), [
    (med_request("m", rx("310798"), authored="2026-03-04"), "2026-03-04"),
    ({**med_request("m", rx("310798")), "authoredOn": None, "dispenseRequest": {"validityPeriod": {"start": "2026-02-03"}}},
     "2026-02-03"),
    ({"resourceType": "MedicationDispense", "id": "d", "status": "completed", "subject": {"reference": PATIENT},
      "medicationCodeableConcept": rx("310798"), "whenPrepared": "2026-09-09"}, "2026-09-09"),
    ({"resourceType": "MedicationStatement", "id": "s", "status": "active", "subject": {"reference": PATIENT},
      "medicationCodeableConcept": rx("310798"), "dateAsserted": "2026-01-05"}, "2026-01-05"),
])
def test_medication_start_dates(resource, date):
    assert found(resource)["thiazide-diuretic"].date == date


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(("clinical", "verification", "extra", "counts"), [
    ("active", "confirmed", {}, True), ("recurrence", None, {}, True), ("relapse", None, {}, True),
    ("resolved", None, {}, False), ("inactive", None, {}, False), ("remission", None, {}, False),
    ("active", "refuted", {}, False), ("active", "entered-in-error", {}, False), ("active", "provisional", {}, True),
    (None, None, {}, True), (None, None, {"abatementDateTime": "2026-01-01"}, False),
])
def test_condition_status(clinical, verification, extra, counts):
    c = condition("c", icd("K74.60"), clinical=clinical, verification=verification, **extra)
    assert ("cirrhosis" in found(c)) is counts


def test_condition_status_as_text_only():
    c = condition("c", icd("K74.60"), clinical=None, verification=None,
                  clinicalStatus={"text": " Active "}, verificationStatus={"text": "Refuted"})
    assert found(c) == {}
    c["verificationStatus"] = {"text": "Confirmed"}
    assert "cirrhosis" in found(c)


@pytest.mark.parametrize(("code", "contributor"), [
    ("K7460", "cirrhosis"), ("N18.4", "chronic-kidney-disease"), ("E08.9", "diabetes"), ("E13.9", "diabetes"),
    ("O09.91", "pregnancy"), ("G62.9", "neuropathy"),
])
def test_icd10_prefixes_and_ranges(code, contributor):
    assert contributor in found(condition("c", icd(code), onset="2026-09-01"))  # recent: pregnancy has a window


@pytest.mark.parametrize("code", ["E07.9", "E14.9", "K73.9"])
def test_icd10_outside_the_ranges(code):
    assert {k for k in found(condition("c", icd(code))) if k != "leg-cramps-documented"} == set()


def test_condition_matched_by_snomed_and_reported_how():
    f = found(condition("c", sct("19943007", "Cirrhosis of liver")))["cirrhosis"]
    assert "(SNOMED CT 19943007)" in f.reason and "recorded 2025-05-01" in f.reason


@pytest.mark.parametrize(("text", "matches"), [
    # cirrhosis persists: "history of" is historical, not absent (episodic conditions: tests/test_engine_context.py)
    ("Cirrhosis of liver", True), ("History of cirrhosis", True), ("No cirrhosis", False),
    ("non-cirrhotic", False), ("Screening for cirrhosis", False),
])
def test_condition_text_fallback_skips_negations(text, matches):
    assert ("cirrhosis" in found(condition("c", concept(text=text)))) is matches


def test_condition_date_onset_period_then_recorded():
    c = condition("c", icd("K74.60"), onset=None, onsetPeriod={"start": "2024-04-04"})
    c.pop("onsetDateTime")
    assert found(c)["cirrhosis"].date == "2024-04-04"
    c.pop("onsetPeriod")
    c["recordedDate"] = "2023-03-03"
    assert found(c)["cirrhosis"].date == "2023-03-03"


# --------------------------------------------------------------------------- labs


def test_quantity_unit_from_code_then_unit_text():
    obs = lab("k", "2823-3", 3.0, "mmol/L")
    obs["valueQuantity"] = {"value": 3.0, "unit": "millimoles per litre", "system": UCUM, "code": "mmol/L"}
    assert "low-potassium" in found(obs)
    obs["valueQuantity"] = {"value": 1.2, "unit": "mg/dL"}   # no system: the unit text is read
    assert "low-magnesium" in found({**obs, "code": concept("http://loinc.org", "19123-9")})
    obs["valueQuantity"] = {"value": True, "unit": "mmol/L"}  # not a number
    assert found(obs) == {}


def test_lab_without_status_is_used_and_preliminary_is_not():
    obs = lab("k", "2823-3", 3.0, "mmol/L")
    obs.pop("status")
    assert "low-potassium" in found(obs)
    for status in ("amended", "corrected"):
        assert "low-potassium" in found({**obs, "status": status})
    assert found({**obs, "status": "registered"}) == {}


def test_lab_in_a_component():
    panel = {"resourceType": "Observation", "id": "panel", "status": "final", "subject": {"reference": PATIENT},
             "code": concept(text="Electrolytes"), "effectiveDateTime": "2026-10-01T08:00:00Z",
             "component": [{"code": concept("http://loinc.org", "2823-3"),
                            "valueQuantity": {"value": 3.1, "system": UCUM, "code": "mmol/L"}}]}
    f = found(panel)["low-potassium"]
    assert f.references == ("Observation/panel",) and "3.1 mmol/L" in f.reason


def test_range_with_only_a_high_end_falls_back_to_the_default():
    obs = lab("k", "2823-3", 3.4, "mmol/L")
    obs["referenceRange"] = [{"high": {"value": 5.1, "unit": "mmol/L"}}, "junk"]
    f = found(obs)["low-potassium"]
    assert "below the default lower limit 3.5 mmol/L" in f.reason


def test_quantity_unit_outside_ucum_is_the_unit_text_then_the_code():
    mg = concept("http://loinc.org", "19123-9")   # magnesium, mg/dL by default
    obs = lab("mg", "19123-9", 0.8, "mmol/L", code=mg)
    obs["valueQuantity"] = {"value": 0.8, "unit": "mmol/L", "system": "http://example.org/units", "code": "x"}
    assert found(obs) == {}                        # 0.8 mmol/L is 1.94 mg/dL: not low (0.8 mg/dL would be)
    obs["valueQuantity"] = {"value": 0.8, "code": "mmol/L"}
    assert found(obs) == {}


def test_lab_dated_by_issued_when_it_has_no_effective_time():
    obs = lab("k", "2823-3", 3.0, "mmol/L")
    obs.pop("effectiveDateTime")
    obs["issued"] = "2026-09-30T10:00:00Z"
    assert found(obs)["low-potassium"].date == "2026-09-30"


def test_free_text_unit_without_a_ucum_system_is_read():
    # A valueQuantity with only `unit` (no UCUM system or code) is read in that unit: 0.8 mmol/L of magnesium is
    # 1.94 mg/dL (normal), whereas read in the LOINC's own mg/dL it would be low.
    def mg(value: float) -> dict:
        obs = lab("mg", "19123-9", value, "mmol/L", when="2026-10-01T08:00:00Z")
        obs["valueQuantity"] = {"value": value, "unit": "mmol/L"}
        return obs

    assert "low-magnesium" not in {f.contributor for f in review([patient(), mg(0.8)], now=NOW).findings}
    low = {f.contributor: f for f in review([patient(), mg(0.6)], now=NOW).findings}["low-magnesium"]
    assert "0.6 mmol/L" in low.reason


def test_a_medication_known_only_by_its_full_url_is_resolved_from_a_type_id_reference():
    # Resolver: a Bundle entry without `id` is still found by the `Type/id` its RESTful fullUrl ends with.
    med = {"resourceType": "Medication", "code": rx("4603", "furosemide 40 MG Oral Tablet")}
    order = med_request("m1", medicationReference={"reference": "Medication/abc"})
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "https://ehr.example/fhir/Medication/abc", "resource": med}, {"resource": order}]}
    rv = review([patient(), doc], now=NOW)
    assert "loop-diuretic" in {f.contributor for f in rv.findings}
    assert not any("could not be resolved" in w for w in rv.warnings)


def test_an_effective_period_start_is_activity_for_a_statement():
    # Currency (stale_order_days): a statement asserted long ago but effective from last month is current.
    stmt = {"resourceType": "MedicationStatement", "id": "s", "status": "active", "subject": {"reference": PATIENT},
            "medicationCodeableConcept": rx("7258", "naproxen"), "dateAsserted": "2001-02-14",
            "effectivePeriod": {"start": "2026-10-01"}}
    f = {f.contributor: f for f in review([patient(), stmt], now=NOW).findings}["naproxen"]
    assert not f.possibly_stale and f.reason == "naproxen, active since 2026-10-01"


def test_the_batch_path_keeps_a_preliminary_results_status():
    # facts_of (the batch's per-resource reader) carries Observation.status, so a preliminary result says so.
    from plugin import facts_of
    from plugin.record import PatientRecord
    from plugin.rules import ReviewOptions, evaluate

    record = PatientRecord(patient=PATIENT, now=NOW)
    for fact in facts_of(lab("k", "2823-3", 3.0, "mmol/L", status="preliminary"), default_knowledge(), Resolver(), []):
        record.add(fact)
    rv = evaluate(record, now=NOW, knowledge=default_knowledge(), options=ReviewOptions())
    assert "preliminary" in {f.contributor: f for f in rv.findings}["low-potassium"].reason


def test_a_result_dated_only_by_effective_instant_is_read_with_that_date():
    # Observation.effective[x] may be an instant: the result is dated by it (and so falls within the lookback).
    obs = lab("k", "2823-3", 3.0, "mmol/L")
    del obs["effectiveDateTime"]
    obs["effectiveInstant"] = "2026-10-02T08:00:00.000Z"
    f = {f.contributor: f for f in review([patient(), obs], now=NOW).findings}["low-potassium"]
    assert f.date == "2026-10-02"
