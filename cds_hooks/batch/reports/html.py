"""The batch report as ONE self-contained HTML page for people: inline CSS and SVG, no script, no external asset.

Every value from the data is escaped with `html.escape`. Patients appear by reference only (no names).
"""
from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from html import escape
from typing import TextIO

from cds_hooks.batch.model import BatchResult, PatientResult
from cds_hooks.batch.reports.summary import as_of_text, counts, totals
from plugin import default_knowledge
from plugin.knowledge import Knowledge

MAX_LISTED_ISSUES = 500   # warnings / bad records shown; the JSON report has them all
TRIGGER = "leg-cramps-documented"

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1d2327;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:0}
.counts{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0;padding:0;list-style:none}
.counts li{border:1px solid #ccd;border-radius:6px;padding:.5rem .9rem;min-width:9rem}
.counts b{display:block;font-size:1.5rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.n{text-align:right}
.grade,.date{white-space:nowrap}.ref{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}
.issues{font-family:ui-monospace,monospace;font-size:.85em;white-space:pre-wrap}
.note{color:#555;font-size:.9em}
svg text{font:12px system-ui,sans-serif;fill:#1d2327}
@media print{body{margin:0}}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _bar_chart(rows: list[tuple[str, int]], total: int) -> str:
    """Horizontal bars: one per contributor, length proportional to its patient count."""
    if not rows:
        return '<p class="note">No contributor found.</p>'
    label_w, bar_w, row_h = 260, 380, 22
    peak = max(n for _, n in rows) or 1
    height = row_h * len(rows) + 6
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" height="{height}" '
           f'role="img" aria-label="Patients per contributor">')
    parts = [svg]
    for i, (label, n) in enumerate(rows):
        y = i * row_h + 3
        w = max(1, round(bar_w * n / peak))
        share = f" ({100 * n / total:.0f}%)" if total else ""
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w}" height="{row_h - 6}" fill="#3b6ea5">'
                     f'<title>{_e(label)}: {n}</title></rect>'
                     f'<text x="{label_w + w + 6}" y="{y + 15}">{n}{_e(share)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _patient_rows(p: PatientResult) -> list[str]:
    """The table rows of one patient with cramps documented (at least one)."""
    listed = [f for f in p.review.findings if f.contributor != TRIGGER]
    cramps = next((f for f in p.review.findings if f.contributor == TRIGGER), None)
    head = f'<span class="ref">{_e(p.patient or "(no patient reference)")}</span>'
    if cramps:
        head += f'<br><span class="note">cramps: {_e(cramps.reason)}</span>'
    if not listed:
        return [f'<tr><td>{head}</td><td colspan="4" class="note">no contributor found</td></tr>']
    rows = []
    for i, f in enumerate(listed):
        first = f'<td rowspan="{len(listed)}">{head}</td>' if i == 0 else ""
        rows.append(f"<tr>{first}<td>{_e(f.label)}</td><td class=\"grade\">{_e(f.grade)} "
                    f"({_e(', '.join(f.sources))})</td><td>{_e(f.reason)}</td><td class=\"date\">{_e(f.date or '')}</td></tr>")
    return rows


def _other_row(p: PatientResult) -> str:
    return (f'<tr><td class="ref">{_e(p.patient)}</td><td>{_e(", ".join(f.label for f in p.review.contributors))}</td>'
            "</tr>")


def _table_start(headers: tuple[str, ...]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"


_TABLE_END = "\n</tbody>\n</table>"
_NONE = '<p class="note">None.</p>'


def _write_rows(out: TextIO, rows: Iterable[str]) -> None:
    """Rows joined by newlines, written one by one."""
    first = True
    for row in rows:
        if not first:
            out.write("\n")
        out.write(row)
        first = False


def _issues(lines: list[str], total: int | None = None) -> str:
    """The first MAX_LISTED_ISSUES of `total` lines (default: all of `lines`; `lines` holds at least the first)."""
    total = len(lines) if total is None else total
    if not total:
        return _NONE
    shown = "\n".join(_e(line) for line in lines[:MAX_LISTED_ISSUES])
    more = (f'<p class="note">and {total - MAX_LISTED_ISSUES} more (see the JSON report)</p>'
            if total > MAX_LISTED_ISSUES else "")
    return f'<div class="issues">{shown}</div>{more}'


def to_html(result: BatchResult, knowledge: Knowledge | None = None) -> str:
    out = io.StringIO()
    write_html(result, out, knowledge)
    return out.getvalue()


def write_html(result: BatchResult, out: TextIO, knowledge: Knowledge | None = None) -> None:
    """The page, written with one pass over the listed patients: the first table goes straight out, the
    second is held in a temporary file (in memory while small) until the first is done."""
    knowledge = knowledge or default_knowledge()
    summary = result.get_summary()
    c = counts(result)
    as_of = as_of_text(result)
    tot = totals(result, knowledge)
    label = {cid: knowledge.contributors[cid].label for cid in tot}
    chart_rows = [(label[cid], n) for cid, n in tot.items() if cid != TRIGGER]
    table_rows = "".join(
        f"<tr><td>{_e(label[cid])}</td><td class=\"ref\">{_e(cid)}</td><td>{_e(knowledge.contributors[cid].grade)}"
        f"</td><td class=\"n\">{n}</td></tr>" for cid, n in tot.items())
    filters = []
    if result.filters.get("onlyDocumentedCramps"):
        filters.append("only patients with leg cramps documented")
    if result.filters.get("contributors"):
        filters.append("patients with any of: " + ", ".join(result.filters["contributors"]))
    filter_note = (f'<p class="note">Listed: {c["listed"]} of {c["patients"]} patients ({_e("; ".join(filters))}).'
                   "</p>" if filters else "")
    out.write(f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Leg-cramp medication review, as of {_e(as_of)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>Leg-cramp medication review</h1>
<p class="sub">As of {_e(as_of)} &middot; knowledge {_e(result.knowledge_version)} &middot; advisory: the clinician
judges whether each contributor is relevant.</p>
<ul class="counts">
<li><b>{c["patients"]}</b>patients reviewed</li>
<li><b>{c["documentedCramps"]}</b>with leg cramps documented</li>
<li><b>{c["withContributor"]}</b>with any contributor</li>
<li><b>{c["deceased"]}</b>deceased (not reviewed)</li>
<li><b>{c["badRecords"]}</b>bad records</li>
</ul>
{filter_note}
<h2>Patients per contributor</h2>
{_bar_chart(chart_rows, c["listed"])}
<table>
<thead><tr><th>Contributor</th><th>Id</th><th>Evidence grade</th><th>Patients</th></tr></thead>
<tbody>{table_rows}</tbody>
</table>
<h2>Patients with leg cramps documented ({summary.listed_with_cramps})</h2>
""")
    warnings = list(result.warnings)
    with tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8", newline="") as others:
        if summary.listed_with_cramps:
            out.write(_table_start(("Patient", "Contributor", "Grade (sources)", "Why", "Date")))
        first_cramps = first_other = True
        for p in result.patients:
            if len(warnings) < MAX_LISTED_ISSUES:
                warnings.extend(f"{p.patient}: {w}" for w in p.review.warnings)
            if p.review.documented_cramps:
                if not first_cramps:
                    out.write("\n")
                _write_rows(out, _patient_rows(p))
                first_cramps = False
            elif p.review.contributors:
                if not first_other:
                    others.write("\n")
                others.write(_other_row(p))
                first_other = False
        out.write(_TABLE_END if summary.listed_with_cramps else _NONE)
        out.write(f"\n<h2>Other patients with contributors, cramps not documented ({summary.listed_others})</h2>\n")
        if summary.listed_others:
            out.write(_table_start(("Patient", "Contributors")))
            others.seek(0)
            while block := others.read(1 << 16):
                out.write(block)
            out.write(_TABLE_END)
        else:
            out.write(_NONE)
    n_warnings = len(result.warnings) + summary.listed_warnings
    bad = [str(b) for b in result.bad_records]
    out.write(f"""
<h2>Data-quality warnings ({n_warnings})</h2>
{_issues(warnings, n_warnings)}
<h2>Bad records ({len(bad)})</h2>
{_issues(bad)}
<p class="note">Generated by cramp-cds batch review. Patients are named by FHIR reference only.</p>
</body>
</html>
""")
