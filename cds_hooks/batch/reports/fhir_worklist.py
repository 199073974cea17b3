"""The worklist as FHIR R4 a site can load into its EHR work queue (`--fhir-worklist PATH`).

One `transaction` Bundle: a `List` of the worklist's patients in rank order (mode `working`, ordered by
priority; each entry flagged with its priority), then one `Task` per patient (status `requested`, intent
`proposal`: advisory, for a pharmacist to review; reason and contributors in the Task). Each Task is POSTed
with `ifNoneExist` on its identifier (as-of date + patient), so loading the same file twice creates nothing
new. Every resource is validated with fhir.resources (R4B models, R4-compatible for these types). Patient
references are the ones the input used: load the file into the server the data came from.

Written streaming: the List first (its entries are small), then the Tasks one at a time.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TextIO
from uuid import NAMESPACE_URL, uuid5

from fhir.resources.R4B.list import List
from fhir.resources.R4B.task import Task

from cds_hooks.batch.model import BatchResult
from cds_hooks.batch.reports.options import ReportOptions
from cds_hooks.batch.reports.summary import as_of_text
from cds_hooks.batch.reports.worklist import Entry, Worklist
from plugin import default_knowledge
from plugin.knowledge import Knowledge

TASK_CODE_SYSTEM = "https://cramp-cds.org/fhir/CodeSystem/worklist-task"
TASK_ID_SYSTEM = "https://cramp-cds.org/fhir/sid/worklist-task"
LIST_ORDER = "http://terminology.hl7.org/CodeSystem/list-order"   # FHIR R4 list-order code system
REVIEW_CODE = {"coding": [{"system": TASK_CODE_SYSTEM, "code": "leg-cramp-medication-review",
                           "display": "Leg-cramp medication review"}], "text": "Leg-cramp medication review"}
URGENT_TIERS = (1, 2)   # quinine current, an electrolyte low: "urgent"; the rest "routine"


def _full_url(*parts: str) -> str:
    return f"urn:uuid:{uuid5(NAMESPACE_URL, 'cramp-cds:' + ':'.join(parts))}"


def _task(entry: Entry, as_of: str, knowledge_version: str) -> dict:
    row, prio = entry.row, entry.priority
    key = f"{as_of}:{row.patient}"
    notes = [f"{f.label}: {f.reason}; evidence {f.grade} ({', '.join(f.sources)})"
             for f in row.review.contributors]
    task = {
        "resourceType": "Task",
        "identifier": [{"system": TASK_ID_SYSTEM, "value": key}],
        "status": "requested", "intent": "proposal",
        "priority": "urgent" if prio.tier in URGENT_TIERS else "routine",
        "code": REVIEW_CODE,
        "description": f"Rank {entry.rank}: {prio.name}. {prio.reason}"[:1000],
        "for": {"reference": row.patient},
        "authoredOn": as_of,
        "reasonCode": {"text": prio.reason},
        "note": [{"text": n} for n in notes] or [{"text": "Leg cramps documented; no contributor found"}],
        "meta": {"tag": [{"system": TASK_CODE_SYSTEM, "code": "knowledge-" + knowledge_version}]},
    }
    return Task.model_validate(task).model_dump(mode="json", exclude_none=True)


def _list(entries: list[tuple[str, int | None, str]], as_of: str) -> dict:
    """`entries`: (patient reference, rank, priority name) in rank order."""
    doc = {
        "resourceType": "List", "status": "current", "mode": "working",
        "title": f"Leg-cramp medication review worklist as of {as_of}",
        "code": REVIEW_CODE, "date": as_of,
        "orderedBy": {"coding": [{"system": LIST_ORDER, "code": "priority", "display": "Sorted by Priority"}]},
        "entry": [{"item": {"reference": patient}, "flag": {"text": f"{rank}. {name}"}}
                  for patient, rank, name in entries],
    }
    if not entries:
        doc.pop("entry")
        doc["emptyReason"] = {"text": "No patient on the worklist"}
    return List.model_validate(doc).model_dump(mode="json", exclude_none=True)


def _on_worklist(worklist: Worklist) -> Iterator[Entry]:
    for entry in worklist:
        if entry.rank is None:
            return
        if entry.row.patient:
            yield entry


def write_fhir_worklist(result: BatchResult, out: TextIO, knowledge: Knowledge | None = None,
                        options: ReportOptions | None = None) -> None:
    as_of = as_of_text(result)
    # identity never goes into the FHIR output: the server already knows the patient by reference
    options = ReportOptions(patient_link=None, previous=options.previous if options else None)
    with Worklist(result, knowledge or default_knowledge(), options) as worklist:
        entries = [(e.row.patient, e.rank, e.priority.name) for e in _on_worklist(worklist)]
        out.write('{\n  "resourceType": "Bundle",\n  "type": "transaction",\n  "entry": [')
        head = {"fullUrl": _full_url(as_of, "list"), "resource": _list(entries, as_of),
                "request": {"method": "POST", "url": "List"}}
        out.write("\n    " + json.dumps(head, ensure_ascii=False))
        del entries
        for entry in _on_worklist(worklist):
            task = _task(entry, as_of, result.knowledge_version)
            ident = task["identifier"][0]
            item = {"fullUrl": _full_url(as_of, entry.row.patient, entry.row.source), "resource": task,
                    "request": {"method": "POST", "url": "Task",
                                "ifNoneExist": f"identifier={ident['system']}|{ident['value']}"}}
            out.write(",\n    " + json.dumps(item, ensure_ascii=False))
        out.write("\n  ]\n}\n")
