"""The batch report as ONE self-contained HTML page a pharmacist works from: a ranked worklist that sorts,
filters and searches in the page, a per-patient detail with the live card, charts and the denominators.

Built with Jinja2 (templates/report.html.j2, autoescaped: every value from the data is escaped) and streamed
(`Template.generate`), one worklist row at a time. Inline CSS, SVG and script; no network, no external asset.
The card in the detail view is `plugin.build_card`'s own text (Markdown rendered by markdown-it-py with raw
HTML off), so it says exactly what the live service would say at chart opening.
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib.resources import files
from typing import TextIO

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from cds_hooks.batch.model import BatchResult
from cds_hooks.batch.reports.options import ReportOptions
from cds_hooks.batch.reports.ranking import TIER_NAMES, best_grade
from cds_hooks.batch.reports.summary import as_of_text, counts
from cds_hooks.batch.reports.worklist import Entry, Panel, Worklist
from plugin import build_card, default_knowledge
from plugin.knowledge import GRADES, Knowledge

MAX_LISTED_ISSUES = 500   # run-level warnings / bad records shown; the JSON report has them all
MAX_ROW_WARNINGS = 3      # a row shows its first warnings; the detail view has them all
TRIGGER = "leg-cramps-documented"
CHART_WIDTH = 380
# the page's stylesheet (templates/report.css), also used by other self-contained pages (the feedback report)
CSS = files("cds_hooks.batch.reports").joinpath("templates", "report.css").read_text(encoding="utf-8")


@cache
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("cds_hooks.batch.reports", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["markdown"] = _markdown
    return env


@cache
def _markdown_renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False})


def _markdown(text: str) -> Markup:
    """Card Markdown -> HTML; raw HTML in the text is shown as text, never run (markdown-it `html: False`)."""
    return Markup(_markdown_renderer().render(text))   # markdown-it escapes text; raw HTML is off


def _bars(rows: list[tuple[str, int, int]], denominator: int) -> list[dict]:
    """Bar chart rows: label, count, part (e.g. with cramps documented), widths and share of `denominator`."""
    peak = max((n for _, n, _ in rows), default=0) or 1
    return [{"label": label, "n": n, "part": part, "width": max(1, round(CHART_WIDTH * n / peak)) if n else 0,
             "part_width": round(CHART_WIDTH * part / peak),
             "share": f"{100 * n / denominator:.0f}%" if denominator else "",
             "part_share": f"{100 * part / n:.0f}%" if n else ""} for label, n, part in rows]


def _charts(panel: Panel, knowledge: Knowledge) -> dict:
    order = sorted(panel.contributors, key=knowledge.order)
    rows = [(knowledge.contributors[cid].label, panel.contributors[cid], panel.with_cramps[cid]) for cid in order]
    bands = [(band, panel.age_bands[band], 0) for band in
             ("<18", "18-44", "45-64", "65-74", "75-84", "85+", "unknown") if panel.age_bands[band]]
    return {"contributors": _bars(rows, panel.reviewed), "age_bands": _bars(bands, panel.reviewed)}


def _card(entry: Entry, options: ReportOptions, knowledge: Knowledge) -> dict | None:
    """The card the live service shows at chart opening (patient-view), with its own words."""
    card = build_card(entry.row.review, hook="patient-view", trigger=options.card_trigger, knowledge=knowledge,
                      new_uuid=lambda: "")
    return card.body if card else None


def _row(entry: Entry, options: ReportOptions, knowledge: Knowledge) -> dict:
    rv = entry.row.review
    contributors = [f for f in rv.findings if f.contributor != TRIGGER]
    cramps = next((f for f in rv.findings if f.contributor == TRIGGER), None)
    grade = best_grade(rv)
    identity = entry.identity
    patient_text = " ".join(str(v) for v in (identity.to_dict().values() if identity else ()) if v is not None)
    search = " ".join([entry.row.patient, patient_text, entry.priority.reason, cramps.reason if cramps else "",
                       *(f"{f.label} {f.contributor} {f.reason}" for f in contributors), *rv.warnings])
    return {
        "entry": entry, "review": rv, "contributors": contributors, "cramps": cramps, "grade": grade,
        "grade_order": GRADES.index(grade) if grade else len(GRADES),
        "contributor_ids": " ".join(f.contributor for f in contributors),
        "row_warnings": rv.warnings[:MAX_ROW_WARNINGS], "more_warnings": max(0, len(rv.warnings) - MAX_ROW_WARNINGS),
        "sort_patient": (identity.name or identity.identifier or "") if identity else entry.row.patient,
        "search": " ".join(search.lower().split()), "card": _card(entry, options, knowledge),
    }


def _rows(worklist: Worklist, options: ReportOptions, knowledge: Knowledge) -> Iterator[dict]:
    for entry in worklist:
        if entry.rank is None:
            return   # the worklist's patients come first; the rest are not on it
        yield _row(entry, options, knowledge)


def _run_warnings(result: BatchResult) -> list[str]:
    return list(result.warnings[:MAX_LISTED_ISSUES])


def write_html(result: BatchResult, out: TextIO, knowledge: Knowledge | None = None,
               options: ReportOptions | None = None) -> None:
    knowledge = knowledge or default_knowledge()
    options = options or ReportOptions()
    filters = []
    if result.filters.get("onlyDocumentedCramps"):
        filters.append("only patients with leg cramps documented")
    if result.filters.get("contributors"):
        filters.append("patients with any of: " + ", ".join(result.filters["contributors"]))
    with Worklist(result, knowledge, options) as worklist:
        panel = worklist.panel
        template = _environment().get_template("report.html.j2")
        context = {
            "as_of": as_of_text(result), "knowledge_version": result.knowledge_version, "counts": counts(result),
            "panel": panel, "filters": filters, "charts": _charts(panel, knowledge), "tier_names": TIER_NAMES,
            "grades": GRADES, "options": options,
            "contributor_choices": [(cid, knowledge.contributors[cid].label)
                                    for cid in sorted(panel.contributors, key=knowledge.order)],
            "rows": _rows(worklist, options, knowledge),
            "warnings": _run_warnings(result), "n_warnings": len(result.warnings),
            "bad_records": [str(b) for b in result.bad_records[:MAX_LISTED_ISSUES]],
            "n_bad": len(result.bad_records),
            "export_errors": [str(b) for b in result.export_errors[:MAX_LISTED_ISSUES]],
            "n_export_errors": len(result.export_errors),
            "non_fhir": result.non_fhir_files, "max_issues": MAX_LISTED_ISSUES,
        }
        out.writelines(template.generate(**context))

