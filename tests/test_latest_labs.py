"""Lab results reduced while reading (plugin/latest_labs.py) give the record exactly what reading every result
gives: the same lab list, in the same order, whatever the order, dates, ties and unusable results."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin import default_knowledge
from plugin.fhir_read import flatten, lab_fact, lab_facts, lab_parts
from plugin.latest_labs import LatestLabs
from plugin.record import LabFact, PatientRecord

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
SLOTS = [("low-potassium", "total"), ("low-calcium", "total"), ("low-calcium", "ionized"), None]


def _fact(n: int, slot, day: int, value: float | None, flagged: bool, status: str | None = None) -> LabFact:
    contributor, analyte = slot or (None, "total")
    date = (NOW + timedelta(days=day)).isoformat()
    return LabFact(f"Observation/{n}", "x", contributor, analyte, value, "mmol/L", "", None, None, flagged, date,
                   status=status)


def _both(facts: list[LabFact], now: datetime = NOW) -> tuple[list, list, int]:
    every = PatientRecord(now=now)
    for fact in facts:
        every.add(fact)
    reduced, reads = PatientRecord(now=now), []
    labs = LatestLabs(now)
    for fact in facts:
        slot = (fact.contributor, fact.analyte) if fact.contributor else None
        labs.offer(fact.date, slot, partial(lambda f: reads.append(f) or f, fact), fact.reference, fact.status)
    labs.add_to(reduced)
    return every.labs, reduced.labs, len(reads)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SLOTS), st.integers(-40, 3), st.sampled_from([None, 3.1, 4.2]),
                          st.booleans(), st.sampled_from([None, "final", "preliminary", "corrected"])), max_size=40))
def test_same_record_as_reading_every_result(rows):
    """Statuses included: at equal dates a corrected result outranks a final one, a final a preliminary one."""
    facts = [_fact(n, slot, day, value, flagged, status)
             for n, (slot, day, value, flagged, status) in enumerate(rows)]
    every, reduced, _ = _both(facts)
    assert reduced == every


def test_a_long_history_reads_only_a_handful_in_full():
    facts = [_fact(n, SLOTS[n % 3], -n % 700, 4.0, False) for n in range(900)]
    every, reduced, reads = _both(facts)
    assert reduced == every
    assert reads <= 2 * (len(SLOTS) + 1)


def test_results_without_a_date_are_dropped_as_the_record_drops_them():
    undated = LabFact("Observation/u", "x", "low-potassium", "total", 3.0, "mmol/L", "", None, None, False, None)
    every, reduced, reads = _both([undated, _fact(1, SLOTS[0], -1, 4.0, False)])
    assert reduced == every and reads == 1


@pytest.mark.shared_data
def test_real_bundles_give_the_same_labs(shared_data):
    """Every shared Synthea bundle: the reduced reading equals reading every Observation, at several dates."""
    knowledge = default_knowledge()
    files = sorted(shared_data.glob("bundles/*.json"))
    assert files
    for path in files:
        observations = [r for r, _ in flatten([json.loads(path.read_text())])
                        if isinstance(r, dict) and r.get("resourceType") == "Observation"]
        for now in (datetime(2015, 1, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC), NOW):
            every, reduced = PatientRecord(now=now), PatientRecord(now=now)
            labs = LatestLabs(now)
            for resource in observations:
                for fact in lab_facts(resource, knowledge):
                    every.add(fact)
                if (parts := lab_parts(resource, knowledge)) is not None:
                    ref, date, wanted, status = parts
                    for part, code in wanted:
                        lab = knowledge.labs.get(code)
                        labs.offer(date, (lab.contributor, lab.analyte) if lab else None,
                                   partial(lab_fact, ref, code, part, date, knowledge, status), status=status)
            labs.add_to(reduced)
            assert reduced.labs == every.labs, path.name
