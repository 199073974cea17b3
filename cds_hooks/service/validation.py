"""Validation of hook requests (checklist §3, §10) and feedback (F2). Errors name the field, never a value
that could be a token."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cds_hooks.service.errors import BadRequest, Issue

_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
USER_TYPES = {
    "patient-view": ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"),
    "order-select": ("Practitioner", "PractitionerRole"),
    "order-sign": ("Practitioner", "PractitionerRole"),
}


@dataclass(frozen=True)
class FhirAuthorization:
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r}, subject={self.subject!r})"


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    context: dict
    fhir_server: str | None
    fhir_authorization: FhirAuthorization | None
    prefetch: dict  # key -> value as sent (absent keys are absent)

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not 0-65535
    except ValueError:  # e.g. an unclosed IPv6 bracket ("http://[::1")
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def check_bundle(value: Any, where: str) -> list[Issue]:
    """A Bundle object whose entries are objects with object resources (``type`` is tolerated missing)."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return [Issue(f"{where} must be a FHIR Bundle object", expression=where)]
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        return [Issue(f"{where}.entry must be an array", expression=f"{where}.entry")]
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            return [Issue(f"{where}.entry[{i}] must be an object", expression=f"{where}.entry[{i}]")]
        resource = entry.get("resource")
        if resource is not None and not (isinstance(resource, dict) and _nonempty_str(resource.get("resourceType"))):
            return [Issue(f"{where}.entry[{i}].resource must be a FHIR resource object",
                          expression=f"{where}.entry[{i}].resource")]
    return []


def parse_hook_request(body: Any, hook: str) -> HookRequest:
    """Validate a service call body for ``hook``; raise BadRequest listing every problem found."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if "hook" not in body:
        raise BadRequest("hook is required", expression="hook")
    if not isinstance(body["hook"], str):  # never str() a client's value: a deeply nested one raises RecursionError
        raise BadRequest("hook must be a string", expression="hook")
    if body["hook"] != hook:
        raise BadRequest(
            f"this service handles the {hook!r} hook, not {body['hook'][:40]!r}", expression="hook"
        )
    issues: list[Issue] = []
    hook_instance = body.get("hookInstance")
    if not _nonempty_str(hook_instance):
        issues.append(Issue("hookInstance is required (a UUID string)", expression="hookInstance"))
    else:
        try:
            uuid.UUID(hook_instance)
        except ValueError:
            issues.append(Issue("hookInstance must be a UUID", expression="hookInstance"))

    context = body.get("context")
    if not isinstance(context, dict):
        issues.append(Issue("context is required (an object)", expression="context"))
        context = {}
    else:
        issues += _check_context(context, hook)

    fhir_server = body.get("fhirServer")
    if fhir_server is not None and not is_http_url(fhir_server):
        issues.append(Issue("fhirServer must be an absolute http(s) URL", expression="fhirServer"))

    auth = None
    raw_auth = body.get("fhirAuthorization")
    if raw_auth is not None:
        auth_issues, auth = _check_fhir_authorization(raw_auth)
        issues += auth_issues
        if fhir_server is None:
            issues.append(Issue("fhirServer is required when fhirAuthorization is given", expression="fhirServer"))

    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    elif not isinstance(prefetch, dict):
        issues.append(Issue("prefetch must be an object", expression="prefetch"))
        prefetch = {}

    extension = body.get("extension")
    if extension is not None and not isinstance(extension, dict):
        issues.append(Issue("extension must be an object", expression="extension"))

    if issues:
        raise BadRequest(issues[0].diagnostics, issues=issues)
    return HookRequest(
        hook=hook,
        hook_instance=hook_instance,
        context=context,
        fhir_server=fhir_server.rstrip("/") if fhir_server else None,
        fhir_authorization=auth,
        prefetch=prefetch,
    )


def _check_context(context: dict, hook: str) -> list[Issue]:
    issues: list[Issue] = []
    patient_id = context.get("patientId")
    if not _nonempty_str(patient_id):
        issues.append(Issue("context.patientId is required", expression="context.patientId"))
    elif "/" in patient_id or len(patient_id) > 64:
        issues.append(Issue("context.patientId must be a FHIR id (no 'Patient/' prefix)",
                            expression="context.patientId"))
    user_id = context.get("userId")
    if not _nonempty_str(user_id):
        issues.append(Issue("context.userId is required", expression="context.userId"))
    elif not _REFERENCE.match(user_id) or user_id.split("/")[0] not in USER_TYPES[hook]:
        issues.append(Issue(f"context.userId must be a reference like Practitioner/123 "
                            f"({', '.join(USER_TYPES[hook])})", expression="context.userId"))
    encounter_id = context.get("encounterId")
    if encounter_id is not None and not _nonempty_str(encounter_id):
        issues.append(Issue("context.encounterId must be a string", expression="context.encounterId"))
    if hook == "order-select":
        selections = context.get("selections")
        if not isinstance(selections, list) or not selections:
            issues.append(Issue("context.selections is required (a non-empty array of \"Type/id\")",
                                expression="context.selections"))
        else:
            for i, sel in enumerate(selections):
                if not isinstance(sel, str) or not _REFERENCE.match(sel):
                    issues.append(Issue(f"context.selections[{i}] must be a \"Type/id\" string",
                                        expression=f"context.selections[{i}]"))
    if hook in ("order-select", "order-sign"):
        if "draftOrders" not in context:
            issues.append(Issue("context.draftOrders is required (a FHIR Bundle)", expression="context.draftOrders"))
        else:
            issues += check_bundle(context["draftOrders"], "context.draftOrders")
    return issues


def _check_fhir_authorization(raw: Any) -> tuple[list[Issue], FhirAuthorization | None]:
    where = "fhirAuthorization"
    if not isinstance(raw, dict):
        return [Issue(f"{where} must be an object", expression=where)], None
    issues = []
    for name in ("access_token", "scope", "subject"):
        if not _nonempty_str(raw.get(name)):
            issues.append(Issue(f"{where}.{name} is required (a string)", expression=f"{where}.{name}"))
    token_type = raw.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":  # case-insensitive (RFC 6749 §5.1)
        issues.append(Issue(f"{where}.token_type must be \"Bearer\"", expression=f"{where}.token_type"))
    expires_in = raw.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 0:
        issues.append(Issue(f"{where}.expires_in is required (a non-negative integer of seconds)",
                            expression=f"{where}.expires_in"))
    patient = raw.get("patient")
    if patient is not None and not _nonempty_str(patient):
        issues.append(Issue(f"{where}.patient must be a string", expression=f"{where}.patient"))
    if issues:
        return issues, None
    return [], FhirAuthorization(raw["access_token"], "Bearer", expires_in, raw["scope"], raw["subject"], patient)


# --- feedback (F2) -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedbackEntry:
    card: str
    outcome: str
    outcome_timestamp: datetime
    accepted_suggestions: tuple[str, ...] = ()
    reason_system: str | None = None
    reason_code: str | None = None
    has_comment: bool = False


def parse_rfc3339(value: Any) -> datetime | None:
    """An RFC 3339 §5.6 date-time with a time zone offset, in UTC; or None (also when UTC is out of range)."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    text = value.replace("t", "T").replace(" ", "T")
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return None


