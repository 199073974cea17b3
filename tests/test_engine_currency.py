"""Issue 12: currency per kind of record — administrations, possibly stale orders, the pregnancy window, and
electrolyte diagnoses superseded by a newer normal result. Each window is a ReviewOptions setting."""
from __future__ import annotations

from datetime import timedelta

import pytest

from plugin import ReviewOptions, build_card, review
from tests.builders import NOW, condition, cramps, icd, lab, med_request, patient, rx, sct


def at(days_ago: int) -> str:
    return (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def found(*resources, **kw) -> dict:
    return {f.contributor: f for f in review([patient(), *resources], now=NOW, **kw).findings}


def administration(aid: str, when: str, code: str = "4603") -> dict:
    return {"resourceType": "MedicationAdministration", "id": aid, "status": "completed",
            "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": rx(code, "furosemide"),
            "effectiveDateTime": when}


def dispense(did: str, when: str, code: str = "7258") -> dict:
    return {"resourceType": "MedicationDispense", "id": did, "status": "completed",
            "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": rx(code), "whenHandedOver": when}


@pytest.mark.parametrize(("days_ago", "counts"), [(30, True), (31, False), (5 * 365, False)])
def test_administrations_count_only_within_their_window(days_ago, counts):
    assert ("loop-diuretic" in found(administration("a", at(days_ago)))) is counts


def test_administration_window_is_a_setting():
    old = administration("a", at(60))
    assert "loop-diuretic" in found(old, options=ReviewOptions(administration_window_days=90))
    f = found(administration("a", at(2)))["loop-diuretic"]
    assert f.reason.startswith("furosemide, given ")


def test_an_order_with_no_activity_for_a_year_is_possibly_stale_not_dropped():
    old = med_request("n", rx("7258", "naproxen 500 MG"), authored="2001-02-14")
    f = found(old)["naproxen"]
    assert f.possibly_stale and "possibly stale" in f.reason
    assert not found(med_request("n", rx("7258"), authored=at(300)))["naproxen"].possibly_stale
    assert not found(old, options=ReviewOptions(stale_order_days=365 * 30))["naproxen"].possibly_stale


@pytest.mark.parametrize("activity", [
    lambda: dispense("d", at(200)),                                            # a dispense, even an old one
    lambda: med_request("r", rx("7258", "naproxen 250 MG"), authored=at(20)),  # a renewal
    lambda: {"resourceType": "MedicationStatement", "id": "s", "status": "active", "subject": {"reference":
             "Patient/p1"}, "medicationCodeableConcept": rx("7258"), "dateAsserted": at(40)},  # a statement
])
def test_activity_of_the_same_class_keeps_an_order_current(activity):
    old = med_request("n", rx("7258", "naproxen 500 MG"), authored="2019-05-01")
    assert not found(old, activity())["naproxen"].possibly_stale


def test_validity_period_is_activity():
    order = med_request("n", rx("7258"), authored=at(500),
                        dispenseRequest={"validityPeriod": {"start": at(500), "end": at(100)}})
    assert not found(order)["naproxen"].possibly_stale


def test_possibly_stale_is_on_the_card_after_current_contributors():
    stale = med_request("n", rx("7258", "naproxen 500 MG"), authored="2001-02-14")
    current = med_request("h", rx("310798", "hydrochlorothiazide 25 MG"), authored=at(30))
    rv = review([patient(), cramps(), stale, current], now=NOW)
    assert [f.contributor for f in rv.contributors] == ["thiazide-diuretic", "naproxen"]
    detail = build_card(rv, hook="patient-view").body["detail"]
    assert "**Naproxen** (possibly stale)" in detail


@pytest.mark.parametrize(("onset", "recorded", "counts"), [
    (at(100), None, True), (at(300), None, True), (at(301), None, False),
    (at(400), at(50), True),                       # recorded later than the onset: the later one counts
    ("1994-06-01", None, False),
])
def test_pregnancy_counts_within_the_gestation_window(onset, recorded, counts):
    extra = {"recordedDate": recorded} if recorded else {}
    rv = review([patient(), condition("p", sct("77386006", "Pregnancy"), onset=onset, **extra)], now=NOW)
    assert ("pregnancy" in {f.contributor for f in rv.findings}) is counts
    assert any("gestation window" in w for w in rv.warnings) is not counts


def test_pregnancy_window_is_a_setting():
    old = condition("p", sct("77386006"), onset=at(400))
    assert "pregnancy" in found(old, options=ReviewOptions(pregnancy_window_days=500))


def test_an_electrolyte_diagnosis_is_superseded_by_a_newer_normal_result():
    hypok = condition("h", icd("E87.6", "Hypokalemia"), onset=at(400))
    assert "low-potassium" in found(hypok)
    assert "low-potassium" not in found(hypok, lab("k", "2823-3", 4.2, "mmol/L", when=at(30)))
    # an older normal result, or a newer low one, does not supersede it
    assert "low-potassium" in found(hypok, lab("k", "2823-3", 4.2, "mmol/L", when=at(500)))
    newer_low = found(hypok, lab("k", "2823-3", 3.0, "mmol/L", when=at(30)))["low-potassium"]
    assert set(newer_low.references) == {"Observation/k", "Condition/h"}
    # another electrolyte's normal result does not supersede it
    assert "low-potassium" in found(hypok, lab("mg", "19123-9", 2.0, "mg/dL", when=at(30)))


def statement(sid: str, when: str, code: str = "7258") -> dict:
    return {"resourceType": "MedicationStatement", "id": sid, "status": "active", "subject": {"reference":
            "Patient/p1"}, "medicationCodeableConcept": rx(code, "naproxen 500 MG"), "effectiveDateTime": when}


def test_a_statement_with_no_activity_for_a_year_is_possibly_stale_too():
    # Stale orders cover MedicationStatement as well as MedicationRequest (stale_order_days).
    f = found(statement("s", "2001-02-14"))["naproxen"]
    assert f.possibly_stale
    assert not found(statement("s", at(300)))["naproxen"].possibly_stale


def test_possibly_stale_reason_says_since_when_and_after_what():
    # With no activity newer than its start the reason reads "… statement since)", with a newer one (here the end
    # of the validity period) "… statement after <that day>)".
    old = med_request("n", rx("7258", "naproxen 500 MG"), authored="2001-02-14")
    assert found(old)["naproxen"].reason == ("naproxen 500 MG, active since 2001-02-14, possibly stale "
                                             "(no renewal, dispense or statement since)")
    renewed_once = med_request("n", rx("7258", "naproxen 500 MG"), authored="2001-02-14",
                               dispenseRequest={"validityPeriod": {"start": "2001-02-14", "end": "2002-02-14"}})
    assert found(renewed_once)["naproxen"].reason == ("naproxen 500 MG, active since 2001-02-14, possibly stale "
                                                      "(no renewal, dispense or statement after 2002-02-14)")


def test_a_current_order_is_listed_before_a_stale_one_of_the_same_class():
    # An undated order is not called stale (nothing says how old it is), so it keeps the class current on the
    # card, but an old order of the same class with no activity stays possibly stale and is listed after it.
    undated = med_request("u", rx("7258", "naproxen 250 MG"))
    del undated["authoredOn"]
    stale = med_request("n", rx("7258", "naproxen 500 MG"), authored="2001-02-14")
    f = found(stale, undated)["naproxen"]
    assert f.references == ("MedicationRequest/u", "MedicationRequest/n")
    assert not f.possibly_stale
    assert f.reason.startswith("naproxen 250 MG, active; naproxen 500 MG, active since 2001-02-14, possibly stale")


def test_records_of_one_class_are_listed_oldest_first_not_by_id():
    # Within a finding, records are in date order whatever their ids (here "a" is the newer order).
    newer = med_request("a", rx("7258", "naproxen 250 MG"), authored=at(10))
    older = med_request("b", rx("7258", "naproxen 500 MG"), authored=at(100))
    assert found(newer, older)["naproxen"].references == ("MedicationRequest/b", "MedicationRequest/a")


def test_a_dispense_exactly_stale_order_days_old_still_keeps_its_class_current():
    # Boundary of stale_order_days: activity on the horizon day itself counts as activity.
    old = med_request("n", rx("7258", "naproxen 500 MG"), authored="2001-02-14")
    assert not found(old, dispense("d", at(365)))["naproxen"].possibly_stale
    assert found(old, dispense("d", at(366)))["naproxen"].possibly_stale


def test_pregnancy_beyond_the_window_warning_names_the_record_and_its_date():
    rv = review([patient(), condition("p", sct("77386006", "Pregnancy"), onset="1994-06-01")], now=NOW)
    assert "Condition/p: pregnancy dated 1994-06-01 is beyond the 300-day gestation window; not counted" in rv.warnings


def test_a_diagnosis_is_not_superseded_by_a_normal_result_of_the_same_moment():
    # Only a strictly newer normal result supersedes an electrolyte diagnosis.
    hypok = condition("h", icd("E87.6", "Hypokalemia"), onset=at(30))
    assert "low-potassium" in found(hypok, lab("k", "2823-3", 4.2, "mmol/L", when=at(30)))


def test_a_statement_effective_last_month_is_current_however_old_its_assertion():
    # Currency (stale_order_days): effectiveDateTime is activity, newer here than the old dateAsserted.
    s = statement("s", at(30))
    s["dateAsserted"] = "2001-02-14"
    assert not found(s)["naproxen"].possibly_stale
