"""Prefetch resolution as a short pipeline (after HAPI FHIR's CdsPrefetchSvc), checklist P6/P7/R2:

1. **classify** each template key by what the client sent (:class:`Source`) and choose a :class:`Strategy`;
2. **validate** what was sent (not FHIR → 400 naming the key);
3. **fetch** what is missing from ``fhirServer`` with the call's bearer token, all keys at once, within one
   hard deadline (the call stops waiting when it passes, whatever the FHIR server is doing);
4. **fail**: required data that cannot be had → 412 naming the key and why (never the token); a supplementary
   key that cannot be had is left out and named in :attr:`Slot.lacking`, for the card to say so.

| what arrived for a key | strategy |
|---|---|
| key missing | FETCH from fhirServer |
| ``null`` | NO_DATA: the client had none; not re-fetched |
| an OperationOutcome | FETCH: the client's own fetch failed (P6) |
| a Bundle with a ``next`` link | COMPLETE: page on from fhirServer (USE for a count-bounded template) |
| a resource / complete Bundle | USE as sent |
"""
from __future__ import annotations

import enum
import re
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from cds_hooks.fhir.client import Budget, ClientOptions, FetchFailure, FhirClient, next_link
from cds_hooks.service.errors import InvalidPrefetch, Issue, PayloadTooLarge, PreconditionFailed
from cds_hooks.service.validation import HookRequest
from plugin.fhir_read import missing_medication_references


class Strategy(enum.Enum):
    USE = "use"            # take the prefetched value as sent
    NO_DATA = "no-data"    # null: the client had no data; never re-fetched
    FETCH = "fetch"        # missing, or an OperationOutcome: get it from fhirServer
    COMPLETE = "complete"  # a Bundle page with a next link: page on from fhirServer


@dataclass
class Slot:
    key: str
    template: str
    strategy: Strategy
    sent: Any = None
    pages: list[dict] = field(default_factory=list)  # the resolved data (resources/Bundles)
    why: str = ""  # why the client's value was not used as is
    lacking: str = ""  # a supplementary key reviewed without: why it could not be had

    @property
    def is_read(self) -> bool:
        return "?" not in self.template

    @property
    def count_bounded(self) -> bool:
        """A newest-first search with a ``_count`` (2.0 templates): its first page is the whole answer."""
        return "_count=" in self.template and "_sort=" in self.template

    @property
    def resource_type(self) -> str:
        return re.split(r"[/?]", self.template, maxsplit=1)[0]


# --- templates (P2/P3) ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_TODAY = re.compile(r"^today\(\)(?:\s*([+-])\s*(\d+)\s*days?)?$")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class UnresolvedToken(Exception):
    pass


def resolve_template(template: str, context: dict, now: datetime) -> str:
    """Fill ``{{context.X}}`` (root-level primitives), ``{{today() ± N days}}`` and ``{{user*Id}}`` tokens."""

    def token(match: re.Match) -> str:
        expr = match.group(1)
        if expr.startswith("context."):
            value = context.get(expr[len("context."):])
            if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
                raise UnresolvedToken(expr)
            return quote(str(value), safe="-._~")
        if m := _TODAY.match(expr):
            day = now.date()
            if m.group(1):
                delta = timedelta(days=int(m.group(2)))
                day = day - delta if m.group(1) == "-" else day + delta
            return day.isoformat()
        if expr in _USER_TOKENS:
            user = context.get("userId")
            if isinstance(user, str) and user.startswith(_USER_TOKENS[expr] + "/"):
                return quote(user.split("/", 1)[1], safe="-._~")
            raise UnresolvedToken(expr)
        if expr == "user" and isinstance(context.get("userId"), str):  # legacy 1.0 token
            return quote(context["userId"], safe="/-._~")
        raise UnresolvedToken(expr)

    return _TOKEN.sub(token, template)


# --- 1. classify ---------------------------------------------------------------------------------------------

