"""An independent reading of the CDS Hooks checklist (C1-C6, G2) and clinical-reference §3 for one card.

Shared by the engine's and the service's tests; deliberately not the service's own checker
(cds_hooks/service/conformance.py), so the two can catch each other's mistakes.
"""
from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from cds_hooks.settings import OVERRIDE_REASON_SYSTEM

# clinical-reference §3: cards never tell anyone to stop or change a drug, dose, or diagnose causation.
FORBIDDEN = re.compile(
    r"\b(stop(ping)?|discontinue|switch to|increase the dose|decrease the dose|statin myopathy|caused by|"
    r"recommend quinine|mg/day|take \d)", re.IGNORECASE)


# A FHIR reference in words ("Remove the draft order MedicationRequest/x"): ids belong in the structured parts only.
FHIR_ID_IN_TEXT = re.compile(
    r"\b(Patient|Practitioner|Encounter|Organization|Medication(Request|Statement|Dispense|Administration)?|"
    r"Condition|Observation|ServiceRequest|Bundle)/[A-Za-z0-9\-.]+")
EVIDENCE_KEY = re.compile(r"\bE[1-9][0-9]?\b(?![.0-9])")


def _is_uuid(value) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _absolute_url(value) -> bool:
    parts = urlsplit(value) if isinstance(value, str) else None
    return bool(parts and parts.scheme in ("http", "https") and parts.netloc)


def assert_no_empty_values(value, path="card"):
    """G2: no null, "", [] or {} anywhere."""
    assert value is not None and value not in ("", [], {}), f"G2: empty value at {path}"
    if isinstance(value, dict):
        for k, v in value.items():
            assert_no_empty_values(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_no_empty_values(v, f"{path}[{i}]")


def assert_valid_card(card: dict) -> None:
    assert_no_empty_values(card)
    # C1 card
    assert _is_uuid(card["uuid"]), "C1: uuid (needed for feedback)"
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140, "C1: summary under 140 chars"
    assert card["indicator"] in ("info", "warning"), "C1 + card policy: info or warning, never critical"
    assert isinstance(card.get("detail", ""), str), "C1: detail is Markdown text"
    # C2 source
    source = card["source"]
    assert isinstance(source["label"], str) and source["label"], "C2: source.label required"
    if "url" in source:
        assert _absolute_url(source["url"]), "C2: source.url absolute"
    if "topic" in source:
        assert source["topic"]["code"] and source["topic"]["system"], "C2/C6: topic is a Coding"
    # C3/C4 suggestions and actions
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any"), "C1: selectionBehavior with suggestions"
        recommended = sum(1 for s in card["suggestions"] if s.get("isRecommended") is True)
        assert recommended <= 1 or card["selectionBehavior"] == "any", "C3: one recommended under at-most-one"
        for s in card["suggestions"]:
            assert s["label"], "C3: suggestion label"
            assert _is_uuid(s["uuid"]), "C3: suggestion uuid (needed for acceptedSuggestions)"
            for a in s.get("actions", []):
                assert a["type"] in ("create", "update", "delete"), "C4: action type"
                assert a["description"], "C4: action description"
                if a["type"] in ("create", "update"):
                    assert a["resource"]["resourceType"], "C4: create/update carries a resource"
                    assert "resourceId" not in a
                else:
                    assert "/" in a["resourceId"] and "resource" not in a, "C4: delete uses resourceId Type/id"
    else:
        assert "selectionBehavior" not in card
    # C5 links
    for link in card.get("links", []):
        assert link["label"] and _absolute_url(link["url"]), "C5: label and absolute url"
        assert link["type"] in ("absolute", "smart"), "C5: link type"
        assert "appContext" not in link or link["type"] == "smart", "C5: appContext only on smart links"
    # C6 override reasons: Codings with code, system and display
    reasons = card["overrideReasons"]
    for c in reasons:
        assert c["code"] and c["system"] and c["display"], "C6: override reason Coding needs display"
    assert {c["code"] for c in reasons} >= {"already-addressed", "not-relevant", "benefit-outweighs-risk",
                                            "patient-declined"}
    assert {c["system"] for c in reasons} == {OVERRIDE_REASON_SYSTEM}
    # clinical-reference §3
    text = card["summary"] + card.get("detail", "")
    assert not FORBIDDEN.search(text), FORBIDDEN.search(text)
    assert_readable(card)


def assert_readable(card: dict) -> None:
    """Issue 12: a summary composed to fit (never cut), names instead of FHIR ids in every sentence and label,
    and a link for every evidence key the card cites."""
    summary = card["summary"]
    assert len(summary) < 140 and "…" not in summary and not summary.endswith(("(", ",", ";")), summary
    words = [summary, card.get("detail", ""), *(link["label"] for link in card.get("links", []))]
    for suggestion in card.get("suggestions", []):
        words += [suggestion["label"], *(a["description"] for a in suggestion.get("actions", []))]
    for text in words:
        assert not FHIR_ID_IN_TEXT.search(text), f"a FHIR id in words: {FHIR_ID_IN_TEXT.search(text).group(0)!r}"
    linked = {link["label"].split(":")[0] for link in card.get("links", [])}
    cited = set(EVIDENCE_KEY.findall(summary + card.get("detail", "")))
    assert cited <= linked, f"cited without a link: {sorted(cited - linked)}"
