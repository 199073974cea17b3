"""Issue 12: negation and context in condition text (NegEx/ConText semantics), and a known code over text.

Each case is a pair: the phrase that must count beside the near-identical one that must not.
"""
from __future__ import annotations

import pytest

from plugin import review
from plugin.context import FAMILY, HISTORICAL, HYPOTHETICAL, NEGATED, POSSIBLE, modifiers
from tests.builders import NOW, concept, condition, icd, patient, sct


def found(*resources) -> dict:
    return {f.contributor: f for f in review([patient(), *resources], now=NOW).findings}


def text_condition(text: str, **kw) -> dict:
    return condition("c", concept(text=text), onset="2026-09-01", **kw)


PAIRS = [
    # (contributor, counts, does not count)
    ("diabetes", "Type 2 diabetes mellitus without complication", "Without type 2 diabetes mellitus"),
    ("diabetes", "Non-insulin dependent diabetes mellitus", "Non-diabetic hyperglycaemia"),
    ("cirrhosis", "Cirrhosis of liver due to non-alcoholic steatohepatitis", "No cirrhosis"),
    ("peripheral-artery-disease", "Peripheral arterial disease", "R/O peripheral arterial disease"),
    ("peripheral-artery-disease", "Peripheral arterial disease of both legs", "Rule out peripheral arterial disease"),
    ("chronic-kidney-disease", "Chronic kidney disease stage 3", "Family history of chronic kidney disease"),
    ("chronic-kidney-disease", "Chronic kidney disease", "Chronic kidney disease in mother"),
    ("hypothyroidism", "Hypothyroidism", "Screening for hypothyroidism"),
    ("diabetes", "Diabetes mellitus type 2", "At risk for diabetes mellitus type 2"),
    ("pregnancy", "Pregnancy, 24 weeks", "Possible pregnancy"),
    ("pregnancy", "Pregnancy", "Pregnancy test negative"),
    ("pregnancy", "Pregnancy, first trimester", "History of pregnancy"),  # episodic: over
    ("lumbar-spinal-stenosis", "History of lumbar spinal stenosis", "Lumbar spinal stenosis ruled out"),  # chronic
    ("alcohol-use-disorder", "Alcohol abuse", "Denies alcohol abuse"),
    ("neuropathy", "Peripheral neuropathy", "Neuropathy, suspected"),
    ("neuropathy", "Peripheral neuropathy, not otherwise specified", "Evaluation for peripheral neuropathy"),
    ("low-potassium", "Hypokalemia", "History of hypokalemia"),
    ("venous-insufficiency", "No ulcer but venous insufficiency", "No venous insufficiency"),
    ("leg-cramps-documented", "Leg cramping at night", "Denies leg cramping at night"),
    ("leg-cramps-documented", "Charley horse, left calf", "No charley horse"),
    ("leg-cramps-documented", "Nocturnal cramps", "Family history of nocturnal cramps"),
]


@pytest.mark.parametrize(("contributor", "positive", "negative"), PAIRS, ids=[p[2] for p in PAIRS])
def test_phrase_pairs(contributor, positive, negative):
    assert contributor in found(text_condition(positive)), positive
    assert contributor not in found(text_condition(negative)), negative


@pytest.mark.parametrize(("text", "word", "expected"), [
    ("no history of cirrhosis", "cirrhosis", {NEGATED}),
    ("family history of cirrhosis", "cirrhosis", {FAMILY}),
    ("history of cirrhosis", "cirrhosis", {HISTORICAL}),
    ("r/o cirrhosis", "cirrhosis", {POSSIBLE}),
    ("cirrhosis?", "cirrhosis", {POSSIBLE}),
    ("screening for cirrhosis", "cirrhosis", {HYPOTHETICAL}),
    ("cirrhosis not ruled out", "cirrhosis", {POSSIBLE}),
    ("denies pain but has cirrhosis", "cirrhosis", set()),                  # terminated by "but"
    ("no pain. cirrhosis", "cirrhosis", set()),                              # terminated by a full stop
    ("no pain in the left or right lower leg at all with cirrhosis", "cirrhosis", set()),  # beyond six words
    ("gram negative sepsis with cirrhosis", "cirrhosis", set()),             # a pseudo-trigger
])
def test_trigger_scope(text, word, expected):
    start = text.index(word)
    assert modifiers(text, start, start + len(word)) == expected


def test_a_known_code_wins_over_its_words():
    """R73.03 and H47.01 are ICD-10-CM codes of no contributor: their displays must not make them one."""
    assert found(condition("p", icd("R73.03", "Borderline diabetes mellitus"), onset="2026-09-01")) == {}
    assert found(condition("o", icd("H47.01", "Ischemic optic neuropathy"), onset="2026-09-01")) == {}
    prediabetes = condition("p", {**icd("R73.03"), "text": "Diabetes mellitus (borderline)"}, onset="2026-09-01")
    assert found(prediabetes) == {}


def test_text_is_the_fallback_for_codes_the_engine_cannot_place():
    local = {"coding": [{"system": "http://clinic.example.org/problems", "code": "P-17"}],
             "text": "Type 2 diabetes mellitus"}
    assert "diabetes" in found(condition("l", local, onset="2026-09-01"))
    unindexed = {**sct("999999999", "Diabetes mellitus type 2 with an unusual code")}
    assert "diabetes" in found(condition("s", unindexed, onset="2026-09-01"))
    assert "diabetes" not in found(condition("s", sct("15777000", "Prediabetes"), onset="2026-09-01"))
