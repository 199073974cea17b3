"""Each contributor and each matching path, pinned with the evidence key it relies on
(clinical-reference.md §1 for evidence, §2 for the codes)."""
from __future__ import annotations

import pytest

from plugin import review
from plugin.codes import LOINC, RXNORM
from tests.builders import (
    NOW,
    atc,
    concept,
    condition,
    icd,
    lab,
    med_request,
    patient,
    rx,
    sct,
)


def findings(*resources, **kw):
    rv = review([patient(), *resources], now=NOW, **kw)
    return {f.contributor: f for f in rv.findings}


MEDICATION_CASES = [
    # (contributor, evidence key, medication concept) — one per coding path
    ("loop-diuretic", "E2", rx("4603", "furosemide")),                                    # ingredient
    ("loop-diuretic", "E2", rx("313988", "furosemide 40 MG Oral Tablet")),                # product (SCD)
    ("loop-diuretic", "E2", concept(text="Lasix 40mg")),                                  # brand text only
    ("loop-diuretic", "E2", atc("C03CA02")),                                              # ATC class prefix
    ("thiazide-diuretic", "E2", rx("979468", "hydrochlorothiazide 12.5 MG / losartan 50 MG")),  # combination
    ("thiazide-diuretic", "E2", rx("310798")),                                            # SCD, no display
    ("thiazide-diuretic", "E2", concept(RXNORM, "746030", "Atenolol 50 MG / Chlorthalidone 25 MG Oral Tablet")),
    ("potassium-sparing-diuretic", "E2", rx("9997", "spironolactone")),
    ("potassium-sparing-diuretic", "E2", rx("310812", "HCTZ 25 MG / triamterene 37.5 MG Oral Tablet")),
    ("potassium-sparing-diuretic", "E2", concept(text="Amiloride Hydrochloride 5 MG")),   # salt-insensitive
    ("statin", "E2", rx("617312", "atorvastatin 10 MG Oral Tablet")),
    ("statin", "E18", rx("1297766", "atorvastatin calcium trihydrate")),                  # PIN salt form
    ("statin", "E2", rx("476349", "ezetimibe 10 MG / simvastatin 20 MG")),
    ("laba", "E2", atc("R03AK10", "vilanterol and fluticasone furoate")),                 # ATC only
    ("laba", "E2", rx("896209", "fluticasone propionate 0.25 MG/ACTUAT / salmeterol 0.05 MG/ACTUAT")),
    ("laba", "E2", concept(text="OLODATEROL inhalation spray")),                          # unverified code: by name
    ("iron-sucrose", "E1", concept(text="iron sucrose 20 MG/ML Injectable Solution [Venofer]")),
    ("conjugated-estrogens", "E1", rx("310197", "estrogens, conjugated (USP) 0.625 MG Oral Tablet")),
    ("conjugated-estrogens", "E1", concept(text="Estrogens, Conjugated 0.3 mg")),
    ("raloxifene", "E23", rx("72143", "raloxifene")),
    ("teriparatide", "E1", concept(text="Teriparatide 20 MCG/DOSE pen [Forteo]")),
    ("naproxen", "E1", concept(RXNORM, "849574", "Naproxen sodium 220 MG Oral Tablet")),
    ("naproxen", "E1", rx("105899", "Naprosyn 500 MG Oral Tablet")),
    ("quinine", "E4", rx("9071", "quinine")),
    ("quinine", "E4", rx("997010", "quinine sulfate 324 MG Oral Capsule")),
    ("quinine", "E4", atc("P01BC01")),
]


@pytest.mark.parametrize(("contributor", "evidence", "med"), MEDICATION_CASES)
def test_medication_contributor_matched(contributor, evidence, med):
    found = findings(med_request("m1", med))
    assert contributor in found, f"{med} should match {contributor}"
    assert evidence in found[contributor].sources
    assert found[contributor].references == ("MedicationRequest/m1",)


def test_combination_yields_every_class():
    found = findings(med_request("m1", rx("310812", "hydrochlorothiazide 25 MG / triamterene 37.5 MG")))
    assert {"thiazide-diuretic", "potassium-sparing-diuretic"} <= set(found)


