"""The two pure steps every batch driver shares (cds_hooks.batch.steps): per line and per patient."""
from __future__ import annotations

import itertools
import json

from cds_hooks.batch.steps import BLANK, UNREAD, StreamState, add_line, line_facts, review_patient
from plugin import default_knowledge
from plugin.fhir_read import Resolver
from plugin.record import PatientRecord
from tests.builders import NOW, cramps, lab, med_request, patient, rx

EXPORT = "exports/2026-11"


def state(**resolvers: Resolver) -> StreamState:
    return StreamState(default_knowledge(), dict(resolvers), validate=True, as_of=NOW)


def line(resource: dict | str) -> bytes:
    return (resource if isinstance(resource, str) else json.dumps(resource)).encode() + b"\n"


def test_a_line_becomes_facts_keyed_by_export_and_patient():
    facts = line_facts(line(med_request("m1", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"))), EXPORT,
                       state())
    assert facts.key == (EXPORT, "Patient/p1")
    assert [f.contributors for f in facts.facts] == [("thiazide-diuretic",)]
    assert facts.resource and facts.error is None


def test_a_patient_line_carries_the_death_date_and_no_facts():
    facts = line_facts(line(patient("p4", deceasedDateTime="2025-01-02T10:00:00Z")), EXPORT, state())
    assert (facts.key, facts.deceased, facts.facts) == ((EXPORT, "Patient/p4"), "2025-01-02", ())


def test_blank_bad_unread_and_unattributed_lines_say_why():
    s = state()
    assert line_facts(b"  \n", EXPORT, s) is BLANK
    assert line_facts(b"{not json\n", EXPORT, s).error.startswith("invalid JSON")
    assert line_facts(b"[1, 2]\n", EXPORT, s).error == "not a JSON object (list)"
    assert line_facts(line({"resourceType": "Patient"}), EXPORT, s).error == "Patient without an id"
    assert line_facts(line({"resourceType": "Encounter", "id": "e"}), EXPORT, s) is UNREAD
    orphan = {k: v for k, v in lab("k", "2823-3", 2.0, "mmol/L").items() if k != "subject"}
    assert line_facts(line(orphan), EXPORT, s).unattributed == "Observation"


def test_observations_without_a_rule_loinc_are_counted_unparsed_only_in_observation_files():
    heart_rate = line(lab("hr", "8867-4", 70, "/min"))
    assert line_facts(heart_rate, EXPORT, state(), observations=True) is UNREAD
    assert line_facts(heart_rate, EXPORT, state()).key == (EXPORT, "Patient/p1")  # read, seen, no facts


def test_medication_references_resolve_through_the_exports_own_medications():
    resolver = Resolver()
    resolver.add({"resourceType": "Medication", "id": "simva", "code": rx("83367", "simvastatin")})
    order = line(med_request("m5", medicationReference={"reference": "Medication/simva"}))
    assert [f.contributors for f in line_facts(order, EXPORT, state(**{EXPORT: resolver})).facts] == [("statin",)]
    assert line_facts(order, "another export", state(**{EXPORT: resolver})).facts == ()


def _parts(lines: list[dict], cut: int, s: StreamState) -> list[tuple[tuple[int, ...], PatientRecord]]:
    """The lines folded into two partial records, split after `cut` lines (as two chunks or blocks would)."""
    parts = []
    for order, group in enumerate((lines[:cut], lines[cut:])):
        records: dict[str, PatientRecord] = {}
        for resource in group:
            add_line(records, line_facts(line(resource), EXPORT, s), s.as_of)
        parts += [((order,), rec) for rec in records.values()]
    return parts


def test_a_patient_is_the_same_however_its_lines_are_split_and_whatever_order_the_parts_arrive_in():
    lines = [cramps("c1") | {"subject": {"reference": "Patient/p1"}},
             lab("k-old", "2823-3", 4.0, "mmol/L", when="2026-03-01T08:00:00Z"),
             lab("k-new", "2823-3", 3.1, "mmol/L", when="2026-09-01T08:00:00Z"),
             lab("k-dup", "2823-3", 3.1, "mmol/L", when="2026-09-01T08:00:00Z"),  # a duplicate: k-new is cited
             lab("mg", "19123-9", 1.2, "mg/dL"),
             med_request("m1", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet")),
             patient("p1")]
    s = state()
    expected = review_patient(EXPORT, "Patient/p1", _parts(lines, len(lines), s), s).review.to_dict()
    assert [(f["contributor"], f["references"]) for f in expected["findings"]] == [
        ("leg-cramps-documented", ["Condition/c1"]), ("low-potassium", ["Observation/k-new"]),
        ("low-magnesium", ["Observation/mg"]), ("thiazide-diuretic", ["MedicationRequest/m1"])]
    for cut in range(len(lines) + 1):
        parts = _parts(lines, cut, s)
        for arrival in itertools.permutations(parts):
            assert review_patient(EXPORT, "Patient/p1", arrival, s).review.to_dict() == expected
        assert review_patient(EXPORT, "Patient/p1", parts, s).review.to_dict() == expected  # parts left intact
