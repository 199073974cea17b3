"""Electrolyte labs: LOINC, UCUM conversion, the result's own range, most recent result, duplicates.
Evidence: clinical-reference §1.3 (low Ca/Mg/K: strong if deficient, E3/E1) and §2.5 (codes, units)."""
from __future__ import annotations

import pytest

from plugin import ReviewOptions, review
from tests.builders import NOW, condition, icd, lab, patient


def low(*resources, **kw):
    rv = review([patient(), *resources], now=NOW, **kw)
    return {f.contributor: f for f in rv.findings if f.category == "electrolyte"}


def test_low_potassium_uses_own_reference_range():
    found = low(lab("k1", "2823-3", 3.1, "mmol/L", low=3.5, high=5.1))
    f = found["low-potassium"]
    assert "3.1 mmol/L" in f.reason and "3.5-5.1" in f.reason and f.date == "2026-10-01"
    assert "E1" in f.sources and f.references == ("Observation/k1",)


def test_own_range_wins_over_default():
    # 3.4 is below the default 3.5 but within this lab's range 3.3-5.0 (ARUP): no finding.
    assert low(lab("k1", "2823-3", 3.4, "mmol/L", low=3.3, high=5.0)) == {}
    assert "low-potassium" in low(lab("k2", "2823-3", 3.4, "mmol/L"))  # no range: the default decides


def test_magnesium_in_mmol_per_litre():
    f = low(lab("mg1", "2601-3", 0.55, "mmol/L", low=0.70, high=1.10))["low-magnesium"]
    assert "0.55 mmol/L" in f.reason
    # Without a range, 0.55 mmol/L is 1.34 mg/dL, below the 1.5 mg/dL default.
    assert "low-magnesium" in low(lab("mg2", "2601-3", 0.55, "mmol/L"))
    assert low(lab("mg3", "19123-9", 2.0, "mg/dL")) == {}


def test_magnesium_in_meq_per_litre():
    assert "low-magnesium" in low(lab("mg1", "19123-9", 1.0, "meq/L"))  # 0.5 mmol/L


def test_total_and_ionized_calcium_have_their_own_limits():
    assert "low-calcium" in low(lab("ca1", "17861-6", 7.9, "mg/dL"))
    assert "low-calcium" in low(lab("ca2", "2000-8", 1.9, "mmol/L"))       # 7.6 mg/dL
    assert "low-calcium" in low(lab("ca3", "1994-3", 1.02, "mmol/L"))      # ionized 4.1 mg/dL
    assert low(lab("ca4", "1994-3", 1.20, "mmol/L")) == {}                 # normal ionized (4.8 mg/dL)
    assert low(lab("ca5", "17861-6", 9.2, "mg/dL")) == {}


def test_most_recent_result_decides():
    old = lab("k1", "2823-3", 3.0, "mmol/L", when="2026-03-01T08:00:00Z")
    new = lab("k2", "2823-3", 4.2, "mmol/L", when="2026-09-01T08:00:00Z")
    assert low(old, new) == {}
    assert "low-potassium" in low(lab("k3", "2823-3", 4.2, "mmol/L", when="2026-03-01T08:00:00Z"),
                                  lab("k4", "2823-3", 3.0, "mmol/L", when="2026-09-01T08:00:00Z"))


def test_lookback_is_configurable():
    old_low = lab("k1", "2823-3", 3.0, "mmol/L", when="2024-01-01T08:00:00Z")
    assert low(old_low) == {}
    assert "low-potassium" in low(old_low, options=ReviewOptions(lab_lookback_days=3650))


def test_future_dated_and_unusable_results_ignored():
    assert low(lab("k1", "2823-3", 3.0, "mmol/L", when="2027-01-01T00:00:00Z")) == {}
    assert low(lab("k2", "2823-3", 3.0, "mmol/L", status="entered-in-error")) == {}
    assert low(lab("k3", "2823-3", 3.0, "mmol/L", status="registered")) == {}
    assert low(lab("k4", "2823-3", 3.0, "mmol/L", status="cancelled")) == {}


