"""Every sample patient (samples/README.md) gives exactly the contributors its row promises."""
from __future__ import annotations

import json

import pytest

from plugin import build_card, review
from tests.builders import NOW
from tests.card_checks import assert_valid_card
from tests.conftest import SAMPLES

EXPECTED = {
    # file: (contributor ids in card order, contributors flagged "started within 12 months", monitoring gap)
    "quinine-cramps.json": (["quinine", "leg-cramps-documented", "naproxen"], set(), False),
    "ckd-diuretics.json": (["leg-cramps-documented", "low-potassium", "thiazide-diuretic", "loop-diuretic",
                            "esrd-dialysis"], {"loop-diuretic"}, False),
    "lasix-text-traps.json": (["leg-cramps-documented", "low-calcium", "loop-diuretic"], {"loop-diuretic"}, False),
    "triamterene-laba.json": (["leg-cramps-documented", "potassium-sparing-diuretic", "thiazide-diuretic", "laba"],
                              {"potassium-sparing-diuretic", "thiazide-diuretic"}, False),
    "cirrhosis-contained.json": (["leg-cramps-documented", "low-magnesium", "potassium-sparing-diuretic",
                                  "cirrhosis", "alcohol-use-disorder"], {"potassium-sparing-diuretic"}, False),
    "e1-drugs.json": (["leg-cramps-documented", "iron-sucrose", "raloxifene", "teriparatide", "naproxen",
                       "hypothyroidism"], set(), False),
    "lss-venous.json": (["leg-cramps-documented", "low-calcium", "thiazide-diuretic", "laba", "conjugated-estrogens",
                         "lumbar-spinal-stenosis", "venous-insufficiency"], {"thiazide-diuretic"}, False),
    "diabetes-pad-statin.json": (["leg-cramps-documented", "statin", "neuropathy", "peripheral-artery-disease",
                                  "diabetes"], {"statin"}, False),
    "deceased-diuretic.json": ([], set(), False),
    "pregnancy.json": (["leg-cramps-documented", "pregnancy", "volume-depletion"], set(), False),
    "hctz-no-labs.json": (["leg-cramps-documented", "thiazide-diuretic"], {"thiazide-diuretic"}, True),
    "cramps-only.json": (["leg-cramps-documented"], set(), False),
    "kidney-ckd3.json": (["leg-cramps-documented", "chronic-kidney-disease"], set(), False),
    "kidney-esrd.json": (["leg-cramps-documented", "esrd-dialysis"], set(), False),
    "negated-text.json": (["leg-cramps-documented", "cirrhosis", "lumbar-spinal-stenosis", "diabetes"], set(), False),
    "stale-records.json": (["leg-cramps-documented", "statin", "iron-sucrose", "naproxen"], set(), False),
    "lab-strings.json": (["leg-cramps-documented", "low-potassium", "low-calcium"], set(), False),
}


def load(name):
    return json.loads((SAMPLES / "patients" / name).read_text())


def test_every_sample_has_an_expectation():
    assert {p.name for p in (SAMPLES / "patients").glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_findings(name):
    ids, recent, gap = EXPECTED[name]
    rv = review([load(name)], now=NOW)
    assert [f.contributor for f in rv.findings] == ids
    assert {f.contributor for f in rv.findings if f.recent_start} == recent
    assert rv.monitoring_gap is gap
    assert not [w for w in rv.warnings if "not valid FHIR" in w]  # the samples are valid R4


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_cards_are_valid(name):
    rv = review([load(name)], now=NOW)
    card = build_card(rv, hook="patient-view")
    ids = [i for i in EXPECTED[name][0] if i != "leg-cramps-documented"]
    if not ids:
        assert card is None
        return
    assert_valid_card(card.body)
    assert list(card.contributors) == ids
    assert card.body["indicator"] == ("warning" if "quinine" in ids else "info")


def test_every_contributor_is_covered_by_some_sample():
    from plugin.knowledge import REQUIRED_IDS
    covered = {i for ids, _, _ in EXPECTED.values() for i in ids}
    assert covered == REQUIRED_IDS


def test_entered_in_error_quinine_and_resolved_dehydration_are_ignored():
    found = {f.contributor for f in review([load("lasix-text-traps.json")], now=NOW).findings}
    assert "quinine" not in found and "volume-depletion" not in found


def test_duplicate_potassium_is_one_finding_with_one_reference():
    rv = review([load("ckd-diuretics.json")], now=NOW)
    k = next(f for f in rv.findings if f.contributor == "low-potassium")
    assert len(k.references) == 1 and "3.1 mmol/L" in k.reason and "3.5-5.1" in k.reason


def finding(name, contributor):
    return next(f for f in review([load(name)], now=NOW).findings if f.contributor == contributor)


def test_ckd3_and_esrd_have_their_own_grades_and_statements():
    """clinical-reference §1.3: only haemodialysis/ESRD is graded strong (E15); CKD 1-4 is not established."""
    ckd, esrd = finding("kidney-ckd3.json", "chronic-kidney-disease"), finding("kidney-esrd.json",
                                                                               "esrd-dialysis")
    assert (ckd.grade, esrd.grade) == ("not-established", "strong")
    ckd_card = build_card(review([load("kidney-ckd3.json")], now=NOW), hook="patient-view").body["detail"]
    assert "haemodialysis (E15), not for earlier stages" in ckd_card and "intradialytic" not in ckd_card


def test_esrd_subsumes_the_older_ckd_stage_4():
    esrd = finding("kidney-esrd.json", "esrd-dialysis")
    assert "Condition/esrd-cond-ckd4" not in esrd.references
    assert set(esrd.references) == {"Condition/esrd-cond-esrd", "Condition/esrd-cond-dialysis"}


def test_negated_text_sample_keeps_true_findings_and_drops_context():
    rv = review([load("negated-text.json")], now=NOW)
    cited = {r for f in rv.findings for r in f.references}
    assert {"Condition/neg-cond-dm", "Condition/neg-cond-cirrhosis", "Condition/neg-cond-lss",
            "Condition/neg-cond-cramps"} == cited  # R/O, family, screening, denies, history of, possible, codes: none


def test_stale_records_sample():
    rv = review([load("stale-records.json")], now=NOW)
    by_id = {f.contributor: f for f in rv.findings}
    assert by_id["naproxen"].possibly_stale and "possibly stale" in by_id["naproxen"].reason
    assert not by_id["statin"].possibly_stale  # an old order dispensed last month is current
    assert by_id["iron-sucrose"].references == ("MedicationAdministration/stale-admin-iron-2026",)
    assert "loop-diuretic" not in by_id and "pregnancy" not in by_id and "low-potassium" not in by_id
    assert any("gestation window" in w for w in rv.warnings)
    card = build_card(rv, hook="patient-view").body
    assert "**Naproxen** (possibly stale)" in card["detail"]
    assert card["detail"].index("Naproxen") > card["detail"].index("Statin")  # current ones first


def test_lab_strings_sample():
    k, ca = finding("lab-strings.json", "low-potassium"), finding("lab-strings.json", "low-calcium")
    assert "<2.5 mmol/L" in k.reason and "reference range 3.6-5.2 mmol/L" in k.reason
    assert "1.95 mmol/L (7.82 mg/dL)" in ca.reason and "preliminary" in ca.reason and "8.6 mg/dL" in ca.reason
    assert ca.references == ("Observation/labs-obs-ca",)  # the normal ionized calcium is not a finding