def parse_feedback(body: Any, max_entries: int) -> list[FeedbackEntry]:
    """Validate a whole feedback POST; raise BadRequest naming each bad entry index and field."""
    from cds_hooks.service.errors import PayloadTooLarge

    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise BadRequest("the body must be an object with a \"feedback\" array", expression="feedback")
    raw_entries = body["feedback"]
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(
            f"too many feedback entries: {len(raw_entries)} > the limit of {max_entries} per request",
            expression="feedback",
        )
    issues: list[Issue] = []
    entries: list[FeedbackEntry] = []
    for i, raw in enumerate(raw_entries):
        entry, problems = _feedback_entry(raw, f"feedback[{i}]")
        issues += problems
        if entry:
            entries.append(entry)
    if issues:
        raise BadRequest(issues[0].diagnostics, issues=issues)
    return entries


def _feedback_entry(raw: Any, where: str) -> tuple[FeedbackEntry | None, list[Issue]]:
    def bad(field: str, text: str) -> Issue:
        return Issue(f"{where}.{field}: {text}" if field else f"{where}: {text}",
                     expression=f"{where}.{field}" if field else where)

    if not isinstance(raw, dict):
        return None, [bad("", "must be an object")]
    issues: list[Issue] = []
    card = raw.get("card")
    if not _nonempty_str(card) or len(card) > 200:
        issues.append(bad("card", "required: the uuid of the card"))
    outcome = raw.get("outcome")
    if outcome not in ("accepted", "overridden"):
        issues.append(bad("outcome", "must be \"accepted\" or \"overridden\""))
    timestamp = parse_rfc3339(raw.get("outcomeTimestamp"))
    if timestamp is None:
        issues.append(bad("outcomeTimestamp", "required: an RFC 3339 date-time with a time zone"))
    accepted: list[str] = []
    suggestions = raw.get("acceptedSuggestions")
    if suggestions is not None or outcome == "accepted":
        if not isinstance(suggestions, list) or not suggestions:
            issues.append(bad("acceptedSuggestions", "required when accepted: a non-empty array of {\"id\": ...}"))
        else:
            for j, s in enumerate(suggestions):
                if not isinstance(s, dict) or not _nonempty_str(s.get("id")):
                    issues.append(bad(f"acceptedSuggestions[{j}].id", "required: the uuid of the suggestion"))
                else:
                    accepted.append(s["id"])
    reason_system = reason_code = None
    has_comment = False
    override = raw.get("overrideReason")
    if override is not None:
        if not isinstance(override, dict):
            issues.append(bad("overrideReason", "must be an object"))
        else:
            reason = override.get("reason")
            if reason is not None:
                if not isinstance(reason, dict):
                    issues.append(bad("overrideReason.reason", "must be a Coding object"))
                else:
                    for name in ("code", "system"):
                        if not _nonempty_str(reason.get(name)):
                            issues.append(bad(f"overrideReason.reason.{name}", "required (a string)"))
                    reason_system, reason_code = reason.get("system"), reason.get("code")
            comment = override.get("userComment")
            if comment is not None and not isinstance(comment, str):
                issues.append(bad("overrideReason.userComment", "must be a string"))
            has_comment = bool(comment)
    if issues:
        return None, issues
    return FeedbackEntry(card, outcome, timestamp, tuple(accepted), reason_system, reason_code, has_comment), []
