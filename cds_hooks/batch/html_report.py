"""The batch report as ONE self-contained HTML page for people: inline CSS and SVG, no script, no external asset.

Every value from the data is escaped with `html.escape`. Patients appear by reference only (no names).
"""
from __future__ import annotations

from html import escape

from cds_hooks.batch.model import BatchResult, PatientResult
from cds_hooks.batch.report import as_of_text, counts, totals
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


def _patient_rows(patients: list[PatientResult], knowledge: Knowledge) -> str:
    rows = []
    for p in patients:
        listed = [f for f in p.review.findings if f.contributor != TRIGGER]
        cramps = next((f for f in p.review.findings if f.contributor == TRIGGER), None)
        head = f'<span class="ref">{_e(p.patient or "(no patient reference)")}</span>'
        if cramps:
            head += f'<br><span class="note">cramps: {_e(cramps.reason)}</span>'
        if not listed:
            rows.append(f'<tr><td>{head}</td><td colspan="4" class="note">no contributor found</td></tr>')
            continue
        for i, f in enumerate(listed):
            first = f'<td rowspan="{len(listed)}">{head}</td>' if i == 0 else ""
            rows.append(f"<tr>{first}<td>{_e(f.label)}</td><td class=\"grade\">{_e(f.grade)} "
                        f"({_e(', '.join(f.sources))})</td><td>{_e(f.reason)}</td><td class=\"date\">{_e(f.date or '')}</td></tr>")
    return "\n".join(rows)


def _table(headers: tuple[str, ...], rows: str) -> str:
    if not rows:
        return '<p class="note">None.</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _issues(lines: list[str]) -> str:
    if not lines:
        return '<p class="note">None.</p>'
    shown = "\n".join(_e(line) for line in lines[:MAX_LISTED_ISSUES])
    more = (f'<p class="note">and {len(lines) - MAX_LISTED_ISSUES} more (see the JSON report)</p>'
            if len(lines) > MAX_LISTED_ISSUES else "")
    return f'<div class="issues">{shown}</div>{more}'


def to_html(result: BatchResult, knowledge: Knowledge | None = None) -> str:
    knowledge = knowledge or default_knowledge()
    c = counts(result)
    as_of = as_of_text(result)
    tot = totals(result, knowledge)
    listed = result.patients
    label = {cid: knowledge.contributors[cid].label for cid in tot}
    chart_rows = [(label[cid], n) for cid, n in tot.items() if cid != TRIGGER]
    table_rows = "".join(
        f"<tr><td>{_e(label[cid])}</td><td class=\"ref\">{_e(cid)}</td><td>{_e(knowledge.contributors[cid].grade)}"
        f"</td><td class=\"n\">{n}</td></tr>" for cid, n in tot.items())
    with_cramps = [p for p in listed if p.review.documented_cramps]
    others = [p for p in listed if not p.review.documented_cramps and p.review.contributors]
    filters = []
    if result.filters.get("onlyDocumentedCramps"):
        filters.append("only patients with leg cramps documented")
    if result.filters.get("contributors"):
        filters.append("patients with any of: " + ", ".join(result.filters["contributors"]))
    filter_note = (f'<p class="note">Listed: {c["listed"]} of {c["patients"]} patients ({_e("; ".join(filters))}).'
                   "</p>" if filters else "")
    warnings = list(result.warnings) + [f"{p.patient}: {w}" for p in listed for w in p.review.warnings]
    bad = [str(b) for b in result.bad_records]
    other_rows = "\n".join(
        f'<tr><td class="ref">{_e(p.patient)}</td><td>{_e(", ".join(f.label for f in p.review.contributors))}</td>'
        "</tr>" for p in others)
    return f"""<!DOCTYPE html>
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
<h2>Patients with leg cramps documented ({len(with_cramps)})</h2>
{_table(("Patient", "Contributor", "Grade (sources)", "Why", "Date"), _patient_rows(with_cramps, knowledge))}
<h2>Other patients with contributors, cramps not documented ({len(others)})</h2>
{_table(("Patient", "Contributors"), other_rows)}
<h2>Data-quality warnings ({len(warnings)})</h2>
{_issues(warnings)}
<h2>Bad records ({len(bad)})</h2>
{_issues(bad)}
<p class="note">Generated by cramp-cds batch review. Patients are named by FHIR reference only.</p>
</body>
</html>
"""