def classify(prefetch: dict, templates: dict[str, str]) -> list[Slot]:
    slots = []
    for key, template in templates.items():
        if key not in prefetch:
            slots.append(Slot(key, template, Strategy.FETCH, why="it was not prefetched"))
            continue
        value = prefetch[key]
        if value is None:
            slots.append(Slot(key, template, Strategy.NO_DATA))
        elif isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
            slots.append(Slot(key, template, Strategy.FETCH, sent=value,
                              why="the client's prefetch failed (an OperationOutcome was sent)"))
        elif isinstance(value, dict) and next_link(value) and not Slot(key, template, Strategy.USE).count_bounded:
            slots.append(Slot(key, template, Strategy.COMPLETE, sent=value, pages=[value],
                              why="the prefetched Bundle is paginated"))
        else:
            slots.append(Slot(key, template, Strategy.USE, sent=value, pages=[value]))
    return slots


# --- 2. validate ---------------------------------------------------------------------------------------------

_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")


def _other_patient(resource: dict, patient_id: str) -> bool:
    """True when the resource plainly belongs to another patient (a literal Patient/x reference)."""
    for name in ("subject", "patient"):
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            text = ref["reference"]
            if text[8:] == patient_id and text.startswith("Patient/"):
                continue  # the usual case, without a regular expression
            m = _PATIENT_REF.search(text)
            if m and m.group(1) != patient_id:
                return True
    return False


def _bundle_problem(bundle: dict, patient_id: str) -> str | None:
    """One walk over a prefetched Bundle's entries: each must hold a FHIR resource, none of another patient."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        return "is a Bundle whose entries are not FHIR resource objects"
    for entry in entries:
        if not isinstance(entry, dict):
            return "is a Bundle whose entries are not FHIR resource objects"
        resource = entry.get("resource")
        if resource is None:
            continue
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if not (isinstance(rtype, str) and rtype.strip()):
            return "is a Bundle whose entries are not FHIR resource objects"
        if _other_patient(resource, patient_id):
            return "holds a resource of another patient"
    return None


def fhir_problem(slot: Slot, value: Any, patient_id: str) -> str | None:
    """Why ``value`` is not usable FHIR for this key, or None."""
    if not isinstance(value, dict):
        return "is not a FHIR resource object"
    rtype = value.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return "has no resourceType"
    if rtype == "Bundle":
        return _bundle_problem(value, patient_id)
    if slot.is_read:
        if rtype != slot.resource_type:
            return f"is a {rtype}, expected a {slot.resource_type}"
        if rtype == "Patient" and value.get("id") not in (None, patient_id):
            return "is another patient than context.patientId"
    elif rtype != slot.resource_type:
        return f"is a {rtype}, expected a Bundle of {slot.resource_type}"
    if _other_patient(value, patient_id):
        return "is a resource of another patient"
    return None


def count_resources(value: dict) -> int:
    if value.get("resourceType") == "Bundle":
        return len(value.get("entry") or ())
    return 1


# --- the pipeline ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrefetchPolicy:
    connect_timeout: float
    read_timeout: float
    budget_seconds: float
    max_pages: int
    max_resources: int
    max_response_bytes: int = 64 * 1024 * 1024


def resolve_prefetch(request: HookRequest, templates: dict[str, str], policy: PrefetchPolicy,
                     now: datetime, optional: frozenset[str] = frozenset()) -> list[Slot]:
    """Return one resolved :class:`Slot` per template key, or raise 400 / 412 / 413.

    Keys in ``optional`` are fetched like the others, but when they cannot be had the review goes on
    without them instead of a 412.
    """
    slots = classify(request.prefetch, templates)
    patient_id = request.patient_id

    issues = []
    for slot in slots:
        if slot.strategy in (Strategy.USE, Strategy.COMPLETE):
            problem = fhir_problem(slot, slot.sent, patient_id)
            if problem:
                issues.append(Issue(f"prefetch {slot.key!r} {problem}", expression=f"prefetch.{slot.key}"))
    if issues:
        raise InvalidPrefetch(issues[0].diagnostics, issues=issues)
    _check_count(slots, policy.max_resources)

    needed = [s for s in slots if s.strategy in (Strategy.FETCH, Strategy.COMPLETE)]
    if not request.fhir_server:
        missing = [(s, f"{s.why} and no fhirServer was given to fetch it from") for s in needed]
        _settle(missing, optional)
        return slots

    client = FhirClient(
        request.fhir_server,
        request.fhir_authorization.access_token if request.fhir_authorization else None,
        ClientOptions(policy.connect_timeout, policy.read_timeout, policy.max_pages,
                      max_response_bytes=policy.max_response_bytes, max_resources=policy.max_resources),
        Budget(policy.budget_seconds),
    )
    client.resources.total = _count(slots)  # the resource limit is for the whole call, prefetch included
    if needed:
        _fetch_missing(needed, client, request, now, optional)
    medications = _referenced_medications(slots, client)
    return [*slots, medications] if medications.pages else slots


def _fetch_missing(needed: list[Slot], client: FhirClient, request: HookRequest, now: datetime,
                   optional: frozenset[str]) -> None:
    """Fetch every needed key at once; stop waiting at the call's deadline (late answers are dropped)."""
    patient_id = request.patient_id

    def run(slot: Slot) -> tuple[list[dict], str | None]:
        try:
            if slot.strategy is Strategy.COMPLETE:
                pages = [slot.sent, *client.complete(slot.sent)]
            else:
                relative = resolve_template(slot.template, request.context, now)
                pages = client.fetch(relative, follow_next=not slot.count_bounded)
            for page in pages:
                problem = fhir_problem(slot, page, patient_id)
                if problem:
                    return [], f"the FHIR server's answer {problem}"
        except UnresolvedToken as exc:
            return [], f"its template token {{{{{exc}}}}} cannot be resolved from the context"
        except FetchFailure as exc:
            return [], exc.reason
        return pages, None

    # No `with`: leaving it would wait for a hung FHIR server. Threads still reading stop at their next read.
    pool = ThreadPoolExecutor(max_workers=len(needed), thread_name_prefix="prefetch")
    futures = [pool.submit(run, slot) for slot in needed]
    done, _ = wait(futures, timeout=max(client.budget.remaining(), 0.0))
    pool.shutdown(wait=False, cancel_futures=True)
    late = ([], f"the FHIR time budget of {client.budget.seconds:g} s was exhausted")
    failures = []
    for slot, future in zip(needed, futures, strict=True):
        pages, reason = future.result() if future in done else late
        if reason:
            failures.append((slot, f"{slot.why}; {reason}"))
        else:
            slot.pages = pages
    _settle(failures, optional)


