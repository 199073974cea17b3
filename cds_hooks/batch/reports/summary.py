"""What every report format shares: a finding or patient as plain data, the run's counts and totals."""
from __future__ import annotations

from cds_hooks.batch.model import BatchResult, PatientResult
from cds_hooks.batch.reports.ranking import TIER_NAMES
from cds_hooks.batch.reports.worklist import Entry, Worklist
from plugin import Finding
from plugin.knowledge import Knowledge


def finding_dict(f: Finding) -> dict:
    return {"contributor": f.contributor, "label": f.label, "category": f.category, "grade": f.grade,
            "sources": list(f.sources), "reason": f.reason, "references": list(f.references), "date": f.date,
            "possiblyStale": f.possibly_stale}


def patient_dict(p: PatientResult) -> dict:
    rv = p.review
    return {"patient": rv.patient, "source": p.source, "deceased": rv.deceased,
            "documentedCramps": rv.documented_cramps, "findings": [finding_dict(f) for f in rv.findings],
            "warnings": list(rv.warnings)}


def entry_dict(entry: Entry) -> dict:
    """A worklist row for JSON: rank and why first, then identity and link when asked, then the findings."""
    doc: dict = {"rank": entry.rank, "priority": {"tier": entry.priority.tier, "name": entry.priority.name,
                                                  "reason": entry.priority.reason}}
    if entry.change is not None:
        doc["sincePrevious"] = entry.change
    if entry.identity is not None:
        doc["identity"] = entry.identity.to_dict()
    if entry.link is not None:
        doc["link"] = entry.link
    return doc | patient_dict(entry.row)


def worklist_dict(worklist: Worklist) -> dict:
    panel, previous = worklist.panel, worklist.options.previous
    doc: dict = {"onWorklist": panel.on_worklist, "reviewed": panel.reviewed, "deceased": panel.deceased,
                 "tiers": {TIER_NAMES[t]: panel.tiers[t] for t in sorted(panel.tiers)}}
    if previous is not None:
        doc["sincePrevious"] = {"report": previous.label, "asOf": previous.as_of, "new": panel.new,
                                "changed": panel.changed, "noLongerListed": panel.dropped}
    return doc


def totals(result: BatchResult, knowledge: Knowledge) -> dict[str, int]:
    """Patients (of those listed) with each contributor, in the knowledge's order (most important first)."""
    counts = result.get_summary().contributors
    return {cid: counts[cid] for cid in sorted(counts, key=knowledge.order)}


def counts(result: BatchResult) -> dict[str, int]:
    summary = result.get_summary()
    return {
        "patients": summary.patients,
        "documentedCramps": summary.documented_cramps,
        "withContributor": summary.with_contributor,
        "deceased": summary.deceased,
        "listed": summary.listed,
        "badRecords": len(result.bad_records),
    }


def as_of_text(result: BatchResult) -> str:
    return result.as_of.date().isoformat()