def test_interpretation_low_counts_without_a_number():
    obs = lab("k1", "2823-3", 3.6, "mmol/L")
    obs["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                          "code": "L"}]}]
    assert "flagged low" in low(obs)["low-potassium"].reason


def test_duplicates_are_collapsed():
    a = lab("k1", "2823-3", 3.0, "mmol/L")
    b = lab("k2", "2823-3", 3.0, "mmol/L")
    f = low(a, b)["low-potassium"]
    assert f.references == ("Observation/k1",)


def test_unknown_unit_is_not_guessed():
    assert low(lab("k1", "19123-9", 1.0, "furlongs")) == {}


# --- issue 12: values as EHRs send them ---------------------------------------------------------------------

def text_lab(oid, loinc, **fields):
    r = lab(oid, loinc, 0.0, "mmol/L")
    del r["valueQuantity"]
    return {**r, **fields}


@pytest.mark.parametrize(("value", "is_low"), [
    ("<2.5", True), ("< 2.5 mmol/L", True), ("3.0", True), ("3.0 mmol/L", True), ("<=3.4", True), ("<=3.5", False),
    ("<4.0", False),            # a bound above the limit proves nothing
    (">2.0", False), ("4.1", False), ("hemolysed", False), ("3.0 furlongs", False),
])
def test_value_string(value, is_low):
    assert ("low-potassium" in low(text_lab("k", "2823-3", valueString=value))) is is_low


@pytest.mark.parametrize(("comparator", "value", "is_low"), [
    ("<", 3.5, True), ("<=", 3.5, False), ("<=", 3.4, True), (">", 3.0, False), (">=", 3.6, False), (None, 3.4, True),
])
def test_value_quantity_comparator(comparator, value, is_low):
    obs = lab("k", "2823-3", value, "mmol/L")
    if comparator:
        obs["valueQuantity"]["comparator"] = comparator
    assert ("low-potassium" in low(obs)) is is_low  # default lower limit 3.5 mmol/L


def test_comparator_is_shown_with_the_value():
    obs = lab("k", "2823-3", 2.5, "mmol/L")
    obs["valueQuantity"]["comparator"] = "<"
    assert "<2.5 mmol/L" in low(obs)["low-potassium"].reason


@pytest.mark.parametrize(("text", "value", "is_low"), [
    ("3.6-5.2", 3.55, True), ("3.6 - 5.2 mmol/L", 3.55, True), ("3.6 to 5.2", 3.7, False), (">=3.6", 3.55, True),
    ("normal", 3.4, True),      # unreadable text: the default limit (3.5) decides
])
def test_reference_range_given_only_as_text(text, value, is_low):
    obs = {**lab("k", "2823-3", value, "mmol/L"), "referenceRange": [{"text": text}]}
    assert ("low-potassium" in low(obs)) is is_low


@pytest.mark.parametrize(("interpretation", "flagged"), [
    ({"text": "Low"}, True), ({"text": "Critically low"}, True), ({"text": "below normal"}, True),
    ({"coding": [{"system": "http://hl7.org/fhir/v2/0078", "code": "LL"}]}, True),
    ({"coding": [{"code": "x", "display": "Low"}]}, True),
    ({"text": "Normal"}, False), ({"text": "Not low"}, False), ({"text": "High"}, False),
])
def test_interpretation_given_only_as_text(interpretation, flagged):
    obs = {**lab("k", "2823-3", 3.8, "mmol/L"), "interpretation": [interpretation]}
    assert ("low-potassium" in low(obs)) is flagged


def test_converted_value_beside_a_limit_in_another_unit():
    f = low(lab("ca", "2000-8", 1.95, "mmol/L"))["low-calcium"]  # default limit 8.6 mg/dL
    assert "1.95 mmol/L (7.82 mg/dL)" in f.reason and "8.6 mg/dL" in f.reason
    same_unit = low(lab("ca", "17861-6", 7.9, "mg/dL"))["low-calcium"]
    assert "7.9 mg/dL on" in same_unit.reason  # nothing to convert


def test_status_policy():
    prelim = low(lab("k", "2823-3", 3.0, "mmol/L", status="preliminary"))["low-potassium"]
    assert "preliminary" in prelim.reason
    assert "preliminary" not in low(lab("k", "2823-3", 3.0, "mmol/L", status="amended"))["low-potassium"].reason
    final_low = lab("k1", "2823-3", 3.0, "mmol/L", status="final")
    corrected = lab("k2", "2823-3", 4.0, "mmol/L", status="corrected")   # same time, corrected: it wins
    assert low(final_low, corrected) == {} and low(corrected, final_low) == {}
    final_normal = lab("k3", "2823-3", 4.0, "mmol/L", status="final")
    preliminary_low = lab("k4", "2823-3", 3.0, "mmol/L", status="preliminary")  # same time: the final wins
    assert low(preliminary_low, final_normal) == {} and low(final_normal, preliminary_low) == {}


def _with_comparator(value: float, comparator: str) -> dict:
    obs = lab("k", "2823-3", value, "mmol/L", low=3.5, high=5.1, when="2026-10-01T08:00:00Z")
    obs["valueQuantity"]["comparator"] = comparator
    return obs


@pytest.mark.parametrize(("value", "superseded"), [(3.5, True), (3.0, False)])
def test_a_greater_than_result_is_normal_only_when_its_bound_is_at_least_the_limit(value, superseded):
    # ">3.5" with a lower limit of 3.5 is normal (it supersedes an older hypokalaemia diagnosis); ">3.0" cannot say.
    hypok = condition("h", icd("E87.6", "Hypokalemia"), onset="2026-01-01")
    assert ("low-potassium" in low(hypok, _with_comparator(value, ">"))) is not superseded


def test_an_undated_diagnosis_counts_and_its_finding_has_no_date():
    # Nothing says it is old, so an undated active electrolyte diagnosis counts (E87.6, low potassium).
    hypok = condition("h", icd("E87.6", "Hypokalemia"))
    del hypok["onsetDateTime"]
    f = low(hypok)["low-potassium"]
    assert f.date is None and f.reason == "Hypokalemia (ICD-10-CM E87.6)"


def test_diagnoses_of_one_electrolyte_are_listed_oldest_first_and_a_resolved_one_is_skipped():
    # A finding lists its diagnoses by date, whatever their ids; a resolved diagnosis is not one of them.
    resolved = condition("r", icd("E87.6", "Hypokalemia"), clinical="resolved", onset="2026-02-01")
    newer = condition("a", icd("E87.6", "Hypokalemia"), onset="2026-06-01")
    older = condition("b", icd("E87.6", "Hypokalemia"), onset="2026-03-01")
    assert low(resolved, newer, older)["low-potassium"].references == ("Condition/b", "Condition/a")


def test_low_result_reasons_say_the_limit_they_met():
    # The reason ends with the limit the result fell below: the default lower limit, or the laboratory's own flag.
    default = low(lab("k", "2823-3", 3.0, "mmol/L"))["low-potassium"].reason
    flagged = low(lab("k", "2823-3", 3.6, "mmol/L", low=3.5, high=5.1,
                      interpretation=[{"coding": [{"code": "L"}]}]))["low-potassium"].reason
    assert default.endswith(" 3 mmol/L on 2026-10-01 (below the default lower limit 3.5 mmol/L)"), default
    assert flagged.endswith(" 3.6 mmol/L on 2026-10-01 (flagged low by the laboratory)"), flagged
    prelim = low(lab("k", "2823-3", 3.0, "mmol/L", status="preliminary"))["low-potassium"].reason
    assert prelim.endswith(" 3 mmol/L on 2026-10-01, preliminary (below the default lower limit 3.5 mmol/L)"), prelim
