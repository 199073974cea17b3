"""Checks a card against CDS Hooks before it leaves the service (checklist C1-C6, G2), like cds-hooks-go's
card builder: a card that breaks the spec is a loud server error, never a silently malformed card."""
from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

INDICATORS = ("info", "warning", "critical")
SELECTION_BEHAVIORS = ("at-most-one", "any")
ACTION_TYPES = ("create", "update", "delete")
LINK_TYPES = ("absolute", "smart")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def empty_values(value: Any, path: str = "$") -> list[str]:
    """Paths of null or empty ("", [], {}) values anywhere inside ``value`` (G2)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if _empty(v):
                found.append(f"{path}.{k}")
            else:
                found += empty_values(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if _empty(v):
                found.append(f"{path}[{i}]")
            else:
                found += empty_values(v, f"{path}[{i}]")
    return found


def _absolute(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _coding(c: Any, where: str, *, display: bool) -> list[str]:
    if not isinstance(c, dict):
        return [f"{where}: not a Coding object"]
    need = ("code", "system", "display") if display else ("code", "system")
    return [f"{where}.{n}: required string" for n in need if not isinstance(c.get(n), str) or not c.get(n)]


def card_problems(card: Any) -> list[str]:
    """Every way ``card`` breaks checklist C1-C6 or G2 (an empty list when it is fine)."""
    if not isinstance(card, dict):
        return ["card: not an object"]
    problems = empty_values(card, "card")
    if "uuid" in card and not _is_uuid(card["uuid"]):
        problems.append("card.uuid: not a UUID")
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) >= 140:
        problems.append("card.summary: required, under 140 characters")
    if "detail" in card and not isinstance(card["detail"], str):
        problems.append("card.detail: must be a Markdown string")
    if card.get("indicator") not in INDICATORS:
        problems.append("card.indicator: must be info, warning or critical")
    source = card.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("label"), str) or not source.get("label"):
        problems.append("card.source.label: required")
    else:
        for name in ("url", "icon"):
            if name in source and not _absolute(source[name]):
                problems.append(f"card.source.{name}: must be an absolute URL")
        if "topic" in source:
            problems += _coding(source["topic"], "card.source.topic", display=False)
    suggestions = card.get("suggestions")
    if suggestions is not None:
        if card.get("selectionBehavior") not in SELECTION_BEHAVIORS:
            problems.append("card.selectionBehavior: required with suggestions (at-most-one or any)")
        if not isinstance(suggestions, list):
            problems.append("card.suggestions: must be an array")
            suggestions = []
        recommended = 0
        for i, s in enumerate(suggestions):
            where = f"card.suggestions[{i}]"
            if not isinstance(s, dict) or not isinstance(s.get("label"), str) or not s.get("label"):
                problems.append(f"{where}.label: required")
                continue
            if "uuid" in s and not _is_uuid(s["uuid"]):
                problems.append(f"{where}.uuid: not a UUID")
            recommended += s.get("isRecommended") is True
            for j, a in enumerate(s.get("actions") or ()):
                problems += _action_problems(a, f"{where}.actions[{j}]")
        if recommended > 1 and card.get("selectionBehavior") == "at-most-one":
            problems.append("card.suggestions: more than one isRecommended under at-most-one")
    elif "selectionBehavior" in card and card["selectionBehavior"] not in SELECTION_BEHAVIORS:
        problems.append("card.selectionBehavior: must be at-most-one or any")
    for i, link in enumerate(card.get("links") or ()):
        where = f"card.links[{i}]"
        if not isinstance(link, dict):
            problems.append(f"{where}: not an object")
            continue
        if not isinstance(link.get("label"), str) or not link.get("label"):
            problems.append(f"{where}.label: required")
        if not _absolute(link.get("url")):
            problems.append(f"{where}.url: required absolute URL")
        if link.get("type") not in LINK_TYPES:
            problems.append(f"{where}.type: must be absolute or smart")
        if "appContext" in link and link.get("type") != "smart":
            problems.append(f"{where}.appContext: only on smart links")
    for i, c in enumerate(card.get("overrideReasons") or ()):
        problems += _coding(c, f"card.overrideReasons[{i}]", display=True)
    return problems


def _action_problems(action: Any, where: str) -> list[str]:
    if not isinstance(action, dict):
        return [f"{where}: not an object"]
    problems = []
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        problems.append(f"{where}.type: must be create, update or delete")
    if not isinstance(action.get("description"), str) or not action.get("description"):
        problems.append(f"{where}.description: required")
    if kind in ("create", "update") and not (
        isinstance(action.get("resource"), dict) and action["resource"].get("resourceType")
    ):
        problems.append(f"{where}.resource: a FHIR resource is required for {kind}")
    if kind == "delete" and not isinstance(action.get("resourceId"), str):
        problems.append(f"{where}.resourceId: expected for delete (Type/id)")
    return problems
