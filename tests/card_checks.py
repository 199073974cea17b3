"""Checks a CDS Hooks 2.0 card against the checklist (C1-C6, G2) and clinical-reference §3."""
from __future__ import annotations

import re
import uuid

FORBIDDEN = re.compile(
    r"\b(stop(ping)?|discontinue|switch to|increase the dose|decrease the dose|statin myopathy|caused by|"
    r"recommend quinine|mg/day|take \d)", re.IGNORECASE)


def assert_no_empty_values(value, path="card"):
    """G2: no null or empty strings, lists or objects anywhere."""
    assert value is not None and value != "" and value != [] and value != {}, f"empty value at {path}"
    if isinstance(value, dict):
        for k, v in value.items():
            assert_no_empty_values(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_no_empty_values(v, f"{path}[{i}]")


def assert_valid_card(card: dict) -> None:
    assert_no_empty_values(card)
    uuid.UUID(card["uuid"])                                               # C1 uuid
    assert isinstance(card["summary"], str) and len(card["summary"]) < 140  # C1 summary under 140
    assert card["indicator"] in ("info", "warning")                       # C1; never critical (card policy)
    assert isinstance(card["detail"], str)                                 # C1 GFM detail
    assert card["source"]["label"]                                         # C2 source label
    assert card["source"]["url"].startswith("https://")
    assert {"system", "code"} <= set(card["source"]["topic"])
    for reason in card["overrideReasons"]:                                 # C1/C6 codings with display
        assert reason["system"] and reason["code"] and reason["display"]
    if "suggestions" in card:                                              # C1 selectionBehavior when suggestions
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for s in card["suggestions"]:                                      # C3
            assert s["label"]
            uuid.UUID(s["uuid"])
            for a in s["actions"]:                                         # C4
                assert a["type"] in ("create", "update", "delete") and a["description"]
                if a["type"] == "create":
                    assert a["resource"]["resourceType"]
                if a["type"] == "delete":
                    assert re.fullmatch(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]+", a["resourceId"]) and "resource" not in a
    for link in card.get("links", ()):                                    # C5
        assert link["label"] and link["url"].startswith("https://") and link["type"] in ("absolute", "smart")
    assert not FORBIDDEN.search(card["summary"] + card["detail"]), FORBIDDEN.search(card["summary"] + card["detail"])
