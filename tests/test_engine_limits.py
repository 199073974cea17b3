"""The engine at its limits (issue 18): every window tried on both sides of its boundary, and the readings a
record depends on (a reference range without its own unit, a drug named only by its reference's display).

``now`` is passed in (tests.builders.NOW, 2026-11-01T12:00Z); windows are inclusive at their far end:
the lab lookback (365 days), the dispense window (180 days), "recently started" (12 months = 365 days),
the lab-suggestion window (12 months) and the one day of slack for records dated just after ``now``.
"""
from __future__ import annotations

from datetime import timedelta

import pytest

from plugin import ReviewOptions, review
from tests.builders import NOW, PATIENT, concept, cramps, lab, med_request, patient, rx

SECOND = timedelta(seconds=1)


def at(delta: timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def found(*resources, **kw) -> dict:
    return {f.contributor: f for f in review([patient(), *resources], now=NOW, **kw).findings}


def dispense(did: str, handed_over: str, code: str = "310798") -> dict:
    return {"resourceType": "MedicationDispense", "id": did, "status": "completed",
            "subject": {"reference": PATIENT}, "medicationCodeableConcept": rx(code), "whenHandedOver": handed_over}


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(("delta", "counts"), [
    (-timedelta(days=365), True), (-timedelta(days=365) - SECOND, False),   # the lookback's far end
    (timedelta(0), True), (SECOND, False),                                  # a result after now is ignored
])
def test_lab_lookback_boundary(delta, counts):
    assert ("low-potassium" in found(lab("k", "2823-3", 3.0, "mmol/L", when=at(delta)))) is counts


def test_lab_lookback_option_moves_the_boundary():
    old = lab("k", "2823-3", 3.0, "mmol/L", when=at(-timedelta(days=30) - SECOND))
    assert "low-potassium" in found(old, options=ReviewOptions(lab_lookback_days=31))
    assert "low-potassium" not in found(old, options=ReviewOptions(lab_lookback_days=30))


@pytest.mark.parametrize(("delta", "counts"), [
    (-timedelta(days=180), True), (-timedelta(days=180) - SECOND, False), (timedelta(0), True)])
def test_dispense_window_boundary(delta, counts):
    assert ("thiazide-diuretic" in found(dispense("d", at(delta)))) is counts


def test_dispense_window_option_moves_the_boundary():
    d = dispense("d", at(-timedelta(days=20)))
    assert "thiazide-diuretic" in found(d, options=ReviewOptions(dispense_window_days=20))
    assert "thiazide-diuretic" not in found(d, options=ReviewOptions(dispense_window_days=19))


@pytest.mark.parametrize(("delta", "counts"), [(timedelta(days=1), True), (timedelta(days=1) + SECOND, False)])
def test_records_dated_just_after_now_count_within_one_day(delta, counts):
    """One day of slack for time zones: an order authored "tomorrow" in another zone is current."""
    assert ("thiazide-diuretic" in found(med_request("m", rx("310798"), authored=at(delta)))) is counts


@pytest.mark.parametrize(("delta", "recent"), [
    (-timedelta(days=365), True), (-timedelta(days=365) - SECOND, False), (-timedelta(days=30), True)])
def test_started_within_12_months_boundary(delta, recent):
    f = found(med_request("m", rx("617312", "simvastatin 20 MG Oral Tablet"), authored=at(delta)))["statin"]
    assert f.recent_start is recent
    assert ("started within 12 months" in f.reason) is recent


def test_recent_start_is_not_claimed_for_an_old_drug_listed_with_a_new_one():
    old = med_request("old", rx("617312", "simvastatin 20 MG Oral Tablet"), authored="2020-01-01")
    f = found(old)["statin"]
    assert not f.recent_start and "started within" not in f.reason
    new = med_request("new", rx("617312", "atorvastatin"), authored=at(-timedelta(days=10)))
    both = found(old, new)["statin"]
    assert both.recent_start and both.reason.count("started within 12 months") == 1


def test_ordered_drugs_are_not_said_to_have_started():
    draft = med_request("d1", rx("617312", "simvastatin"), status="draft", authored=at(timedelta(0)))
    ctx = {"patientId": "p1", "selections": ["MedicationRequest/d1"],
           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}}
    f = review([patient()], now=NOW, hook="order-select", context=ctx).findings[0]
    assert f.ordered and "started within" not in f.reason