@pytest.mark.parametrize("med", [
    concept(text="Little Pink Pill for water retention"),     # HL7 example003 trap: no code, no name
    concept(text="quinidine gluconate"),                     # a different drug whose name starts alike
    concept(text="hydroquinone cream"),
    rx("197361", "Amlodipine 5 MG Oral Tablet"),
    concept("http://example.org/local", "9071", "local code 9071"),  # code string without RxNorm system
    concept(text="Albuterol 0.09 MG/ACTUAT inhaler"),       # a SABA is not a LABA
])
def test_non_contributors_not_matched(med):
    assert findings(med_request("m1", med)) == {}


def test_code_system_is_checked_not_just_code():
    found = findings(med_request("m1", concept("http://snomed.info/sct", "4603", "something else")))
    assert "loop-diuretic" not in found


def test_every_coding_is_read_not_only_the_first():
    med = {"coding": [{"system": "http://hospital.example/formulary", "code": "X1"},
                      {"system": RXNORM, "code": "313988"}]}
    assert "loop-diuretic" in findings(med_request("m1", med))


def test_contained_medication():
    req = med_request("m1", None, medicationReference={"reference": "#med1"},
                      contained=[{"resourceType": "Medication", "id": "med1", "code": rx("9997", "spironolactone")}])
    assert "potassium-sparing-diuretic" in findings(req)


def test_referenced_medication_and_ingredients():
    med = {"resourceType": "Medication", "id": "mx",
           "ingredient": [{"itemCodeableConcept": rx("4603", "furosemide")}]}
    req = med_request("m1", None, medicationReference={"reference": "Medication/mx"})
    assert "loop-diuretic" in findings(med, req)


def test_medication_via_urn_uuid_full_url():
    b = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:aaaa-1", "resource": {"resourceType": "Medication", "code": rx("36117", "salmeterol")}},
        {"fullUrl": "urn:uuid:pppp-1", "resource": patient("p1")},
        {"resource": {**med_request("m1", None, subject="urn:uuid:pppp-1"),
                      "medicationReference": {"reference": "urn:uuid:aaaa-1"}}},
    ]}
    rv = review([b], now=NOW)
    assert [f.contributor for f in rv.findings] == ["laba"]
    assert rv.patient == "Patient/p1"


def test_code_only_medication_is_described_by_its_knowledge_name():
    med = {"resourceType": "Medication", "id": "mx", "ingredient": [{"itemCodeableConcept": {
        "coding": [{"system": RXNORM, "code": "7258"}]}}]}
    req = med_request("m1", None, medicationReference={"reference": "Medication/mx"})
    assert findings(med, req)["naproxen"].reason.startswith("naproxen (RxNorm 7258), active since")


def test_dangling_medication_reference_is_a_warning_not_a_crash():
    rv = review([patient(), med_request("m1", None, medicationReference={"reference": "Medication/nope"})], now=NOW)
    assert rv.findings == []
    assert any("could not be resolved" in w for w in rv.warnings)


@pytest.mark.parametrize(("status", "counts"), [
    ("active", True), ("on-hold", True), ("draft", True),
    ("stopped", False), ("completed", False), ("cancelled", False), ("entered-in-error", False),
])
def test_medication_request_status(status, counts):
    assert ("statin" in findings(med_request("m1", rx("617312"), status=status))) is counts


def test_do_not_perform_does_not_count():
    assert findings(med_request("m1", rx("617312"), doNotPerform=True)) == {}


def test_medication_statement_and_dispense():
    stmt = {"resourceType": "MedicationStatement", "id": "s1", "status": "active",
            "medicationCodeableConcept": rx("36117", "salmeterol"), "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2026-02-01"}
    recent = {"resourceType": "MedicationDispense", "id": "d1", "status": "completed",
              "medicationCodeableConcept": rx("313988"), "subject": {"reference": "Patient/p1"},
              "whenHandedOver": "2026-09-01"}
    old = {**recent, "id": "d2", "medicationCodeableConcept": rx("617312"), "whenHandedOver": "2024-01-01"}
    found = findings(stmt, recent, old)
    assert {"laba", "loop-diuretic"} <= set(found)
    assert "statin" not in found  # a dispense two years ago is not current medication


