"""What every report format shares: a finding or patient as plain data, the run's counts and totals."""
from __future__ import annotations

from cds_hooks.batch.model import BatchResult, PatientResult
from plugin import Finding
from plugin.knowledge import Knowledge


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