def _settle(failures: list[tuple[Slot, str]], optional: frozenset[str]) -> None:
    """A supplementary key that cannot be had is reviewed without (and named); any other is a 412."""
    required = []
    for slot, why in failures:
        if slot.key in optional:
            slot.pages, slot.lacking = [], why
        else:
            required.append((slot, why))
    if required:
        raise _unavailable(required)


MAX_MEDICATION_READS = 50


def _referenced_medications(slots: list[Slot], client: FhirClient) -> Slot:
    """Read the Medications that orders reference but prefetch did not carry (EHRs often code the drug there).

    A template cannot ask for them in CDS Hooks 2.0 (`_include` is outside the P5 query subset), so they are
    read one by one within the call's budget. A failed read is not fatal: the engine reports the dangling
    reference as a warning and the rest of the review stands.
    """
    slot = Slot("medication-references", "Medication/{id}", Strategy.FETCH)
    for ref in missing_medication_references(resources_of(slots))[:MAX_MEDICATION_READS]:
        try:
            slot.pages += [p for p in client.fetch(ref) if p.get("resourceType") == "Medication"]
        except FetchFailure:
            continue
    return slot


def _count(slots: list[Slot]) -> int:
    return sum(count_resources(p) for s in slots for p in s.pages if isinstance(p, dict))


def _check_count(slots: list[Slot], limit: int) -> None:
    total = _count(slots)
    if total > limit:
        raise PayloadTooLarge(f"the prefetch holds {total} resources, more than the limit of {limit}",
                              expression="prefetch")


def _unavailable(failures: list[tuple[Slot, str]]) -> PreconditionFailed:
    issues = [Issue(f"prefetch {slot.key!r} could not be obtained: {why}", "incomplete", f"prefetch.{slot.key}")
              for slot, why in failures]
    return PreconditionFailed(issues[0].diagnostics, issues=issues)


def lacking(slots: list[Slot]) -> list[str]:
    """The supplementary keys this review went without."""
    return [s.key for s in slots if s.lacking]


def resources_of(slots: list[Slot]) -> list[dict]:
    """Every prefetched resource/Bundle page, in template order, for the engine (it reads Bundles itself)."""
    return [page for slot in slots for page in slot.pages if isinstance(page, dict)]