CONDITION_CASES = [
    ("leg-cramps-documented", "E1", icd("G47.62")),
    ("leg-cramps-documented", "E1", icd("R252")),                      # no dot
    ("leg-cramps-documented", "E1", sct("102549009")),
    ("diabetes", "E16", icd("E11.9")),
    ("diabetes", "E16", icd("E1342")),
    ("diabetes", "E16", sct("44054006")),
    ("neuropathy", "E3", icd("E11.42")),                                # diabetic polyneuropathy
    ("neuropathy", "E3", icd("G62.9")),                                 # block G60-G65
    ("neuropathy", "E3", concept(text="Neuropathy due to type 2 diabetes mellitus (disorder)")),
    ("peripheral-artery-disease", "E1", icd("I70.213")),
    ("peripheral-artery-disease", "E1", sct("399957001")),
    ("alcohol-use-disorder", "E3", icd("F10.20")),
    ("alcohol-use-disorder", "E3", icd("G62.1")),
    ("chronic-kidney-disease", "E15", icd("N18.32")),
    ("esrd-dialysis", "E15", icd("Z99.2")),                   # dialysis
    ("esrd-dialysis", "E15", icd("N18.6")),
    ("esrd-dialysis", "E15", sct("236435004")),
    ("chronic-kidney-disease", "E15", sct("709044004")),
    ("cirrhosis", "E14", icd("K70.30")),
    ("cirrhosis", "E14", sct("19943007")),
    ("hypothyroidism", "E3", icd("E03.9")),
    ("pregnancy", "E7", icd("O26.899")),
    ("pregnancy", "E7", icd("Z34.90")),
    ("pregnancy", "E7", sct("77386006")),
    ("lumbar-spinal-stenosis", "E11", icd("M48.062")),
    ("venous-insufficiency", "E17", icd("I87.2")),
    ("volume-depletion", "E22", icd("E86.0")),
    ("low-potassium", "E1", icd("E87.6")),
    ("low-magnesium", "E1", icd("E83.42")),
    ("low-calcium", "E1", sct("5291005")),
]


@pytest.mark.parametrize(("contributor", "evidence", "code"), CONDITION_CASES)
def test_condition_contributor_matched(contributor, evidence, code):
    found = findings(condition("c1", code, onset="2026-09-01"))  # recent: a pregnancy has a gestation window
    assert contributor in found
    assert evidence in found[contributor].sources


@pytest.mark.parametrize("code", [
    icd("I70.0"),                    # aortic atherosclerosis is not limb PAD
    icd("N17.9"),                    # acute kidney failure is not CKD
    icd("E16.2"),                    # hypoglycaemia is not diabetes
    sct("15777000", "Prediabetes"),
    concept(text="Prediabetes"),
    concept(text="History of leg cramps"),
    concept(text="Family history of diabetes mellitus"),
    concept(text="Non-diabetic hyperglycaemia"),
    concept("http://snomed.info/sct", "E11.9"),   # ICD code under the SNOMED system: no match
])
def test_conditions_not_matched(code):
    assert findings(condition("c1", code)) == {}


@pytest.mark.parametrize(("clinical", "verification", "counts"), [
    ("active", "confirmed", True), ("recurrence", None, True), ("relapse", "provisional", True),
    (None, None, True), ("resolved", "confirmed", False), ("inactive", None, False), ("remission", None, False),
    ("active", "refuted", False), ("active", "entered-in-error", False),
])
def test_condition_status(clinical, verification, counts):
    assert ("cirrhosis" in findings(condition("c1", icd("K74.60"), clinical=clinical,
                                              verification=verification))) is counts


def test_abated_condition_without_status_does_not_count():
    assert findings(condition("c1", icd("K74.60"), clinical=None, abatementDateTime="2025-01-01")) == {}


def test_resources_about_other_patients_are_ignored():
    rv = review([patient(), med_request("m1", rx("617312"), subject="Patient/other")], now=NOW,
                context={"patientId": "p1"})
    assert rv.findings == []
    assert any("another patient" in w for w in rv.warnings)


def test_lab_loinc_system_required():
    obs = lab("o1", "2823-3", 2.9, "mmol/L")
    obs["code"] = concept("http://example.org/lab", "2823-3")
    assert findings(obs) == {}
    assert "low-potassium" in findings(lab("o2", "2823-3", 2.9, "mmol/L"))
    assert LOINC == "http://loinc.org"
