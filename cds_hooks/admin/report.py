"""The feedback report as CSV (one row per week and contributor, plus an ``all`` row per contributor) or as one
self-contained HTML page (inline CSS and SVG charts, no script). Counts only: no patient keys, no card uuids."""
from __future__ import annotations

import csv
import io
from html import escape

from cds_hooks.batch.reports.html import CSS
from cds_hooks.storage.analytics import FeedbackSummary, Tally

ACCEPTED, OVERRIDDEN, SILENT = "#2e7d4f", "#c46a1b", "#c9ced6"
EXTRA_CSS = "td:first-child{white-space:nowrap}"


def _rate(tally: Tally, count: int) -> str:
    rate = tally.rate(count)
    return "" if rate is None else f"{rate:.3f}"


def to_csv(summary: FeedbackSummary) -> str:
    reasons = summary.reasons
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["week", "contributor", "issued", "accepted", "overridden", "accept_rate", "override_rate",
                     *[f"overridden:{r}" for r in reasons]])

    def row(week: str, contributor: str, t: Tally) -> list:
        return [week, contributor, t.issued, t.accepted, t.overridden, _rate(t, t.accepted), _rate(t, t.overridden),
                *[t.reasons.get(r, 0) for r in reasons]]

    for (week, contributor), tally in summary.by_week_contributor.items():
        writer.writerow(row(week, contributor, tally))
    for contributor, tally in summary.by_contributor.items():
        writer.writerow(row("all", contributor, tally))
    writer.writerow(row("all", "all cards", summary.total))
    return out.getvalue()


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _stacked_bars(rows: list[tuple[str, Tally]], label: str) -> str:
    """One horizontal bar per row: accepted, overridden and unanswered cards, to scale."""
    if not rows:
        return '<p class="note">No cards issued in this period.</p>'
    label_w, bar_w, row_h = 220, 420, 24
    peak = max(t.issued for _, t in rows) or 1
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 150}" '
           f'height="{row_h * len(rows) + 30}" role="img" aria-label="{_e(label)}">')
    parts = [svg]
    for i, (name, t) in enumerate(rows):
        y, x = i * row_h + 4, label_w
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(name)}</text>')
        silent = max(0, t.issued - t.answered)
        for count, colour, what in ((t.accepted, ACCEPTED, "accepted"), (t.overridden, OVERRIDDEN, "overridden"),
                                    (silent, SILENT, "no feedback")):
            width = round(bar_w * count / peak)
            if width:
                parts.append(f'<rect x="{x}" y="{y + 2}" width="{width}" height="{row_h - 8}" fill="{colour}">'
                             f'<title>{_e(name)}: {count} {what}</title></rect>')
                x += width
        parts.append(f'<text x="{x + 6}" y="{y + 15}">{t.issued} issued</text>')
    y = row_h * len(rows) + 12
    for j, (colour, what) in enumerate(((ACCEPTED, "accepted"), (OVERRIDDEN, "overridden"), (SILENT, "no feedback"))):
        parts.append(f'<rect x="{label_w + j * 120}" y="{y}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{label_w + j * 120 + 16}" y="{y + 11}">{what}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[tuple[str, Tally]], first: str, reasons: list[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in (first, "issued", "accepted", "overridden", "accept rate",
                                                  "override rate", *[f"overridden: {r}" for r in reasons]))
    body = []
    for name, t in rows:
        cells = [t.issued, t.accepted, t.overridden, _percent(t, t.accepted), _percent(t, t.overridden),
                 *[t.reasons.get(r, 0) for r in reasons]]
        body.append(f"<tr><td>{_e(name)}</td>" + "".join(f'<td class="n">{_e(c)}</td>' for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _percent(t: Tally, count: int) -> str:
    rate = t.rate(count)
    return "–" if rate is None else f"{100 * rate:.0f}%"


def to_html(summary: FeedbackSummary) -> str:
    period = (f"{summary.since:%Y-%m-%d} to {summary.until:%Y-%m-%d}" if summary.since
              else f"everything stored up to {summary.until:%Y-%m-%d %H:%M} UTC")
    t = summary.total
    contributors = list(summary.by_contributor.items())
    weeks = list(summary.by_week.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cramp-cds feedback report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}{EXTRA_CSS}</style></head><body>
<h1>How clinicians answered the cards</h1>
<p class="sub">{_e(period)}. A card counts once for each contributor it listed. No patient data is shown.</p>
<ul class="counts"><li><b>{t.issued}</b>cards issued</li><li><b>{t.accepted}</b>accepted ({_percent(t, t.accepted)})</li>
<li><b>{t.overridden}</b>overridden ({_percent(t, t.overridden)})</li>
<li><b>{max(0, t.issued - t.answered)}</b>no feedback</li></ul>
<h2>Per contributor</h2>
{_stacked_bars(contributors, "Cards per contributor by outcome")}
{_table(contributors, "contributor", summary.reasons)}
<h2>Per week of issue</h2>
{_stacked_bars(weeks, "Cards per week by outcome")}
{_table(weeks, "week", summary.reasons)}
<p class="note">Override reasons are the card's codes (system https://cramp-cds.org/fhir/CodeSystem/override-reason);
free-text comments are never stored. The same numbers as CSV: <code>cramp-cds feedback-report --format csv</code>.</p>
</body></html>
"""
