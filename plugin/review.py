"""The one entry point: FHIR resources (+ hook context) -> Review. Pure and deterministic."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from plugin.fhir_read import (
    MEDICATION_TYPES,
    Resolver,
    condition_fact,
    flatten,
    lab_facts,
    local_reference,
    medication_fact,
    subject_of,
)
from plugin.knowledge import Knowledge, default_knowledge
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

    resolver = Resolver()
    items: list[tuple[dict, str | None]] = []
    unreadable = 0
    for resource, url in flatten(resources):
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            resolver.add(resource, url)
            items.append((resource, url))
        elif resource is not None:
            unreadable += 1
    if unreadable:
        warnings.append(f"{unreadable} entries were not FHIR resources (no resourceType) and were skipped")

    patient_id = context.get("patientId") if isinstance(context, dict) else None
    patients = [r for r, _ in items if r["resourceType"] == "Patient"]
    if isinstance(patient_id, str) and patient_id:
        record.patient = f"Patient/{patient_id}"
    elif patients:
        record.patient = local_reference(patients[0])
    for patient in patients:
        if local_reference(patient) == record.patient or record.patient is None:
            record.deceased = deceased_of(patient)

    drafts = _draft_orders(context, hook, resolver, warnings)
    draft_refs = {local_reference(d) for d in drafts}
    others: Counter[str] = Counter()
    relevant: list[dict] = []
    for resource, _ in items:
        if resource["resourceType"] == "Patient" or (draft_refs and local_reference(resource) in draft_refs):
            continue
        subject = subject_of(resource, resolver)
        if record.patient and subject and subject != record.patient:
            others[resource["resourceType"]] += 1
            continue
        facts = facts_of(resource, knowledge, resolver, warnings, current_only=True)
        if facts:
            relevant.append(resource)
        for fact in facts:
            record.add(fact)
    if others:
        warnings.append("ignored resources about another patient: "
                        + ", ".join(f"{n} {t}" for t, n in sorted(others.items())))

    for draft in drafts:
        if draft.get("resourceType") in MEDICATION_TYPES:
            fact = medication_fact(draft, knowledge, resolver, ordered=True, warnings=warnings)
            if fact:
                record.add(fact)
                relevant.append(draft)

    result = evaluate(record, now=now, knowledge=knowledge, options=options)
    if options.validate:
        # Only the resources a finding cites: they are what a clinician is shown (and validating every
        # resource with full models would be most of a hook call's time).
        cited = {ref for f in result.findings for ref in f.references}
        for resource in relevant:
            ref = local_reference(resource)
            if ref in cited and (problem := validation_problem(resource)):
                result.warnings.append(f"{ref} is not valid FHIR R4 ({problem}); read anyway")
    return result