@pytest.mark.parametrize(("delta", "gap"), [(-timedelta(days=365), False), (-timedelta(days=365) - SECOND, True)])
def test_lab_suggestion_window_boundary(delta, gap):
    creatinine = lab("cr", "2160-0", 1.0, "mg/dL", when=at(delta))
    rv = review([patient(), med_request("m", rx("310798")), creatinine], now=NOW)
    assert rv.monitoring_gap is gap


def test_lab_suggestion_window_option():
    k = lab("k", "2823-3", 4.2, "mmol/L", when=at(-timedelta(days=200)))
    meds = [patient(), med_request("m", rx("310798")), k]
    assert review(meds, now=NOW, options=ReviewOptions(monitoring_months=6)).monitoring_gap is True
    assert review(meds, now=NOW, options=ReviewOptions(monitoring_months=7)).monitoring_gap is False
    assert review([patient(), k], now=NOW, options=ReviewOptions(monitoring_months=6)).monitoring_gap is False


# --------------------------------------------------------------------------- limits of a value


@pytest.mark.parametrize(("value", "low"), [(3.5, False), (3.49, True)])
def test_default_potassium_limit_is_exclusive(value, low):
    assert ("low-potassium" in found(lab("k", "2823-3", value, "mmol/L"))) is low


@pytest.mark.parametrize(("value", "low"), [(3.3, False), (3.29, True)])
def test_own_range_limit_is_exclusive(value, low):
    assert ("low-potassium" in found(lab("k", "2823-3", value, "mmol/L", low=3.3, high=5.1))) is low


@pytest.mark.parametrize("code", ["L", "LL", "LU"])
def test_low_interpretations_count(code):
    obs = lab("k", "2823-3", 4.0, "mmol/L")
    obs["interpretation"] = [concept("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", code)]
    assert "flagged low by the laboratory" in found(obs)["low-potassium"].reason


@pytest.mark.parametrize("code", ["H", "N", "A"])
def test_other_interpretations_do_not(code):
    obs = lab("k", "2823-3", 4.0, "mmol/L")
    obs["interpretation"] = [concept("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", code)]
    assert found(obs) == {}


# --------------------------------------------------------------------------- readings


def _range_without_unit(oid: str, loinc: str, value: float, unit: str, low: float, high: float) -> dict:
    obs = lab(oid, loinc, value, unit)
    obs["referenceRange"] = [{"low": {"value": low}, "high": {"value": high}}]
    return obs


def test_reference_range_without_its_own_unit_is_in_the_results_unit():
    # 0.65 mmol/L magnesium is 1.58 mg/dL: above the 1.5 mg/dL default, below this lab's 0.7-1.0 (mmol/L).
    f = found(_range_without_unit("mg", "2601-3", 0.65, "mmol/L", 0.7, 1.0))["low-magnesium"]
    assert "reference range 0.7-1" in f.reason and "default" not in f.reason
    # 3.4 mmol/L potassium is below the 3.5 default but inside this lab's 3.3-5.1: the lab's range decides.
    assert found(_range_without_unit("k", "2823-3", 3.4, "mmol/L", 3.3, 5.1)) == {}


def test_reference_range_in_another_unit_is_converted():
    obs = lab("mg", "19123-9", 1.6, "mg/dL")
    obs["referenceRange"] = [{"low": {"value": 0.7, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                      "code": "mmol/L"}}]
    # 0.7 mmol/L is 1.70 mg/dL: 1.6 mg/dL is low by this lab's range, though above the 1.5 default.
    f = found(obs)["low-magnesium"]
    assert "reference range 0.7 or more mmol/L" in f.reason


