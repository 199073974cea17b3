"""Review FHIR JSON files: a Bundle (any type) is reviewed with `plugin.review`, exactly as the live service does.

A Bundle about one patient is passed to `plugin.review([bundle])` unchanged. A Bundle about several
patients is split into one collection Bundle per patient (its own entries plus the entries about no
patient, such as Medications, with their `fullUrl`s kept so `urn:uuid:` references still resolve).
Loose resource files (one resource per file) are pooled across files and grouped the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from cds_hooks.batch.model import BadRecord
from plugin import Review, ReviewOptions, review
from plugin.fhir_read import Resolver, flatten, local_reference, subject_of
from plugin.knowledge import Knowledge


@dataclass(frozen=True)
class JsonTask:
    index: int
    path: str
    label: str
    size: int
    scanned: bool = False    # found in a folder (not named): a JSON document that is not FHIR is skipped


@dataclass
class JsonResult:
    index: int
    label: str
    reviews: list[Review] = field(default_factory=list)
    loose: list[dict] = field(default_factory=list)      # a loose resource, pooled by the caller
    bad: list[BadRecord] = field(default_factory=list)
    resources: int = 0
    skipped: str | None = None                             # why a non-FHIR file was skipped


def _patient_key(resource: dict, resolver: Resolver) -> str | None:
    if resource.get("resourceType") == "Patient":
        return local_reference(resource)
    subject = subject_of(resource, resolver)
    return subject if subject and subject.startswith("Patient/") else None


def review_resources(items: list[object], *, now: datetime, options: ReviewOptions,
                     knowledge: Knowledge) -> list[Review]:
    """One Review per patient the resources (loose and/or Bundles) are about."""
    resolver = Resolver()
    flat = list(flatten(items))
    for resource, url in flat:
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            resolver.add(resource, url)
    keys = [_patient_key(r, resolver) if isinstance(r, dict) else None for r, _ in flat]
    patients = list(dict.fromkeys(k for k in keys if k))
    if len(patients) <= 1:
        context = {"patientId": patients[0].split("/", 1)[1]} if patients else None
        return [review(items, now=now, options=options, knowledge=knowledge, context=context)]
    reviews = []
    for patient in patients:
        entries = [{"fullUrl": url, "resource": r} if url else {"resource": r}
                   for (r, url), key in zip(flat, keys, strict=True) if key in (None, patient)]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        reviews.append(review([bundle], now=now, options=options, knowledge=knowledge,
                              context={"patientId": patient.split("/", 1)[1]}))
    return reviews


def count_resources(item: dict) -> int:
    return sum(1 for r, _ in flatten([item]) if isinstance(r, dict) and isinstance(r.get("resourceType"), str))


def skipped_not_fhir(label: str) -> str:
    """The run warning for a JSON document found in a folder that is not FHIR (every driver says the same)."""
    return f"{label}: not a FHIR resource (no resourceType), skipped"


def process_json_file(task: JsonTask, *, now: datetime, options: ReviewOptions, knowledge: Knowledge) -> JsonResult:
    result = JsonResult(task.index, task.label)
    try:
        data = orjson.loads(Path(task.path).read_bytes())
    except OSError as exc:
        result.bad.append(BadRecord(task.label, None, f"could not be read ({type(exc).__name__})"))
        return result
    except orjson.JSONDecodeError as exc:
        result.bad.append(BadRecord(task.label, None, f"invalid JSON ({str(exc)[:120]})"))
        return result
    if not isinstance(data, dict):
        result.bad.append(BadRecord(task.label, None, f"not a JSON object ({type(data).__name__})"))
        return result
    if not isinstance(data.get("resourceType"), str):
        if task.scanned:    # e.g. package.json or an earlier report in the same folder
            result.skipped = skipped_not_fhir(task.label)
        else:
            result.bad.append(BadRecord(task.label, None, "no resourceType: not a FHIR resource"))
        return result
    result.resources = count_resources(data)
    if data["resourceType"] != "Bundle":
        result.loose.append(data)
        return result
    try:
        result.reviews = review_resources([data], now=now, options=options, knowledge=knowledge)
    except Exception as exc:  # noqa: BLE001 - one file must never stop the review
        result.bad.append(BadRecord(task.label, None, f"could not be reviewed ({type(exc).__name__})"))
    return result
