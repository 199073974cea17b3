"""The engine over every file in ../shared/data (real synthetic data written by others).

No crash anywhere; and for patients whose records were read by hand, the findings a clinician
would expect (as-of dates chosen inside each data set's time span).
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from plugin import ReviewOptions, build_card, review

pytestmark = pytest.mark.shared_data
AS_OF = datetime(2021, 6, 1, tzinfo=UTC)
WIDE = ReviewOptions(lab_lookback_days=3650, monitoring_months=120)


def run(path, **kw):
    return review([json.loads(path.read_text())], now=AS_OF, options=WIDE, **kw)


def test_every_bundle_and_resource_reviews_without_crashing(shared_data):
    files = sorted([*shared_data.glob("bundles/*.json"), *shared_data.glob("resources/**/*.json")])
    assert len(files) >= 20
    for path in files:
        rv = run(path)
        for f in rv.findings:
            assert f.references and f.reason and f.grade
        for hook in ("patient-view", "order-sign"):
            build_card(rv, hook=hook, trigger="any")


def test_every_ndjson_export_reviews_per_patient_without_crashing(shared_data):
    for folder in sorted(p for p in (shared_data / "ndjson").iterdir() if p.is_dir()):
        by_patient: dict[str, list[dict]] = defaultdict(list)
        for path in folder.glob("*.ndjson"):
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                resource = json.loads(line)
                subject = (resource.get("subject") or resource.get("patient") or {}).get("reference")
                if resource.get("resourceType") == "Patient":
                    subject = f"Patient/{resource['id']}"
                if subject:
                    by_patient[subject].append(resource)
        assert by_patient, folder
        for ref, resources in by_patient.items():
            rv = review(resources, now=AS_OF, options=WIDE, context={"patientId": ref.split("/")[-1]})
            assert not any("another patient" in w for w in rv.warnings)


EXPECTED = {
    # file: contributors that must be found (hand-checked against the resources)
    "bds__Dillon_Adams_b4405d0c-89e6-4788-b34a-f013480249c3.json": {"statin", "naproxen"},
    "bds__Emerson_Feil_daf4e787-0ea5-45ff-a9a1-c68308e9f6a3.json": {"thiazide-diuretic"},  # atenolol/chlorthalidone
    "bds__Leroy_Johns_e583bad4-06df-45b6-a9a4-33857408c0b5.json": {"thiazide-diuretic"},   # amlodipine/HCTZ/olmesartan
    "bds__Wenona_Cormier_fabfe789-b8b6-45ae-ad04-f43bb2d5c342.json": {"chronic-kidney-disease", "diabetes",
                                                                      "neuropathy"},
    "gsd__Morris_Lockman_cd9e9826-aea1-4682-adc0-c1d97633bf31.json": {"thiazide-diuretic", "diabetes", "neuropathy"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_checked_patients(shared_data, name):
    found = {f.contributor for f in run(shared_data / "bundles" / name).findings}
    assert found == EXPECTED[name]


def test_stopped_thiazides_do_not_count_only_the_active_one(shared_data):
    rv = run(shared_data / "bundles" / "bds__Emerson_Feil_daf4e787-0ea5-45ff-a9a1-c68308e9f6a3.json")
    (thiazide,) = rv.findings
    assert len(thiazide.references) == 1 and thiazide.date == "2019-10-02"


@pytest.mark.parametrize("prefix", ["gsd__Parker_Casper", "gsd__Tristan_Gleason", "gsd__Cathryn_Windler",
                                    "inferno__uscore_bundle_patient_85"])
def test_deceased_patients_with_active_medications_are_not_reviewed(shared_data, prefix):
    (path,) = (shared_data / "bundles").glob(prefix + "*.json")
    rv = run(path)
    assert rv.deceased and rv.findings == []


def test_contained_medication_in_hl7_example(shared_data):
    rv = run(shared_data / "resources" / "hl7-r4-examples" / "MedicationRequest-medrx0311.json")
    assert [f.contributor for f in rv.findings] == ["thiazide-diuretic"]  # chlorthalidone via #med0316


def test_free_text_water_pill_is_not_matched(shared_data):
    rv = run(shared_data / "resources" / "hl7-r4-examples" / "MedicationStatement-example003.json")
    assert rv.findings == []


def test_inferno_patient_85_medication_reference_resolves_through_full_url(shared_data):
    """Patient 85's active furosemide uses medicationReference to a urn:uuid Medication entry."""
    data = json.loads((shared_data / "bundles" / "inferno__uscore_bundle_patient_85.json").read_text())
    for entry in data["entry"]:  # review it as if alive, to see the reference resolve
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"].pop("deceasedDateTime", None)
    rv = review([data], now=AS_OF, options=WIDE)
    loop = next(f for f in rv.findings if f.contributor == "loop-diuretic")
    assert len(loop.references) >= 2  # the coded one and the one via medicationReference
