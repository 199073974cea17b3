"""The batch report as JSON (for tools), CSV (one row per finding) or HTML (for people; see html_report).

Every format is deterministic for the same inputs and options: no run time or host in it.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from cds_hooks.batch.errors import OutputError
from cds_hooks.batch.model import BatchResult, PatientResult
from plugin import Finding, default_knowledge
from plugin.knowledge import Knowledge

FORMATS = ("json", "csv", "html")
CSV_COLUMNS = ("patient", "contributor", "category", "grade", "sources", "date", "references", "reason",
               "documented_cramps")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def finding_dict(f: Finding) -> dict:
    return {"contributor": f.contributor, "label": f.label, "category": f.category, "grade": f.grade,
            "sources": list(f.sources), "reason": f.reason, "references": list(f.references), "date": f.date}


def patient_dict(p: PatientResult) -> dict:
    rv = p.review
    return {"patient": rv.patient, "source": p.source, "deceased": rv.deceased,
            "documentedCramps": rv.documented_cramps, "findings": [finding_dict(f) for f in rv.findings],
            "warnings": list(rv.warnings)}


def totals(result: BatchResult, knowledge: Knowledge) -> dict[str, int]:
    """Patients (of those listed) with each contributor, in the knowledge's order (most important first)."""
    counts = Counter(cid for p in result.patients for cid in dict.fromkeys(p.contributor_ids))
    return {cid: counts[cid] for cid in sorted(counts, key=knowledge.order)}


def counts(result: BatchResult) -> dict[str, int]:
    reviewed = result.reviewed
    return {
        "patients": len(reviewed),
        "documentedCramps": sum(p.review.documented_cramps for p in reviewed),
        "withContributor": sum(bool(p.review.contributors) for p in reviewed),
        "deceased": sum(p.review.deceased for p in reviewed),
        "listed": len(result.patients),
        "badRecords": len(result.bad_records),
    }


def as_of_text(result: BatchResult) -> str:
    return result.as_of.date().isoformat()


def to_json(result: BatchResult, knowledge: Knowledge | None = None) -> str:
    knowledge = knowledge or default_knowledge()
    doc = {
        "asOf": as_of_text(result),
        "knowledgeVersion": result.knowledge_version,
        "filters": result.filters,
        "counts": counts(result),
        "patients": [patient_dict(p) for p in result.patients],
        "badRecords": [b.to_dict() for b in result.bad_records],
        "warnings": list(result.warnings),
        "totals": totals(result, knowledge),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (hostile text in FHIR data)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(result: BatchResult, knowledge: Knowledge | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in result.patients:
        cramps = "true" if p.review.documented_cramps else "false"
        for f in p.review.findings:
            writer.writerow([_cell(v) for v in (
                p.patient, f.contributor, f.category, f.grade, " ".join(f.sources), f.date or "",
                " ".join(f.references), f.reason, cramps)])
    return out.getvalue()


def render(result: BatchResult, fmt: str, knowledge: Knowledge | None = None) -> str:
    if fmt == "json":
        return to_json(result, knowledge)
    if fmt == "csv":
        return to_csv(result, knowledge)
    if fmt == "html":
        from cds_hooks.batch.html_report import to_html

        return to_html(result, knowledge)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def format_for(out: str | None, fmt: str | None) -> str:
    """The format asked for, else guessed from the output file's suffix, else json."""
    if fmt:
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".") if out else ""
    return {"htm": "html"}.get(suffix, suffix) if suffix in (*FORMATS, "htm") else "json"


def write(text: str, out: str | None) -> None:
    """Write to `out` atomically (a temporary file renamed into place), or to stdout when `out` is None/'-'."""
    if not out or out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"could not write the report to {out}: {exc.strerror or type(exc).__name__}") from None
