"""The one entry point: FHIR resources (+ hook context) -> Review. Pure and deterministic."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from functools import partial

from plugin.fhir_read import (
    MEDICATION_TYPES,
    Resolver,
    condition_fact,
    flatten,
    lab_fact,
    lab_facts,
    lab_parts,
    local_reference,
    medication_fact,
    subject_of,
)
from plugin.knowledge import Knowledge, default_knowledge
from plugin.latest_labs import LatestLabs
from plugin.patient import identity_of
from plugin.record import ConditionFact, LabFact, MedicationFact, PatientRecord
from plugin.rules import Review, ReviewOptions, evaluate
from plugin.validation import validation_problem

Fact = MedicationFact | ConditionFact | LabFact


def facts_of(resource: dict, knowledge: Knowledge, resolver: Resolver, warnings: list[str], *,
             current_only: bool = False) -> list[Fact]:
    """The facts one resource contributes (usually none: most resources are irrelevant).

    `current_only`: leave out medications and conditions whose status never counts (for compact records).
    """
    rtype = resource.get("resourceType")
    if rtype in MEDICATION_TYPES:
        fact = medication_fact(resource, knowledge, resolver, warnings=warnings, current_only=current_only)
        return [fact] if fact else []
    if rtype == "Condition":
        fact = condition_fact(resource, knowledge, current_only=current_only)
        return [fact] if fact else []
    if rtype == "Observation":
        return lab_facts(resource, knowledge)
    return []


def deceased_of(patient: dict) -> str | None:
    if isinstance(patient.get("deceasedDateTime"), str):
        return patient["deceasedDateTime"][:10]
    return "yes" if patient.get("deceasedBoolean") is True else None


def _draft_orders(context: dict | None, hook: str | None, resolver: Resolver, warnings: list[str]) -> list[dict]:
    """The draft orders a hook speaks about: the selections (order-select) or all drafts (order-sign)."""
    if hook not in ("order-select", "order-sign") or not isinstance(context, dict):
        return []
    drafts = []
    for resource, url in flatten([context.get("draftOrders")]):
        if isinstance(resource, dict):
            drafts.append(resource)
            resolver.add(resource, url)  # a draft may reference a Medication in the same Bundle
    if hook == "order-sign":
        return drafts
    selections = [s for s in context.get("selections") or () if isinstance(s, str)]
    chosen = [r for r in drafts if local_reference(r) in selections]
    missing = set(selections) - {local_reference(r) for r in chosen}
    if missing:
        warnings.append(f"selections not found in draftOrders: {', '.join(sorted(missing))}")
    return chosen


def _offer_labs(labs: LatestLabs, index: int, resource: dict, knowledge: Knowledge) -> None:
    """An Observation's results, by code and date only: read in full later if they are among the latest."""
    parts = lab_parts(resource, knowledge)
    if parts is None:
        return
    ref, date, wanted, status = parts
    for part, code in wanted:
        lab = knowledge.labs.get(code)
        labs.offer(date, (lab.contributor, lab.analyte) if lab else None,
                   partial(lab_fact, ref, code, part, date, knowledge, status), (index, resource), status)


def _waits_for_references(resource: dict, rtype: str, resolver: Resolver) -> bool:
    """True when the resource's subject or Medication reference does not resolve yet (it may, later in the walk)."""
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            if resolver.reference_of(ref["reference"]) is None:
                return True
            break  # the first of them is the subject (subject_of)
    if rtype in MEDICATION_TYPES:
        target = resource.get("medicationReference")
        target = target.get("reference") if isinstance(target, dict) else None
        return isinstance(target, str) and not target.startswith("#") and resolver.get(target) is None
    return False


def review(resources: Iterable[object], *, now: datetime, hook: str | None = None, context: dict | None = None,
           options: ReviewOptions | None = None, knowledge: Knowledge | None = None) -> Review:
    """Review one patient's FHIR data for contributors to nocturnal leg cramps.

    `resources`: loose resources and/or Bundles (any type). `now` must be timezone-aware.
    For order-select / order-sign, `context["draftOrders"]` is read and the selected (or all)
    draft MedicationRequests become findings with `ordered=True`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    knowledge = knowledge or default_knowledge()
    options = options or ReviewOptions()
    record = PatientRecord(now=now)
    warnings = record.warnings

    patient_id = context.get("patientId") if isinstance(context, dict) else None
    if isinstance(patient_id, str) and patient_id:
        record.patient = f"Patient/{patient_id}"
    resolver = Resolver()
    drafts = _draft_orders(context, hook, resolver, warnings)
    draft_refs = {local_reference(d) for d in drafts}
    others: Counter[str] = Counter()
    relevant: dict[int, dict] = {}  # walk position -> a resource that gave facts
    labs = LatestLabs(now)

    def read(index: int, resource: dict) -> None:
        """Subject check, then the resource's facts into the record (lab results: offered, read if they matter)."""
        subject = subject_of(resource, resolver)
        if record.patient and subject and subject != record.patient:
            others[resource["resourceType"]] += 1
            return
        if resource["resourceType"] == "Observation":
            _offer_labs(labs, index, resource, knowledge)
            return
        facts = facts_of(resource, knowledge, resolver, warnings, current_only=True)
        if facts:
            relevant[index] = resource
        for fact in facts:
            record.add(fact)

    # One walk: each resource is classified, checked and read as it comes. A resource whose patient or
    # Medication reference can only resolve against entries still to come (a Bundle listing its Patient or
    # Medications after the orders) starts a queue that is read, in order, once the walk has seen everything.
    patients: list[dict] = []
    waiting: list[tuple[int, dict]] = []
    unreadable = 0
    for index, (resource, url) in enumerate(flatten(resources)):
        if not (isinstance(resource, dict) and isinstance(rtype := resource.get("resourceType"), str)):
            unreadable += resource is not None
            continue
        resolver.add(resource, url)
        if rtype == "Patient":
            patients.append(resource)
            if record.patient is None:
                record.patient = local_reference(resource)
        elif draft_refs and local_reference(resource) in draft_refs:
            continue
        elif waiting or record.patient is None or _waits_for_references(resource, rtype, resolver):
            waiting.append((index, resource))
        else:
            read(index, resource)
    for index, resource in waiting:
        read(index, resource)
    for index, resource in labs.add_to(record):
        relevant[index] = resource
    if unreadable:
        warnings.append(f"{unreadable} entries were not FHIR resources (no resourceType) and were skipped")
    for patient in patients:
        if local_reference(patient) == record.patient or record.patient is None:
            record.deceased = deceased_of(patient)
            record.identity = identity_of(patient)
    if others:
        warnings.append("ignored resources about another patient: "
                        + ", ".join(f"{n} {t}" for t, n in sorted(others.items())))

    cited_candidates = [relevant[i] for i in sorted(relevant)]
    for draft in drafts:
        if draft.get("resourceType") in MEDICATION_TYPES:
            fact = medication_fact(draft, knowledge, resolver, ordered=True, warnings=warnings)
            if fact:
                record.add(fact)
                cited_candidates.append(draft)

    result = evaluate(record, now=now, knowledge=knowledge, options=options)
    if options.validate:
        # Only the resources a finding cites: they are what a clinician is shown (and validating every
        # resource with full models would be most of a hook call's time).
        cited = {ref for f in result.findings for ref in f.references}
        for resource in cited_candidates:
            ref = local_reference(resource)
            if ref in cited and (problem := validation_problem(resource)):
                result.warnings.append(f"{ref} is not valid FHIR R4 ({problem}); read anyway")
    return result
