"""The batch report as JSON (for tools), CSV (one row per finding) or HTML (for people; see `html`).

Every format is deterministic for the same inputs and options: no run time or host in it.

The reports are written patient by patient (`write_json`, `write_csv`, `write_html` into a text stream;
`write_report` to a file or stdout): the counts and totals come from the result's `Summary`, so the patient
list is never held whole in memory. `render` / `to_json` / `to_csv` return the same text as a string.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from cds_hooks.batch.errors import OutputError
from cds_hooks.batch.model import BatchResult
from cds_hooks.batch.reports.fhir_worklist import write_fhir_worklist
from cds_hooks.batch.reports.html import write_html
from cds_hooks.batch.reports.options import ReportOptions
from cds_hooks.batch.reports.summary import as_of_text, counts, entry_dict, totals, worklist_dict
from cds_hooks.batch.reports.worklist import Worklist
from plugin import default_knowledge
from plugin.knowledge import Knowledge

FORMATS = ("json", "csv", "html")
CSV_COLUMNS = ("rank", "priority", "priority_reason", "patient", "contributor", "category", "grade", "sources",
               "date", "references", "reason", "documented_cramps", "possibly_stale")
CSV_CHANGE = ("since_previous",)                                    # with --since-report
CSV_IDENTITY = ("name", "identifier", "birth_date", "age", "sex")    # with --identifiers
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


_PATIENTS_SLOT = '\n  "patients": []'


def write_json(result: BatchResult, out: TextIO, knowledge: Knowledge | None = None,
               options: ReportOptions | None = None) -> None:
    """The text of `json.dumps(doc, indent=2, ensure_ascii=False)`, written one patient at a time, in rank order."""
    knowledge = knowledge or default_knowledge()
    with Worklist(result, knowledge, options) as worklist:
        _write_json(result, worklist, out, knowledge)


def _write_json(result: BatchResult, worklist: Worklist, out: TextIO, knowledge: Knowledge) -> None:
    doc = {
        "asOf": as_of_text(result),
        "knowledgeVersion": result.knowledge_version,
        "filters": result.filters,
        "counts": counts(result),
        "worklist": worklist_dict(worklist),
        "patients": [],
        "badRecords": [b.to_dict() for b in result.bad_records],
        "exportErrors": [b.to_dict() for b in result.export_errors],
        "nonFhirFiles": [f.to_dict() for f in result.non_fhir_files],
        "warnings": list(result.warnings),
        "totals": totals(result, knowledge),
    }
    # JSON strings hold no raw newline: the top-level key is found exactly once
    head, tail = json.dumps(doc, indent=2, ensure_ascii=False).split(_PATIENTS_SLOT, 1)
    out.write(head)
    separator = '\n  "patients": [\n    '
    for entry in worklist:
        out.write(separator)
        out.write(json.dumps(entry_dict(entry), indent=2, ensure_ascii=False).replace("\n", "\n    "))
        separator = ",\n    "
    out.write(_PATIENTS_SLOT if separator.startswith("\n") else "\n  ]")
    out.write(tail)
    out.write("\n")


def to_json(result: BatchResult, knowledge: Knowledge | None = None, options: ReportOptions | None = None) -> str:
    return _to_string(write_json, result, knowledge, options)


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (hostile text in FHIR data)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(result: BatchResult, out: TextIO, knowledge: Knowledge | None = None,
              options: ReportOptions | None = None) -> None:
    """One row per finding, patients in rank order; identity columns only with --identifiers."""
    options = options or ReportOptions()
    writer = csv.writer(out, lineterminator="\n")
    change = CSV_CHANGE if options.previous is not None else ()
    identity = CSV_IDENTITY if options.identifiers else ()
    writer.writerow((*CSV_COLUMNS[:3], *change, *identity, *CSV_COLUMNS[3:]))
    with Worklist(result, knowledge or default_knowledge(), options) as worklist:
        for entry in worklist:
            p = entry.row
            cramps = "true" if p.review.documented_cramps else "false"
            head = [entry.rank or "", entry.priority.name, entry.priority.reason]
            if change:
                head.append(entry.change or "")
            if identity and entry.identity is not None:
                head += list(entry.identity.to_dict().values())
            writer.writerows([_cell(v) for v in (
                *head, p.patient, f.contributor, f.category, f.grade, " ".join(f.sources), f.date or "",
                " ".join(f.references), f.reason, cramps, "true" if f.possibly_stale else "false")]
                for f in p.review.findings)


def to_csv(result: BatchResult, knowledge: Knowledge | None = None, options: ReportOptions | None = None) -> str:
    return _to_string(write_csv, result, knowledge, options)


Writer = Callable[[BatchResult, TextIO, Knowledge | None, ReportOptions | None], None]


FHIR_WORKLIST = "fhir-worklist"   # not a --format: an extra output (--fhir-worklist PATH)


def writer_for(fmt: str) -> Writer:
    if fmt == "json":
        return write_json
    if fmt == "csv":
        return write_csv
    if fmt == "html":
        return write_html
    if fmt == FHIR_WORKLIST:
        return write_fhir_worklist
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _to_string(writer: Writer, result: BatchResult, knowledge: Knowledge | None,
               options: ReportOptions | None = None) -> str:
    out = io.StringIO()
    writer(result, out, knowledge, options)
    return out.getvalue()


def render(result: BatchResult, fmt: str, knowledge: Knowledge | None = None,
           options: ReportOptions | None = None) -> str:
    """The whole report as one string (for small runs and tests; `write_report` streams it to a file)."""
    return _to_string(writer_for(fmt), result, knowledge, options)


def format_for(out: str | None, fmt: str | None) -> str:
    """The format asked for, else guessed from the output file's suffix, else json."""
    if fmt:
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".") if out else ""
    return {"htm": "html"}.get(suffix, suffix) if suffix in (*FORMATS, "htm") else "json"


@contextmanager
def _output(out: str | None) -> Iterator[TextIO]:
    """A text stream to `out`, replaced atomically (a temporary file renamed into place) once complete; or
    stdout when `out` is None/'-'."""
    if not out or out == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"could not write the report to {out}: {exc.strerror or type(exc).__name__}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="", buffering=1 << 20) as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"could not write the report to {out}: {exc.strerror or type(exc).__name__}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(result: BatchResult, fmt: str, out: str | None, knowledge: Knowledge | None = None,
                 options: ReportOptions | None = None) -> None:
    """Write the report in `fmt` to `out` (see `write`), patient by patient: memory does not grow with the run."""
    writer = writer_for(fmt)
    with _output(out) as fh:
        writer(result, fh, knowledge, options)


def write(text: str, out: str | None) -> None:
    """Write to `out` atomically (a temporary file renamed into place), or to stdout when `out` is None/'-'."""
    with _output(out) as fh:
        fh.write(text)