def test_drug_named_only_by_its_reference_display_is_matched_and_described():
    by_display = med_request("m1", medicationReference={"reference": "Medication/elsewhere",
                                                        "display": "Furosemide 40 mg tablet"})
    f = found(by_display)["loop-diuretic"]
    assert "Furosemide 40 mg tablet" in f.reason and f.references == ("MedicationRequest/m1",)


def test_code_only_drug_is_described_by_the_knowledge_name():
    f = found(med_request("m1", rx("313988")))["loop-diuretic"]
    assert "(RxNorm 313988)" in f.reason and "no name on record" not in f.reason


def test_drug_with_no_name_anywhere_says_so():
    f = found(med_request("m1", concept("http://www.whocc.no/atc", "C03CA01")))["loop-diuretic"]
    assert "medication (no name on record)" in f.reason


def test_more_than_three_reasons_are_summed_up():
    meds = [med_request(f"m{i}", rx("310798", f"hydrochlorothiazide {i} MG")) for i in range(1, 6)]
    f = found(*meds)["thiazide-diuretic"]
    assert f.reason.count("hydrochlorothiazide") == 3 and f.reason.endswith("; and 2 more")
    assert len(f.references) == 5


def test_cramps_documented_finding_is_a_trigger_not_a_contributor():
    rv = review([patient(), cramps()], now=NOW)
    assert rv.documented_cramps and rv.contributors == []


# --------------------------------------------------------------------------- what a finding says


def test_dispense_reason_and_date():
    f = found(dispense("d", "2026-09-15T10:00:00Z"))["thiazide-diuretic"]
    assert "dispensed 2026-09-15" in f.reason and f.date == "2026-09-15"  # a hand-over is an event


def test_finding_date_is_the_latest_start_and_status_is_named():
    f = found(med_request("a", rx("310798", "hctz A"), authored="2025-12-01"),
              med_request("b", rx("310798", "hctz B"), status="on-hold", authored="2026-02-02"))["thiazide-diuretic"]
    assert f.date == "2026-02-02"
    assert "hctz A, active since 2025-12-01" in f.reason and "hctz B, on-hold since 2026-02-02" in f.reason


def test_medication_without_a_start_has_no_date():
    m = med_request("m", rx("310798", "hctz"))
    m.pop("authoredOn")
    f = found(m)["thiazide-diuretic"]
    assert f.date is None and f.reason == "hctz, active"


def test_ordered_and_on_record_are_two_findings_the_ordered_first():
    draft = med_request("d1", rx("310798", "hctz draft"), status="draft")
    ctx = {"patientId": "p1", "selections": ["MedicationRequest/d1"],
           "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}}
    rv = review([patient(), med_request("m", rx("310798", "hctz active"))], now=NOW, hook="order-select",
                context=ctx)
    assert [(f.contributor, f.ordered, f.reason) for f in rv.findings] == [
        ("thiazide-diuretic", True, "hctz draft"),
        ("thiazide-diuretic", False, "hctz active, active since 2026-01-10 (started within 12 months)")]


def test_deceased_patient_is_not_reviewed_and_says_so():
    rv = review([patient(deceasedDateTime="2026-05-06T10:00:00Z"), med_request("m", rx("310798"))], now=NOW)
    assert rv.deceased and rv.findings == []
    assert "Patient/p1 is deceased (2026-05-06): not reviewed" in rv.warnings


def test_flagged_low_without_a_number_counts():
    obs = lab("k", "2823-3", 4.0, "mmol/L")
    obs.pop("valueQuantity")
    obs["interpretation"] = [concept("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "L")]
    f = found(obs)["low-potassium"]
    assert "flagged low by the laboratory" in f.reason and f.date == "2026-10-01"
    obs.pop("interpretation")
    assert found(obs) == {}


def test_any_recent_lab_closes_the_monitoring_gap_not_only_a_low_one():
    meds = [patient(), med_request("m", rx("310798"))]
    assert review(meds, now=NOW).monitoring_gap is True
    assert review([*meds, lab("ca", "17861-6", 9.4, "mg/dL")], now=NOW).monitoring_gap is False
    assert review([patient(), lab("ca", "17861-6", 9.4, "mg/dL")], now=NOW).monitoring_gap is False  # no diuretic
