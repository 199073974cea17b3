"""Rules: a patient's facts -> evidence-graded findings, each with the resources and dates behind it."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from plugin.dates import day, months_to_days, parse_when, within
from plugin.knowledge import DIURETICS, Knowledge
from plugin.record import ConditionFact, LabFact, MedicationFact, PatientIdentity, PatientRecord

MAX_REASONS = 3  # a card line stays readable; the references keep the full list


@dataclass(frozen=True)
class ReviewOptions:
    """Clinical windows; each is a documented setting of the service and the batch review."""
    lab_lookback_days: int = 365      # the most recent electrolyte result within this window decides
    monitoring_months: int = 12       # a diuretic with no K/Mg/Ca/creatinine result this long -> lab suggestion
    dispense_window_days: int = 180   # a dispense counts as current medication this long after hand-over
    validate: bool = True             # report resources that fail strict FHIR R4 validation


@dataclass(frozen=True)
class Finding:
    contributor: str
    category: str
    label: str
    grade: str
    sources: tuple[str, ...]
    reason: str
    references: tuple[str, ...]
    date: str | None = None
    ordered: bool = False             # from a draft order in the hook context
    recent_start: bool = False        # started within the class's "recent start" window (E2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"], d["references"] = list(self.sources), list(self.references)
        return {k: v for k, v in d.items() if v not in (None, False) or k == "ordered"}


@dataclass
class Review:
    patient: str | None
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deceased: bool = False
    monitoring_gap: bool = False      # a diuretic is current and no recent electrolyte/renal result exists
    # who the patient is, for the batch worklist only: not part of a card, of `to_dict` or of equality
    identity: PatientIdentity | None = field(default=None, repr=False, compare=False)

    @property
    def documented_cramps(self) -> bool:
        return any(f.contributor == "leg-cramps-documented" for f in self.findings)

    @property
    def contributors(self) -> list[Finding]:
        """Findings that may contribute to cramps (the trigger itself excluded)."""
        return [f for f in self.findings if f.category != "trigger"]

    def to_dict(self) -> dict:
        return {
            "patient": self.patient,
            "deceased": self.deceased,
            "documentedCramps": self.documented_cramps,
            "monitoringGap": self.monitoring_gap,
            "findings": [f.to_dict() for f in self.findings],
            "warnings": list(self.warnings),
        }


def _joined(parts: list[str]) -> str:
    unique = list(dict.fromkeys(parts))
    shown = "; ".join(unique[:MAX_REASONS])
    return shown + (f"; and {len(unique) - MAX_REASONS} more" if len(unique) > MAX_REASONS else "")


def _not_future(value: str | None, now: datetime) -> bool:
    """A record dated after `now` (a review as of a past date) is not yet part of the picture."""
    when = parse_when(value)
    return when is None or when <= now + timedelta(days=1)


def _current_medications(record: PatientRecord, now: datetime, options: ReviewOptions) -> list[MedicationFact]:
    return [
        m for m in record.medications
        if m.counts and _not_future(m.start, now)
        and (m.dispensed is None or within(m.dispensed, now, days=options.dispense_window_days))
    ]


def _medication_findings(meds: list[MedicationFact], now: datetime, knowledge: Knowledge) -> list[Finding]:
    groups: dict[tuple[str, bool], list[MedicationFact]] = defaultdict(list)
    for med in meds:
        for cid in med.contributors:
            groups[(cid, med.ordered)].append(med)
    findings = []
    for (cid, ordered), facts in groups.items():
        c = knowledge.contributors[cid]
        starts = sorted(s for f in facts if (s := f.start))
        recent = bool(c.recent_start_months) and any(
            within(f.start, now, days=months_to_days(c.recent_start_months)) for f in facts)
        reasons = []
        for f in facts:
            if ordered:
                reasons.append(f.description)
            else:
                kind = "dispensed" if f.dispensed else (f.status or "status unknown")
                reasons.append(f"{f.description}, {kind}" + (f" since {day(f.start)}" if f.start else ""))
        if recent and not ordered:
            reasons[-1] += f" (started within {c.recent_start_months} months)"
        findings.append(Finding(
            contributor=cid, category=c.category, label=c.label, grade=c.grade, sources=c.evidence,
            reason=_joined(reasons), references=tuple(dict.fromkeys(f.reference for f in facts)),
            date=day(starts[-1]) if starts else None, ordered=ordered, recent_start=recent,
        ))
    return findings


def _condition_findings(conditions: list[ConditionFact], now: datetime) -> dict[str, list[ConditionFact]]:
    groups: dict[str, list[ConditionFact]] = defaultdict(list)
    for cond in conditions:
        if cond.counts and _not_future(cond.date, now):
            for cid in cond.contributors:
                groups[cid].append(cond)
    return groups


def _dedupe_labs(labs: list[LabFact]) -> list[LabFact]:
    """Same code, value and time under a different id is one result (seen in Synthea exports)."""
    seen: dict[tuple, LabFact] = {}
    for lab in labs:
        seen.setdefault((lab.loinc, lab.value, lab.shown, lab.date), lab)
    return list(seen.values())


def _low_labs(labs: list[LabFact], now: datetime, options: ReviewOptions,
              knowledge: Knowledge) -> dict[str, list[tuple[LabFact, str]]]:
    """Per electrolyte contributor: the most recent result per analyte within the lookback, if low."""
    latest: dict[tuple[str, str], tuple[datetime, LabFact]] = {}
    for lab in labs:
        when = parse_when(lab.date)
        if lab.contributor is None or when is None or when > now or (lab.value is None and not lab.flagged_low):
            continue
        if not within(lab.date, now, days=options.lab_lookback_days):
            continue
        key = (lab.contributor, lab.analyte)
        if key not in latest or when > latest[key][0]:
            latest[key] = (when, lab)
    low: dict[str, list[tuple[LabFact, str]]] = defaultdict(list)
    for (cid, analyte), (_, lab) in latest.items():
        c = knowledge.contributors[cid]
        name = knowledge.labs[lab.loinc].name
        if lab.range_low is not None and lab.value is not None:
            is_low, limit = lab.value < lab.range_low, f"reference range {lab.range_shown}"
        else:
            default = c.lab_low.get(analyte)
            is_low = lab.value is not None and default is not None and lab.value < default
            limit = f"below the default lower limit {default:g} {c.lab_unit}" if default else ""
        if lab.flagged_low and not is_low:
            is_low, limit = True, "flagged low by the laboratory"
        if is_low:
            low[cid].append((lab, f"{name} {lab.shown} on {day(lab.date)} ({limit})"))
    return low


def evaluate(record: PatientRecord, *, now: datetime, knowledge: Knowledge, options: ReviewOptions) -> Review:
    review = Review(patient=record.patient, warnings=list(record.warnings), identity=record.identity)
    if record.deceased:
        review.deceased = True
        review.warnings.append(f"{record.patient or 'patient'} is deceased ({record.deceased}): not reviewed")
        return review

    meds = _current_medications(record, now, options)
    findings = _medication_findings(meds, now, knowledge)

    conditions = _condition_findings(record.conditions, now)
    low_labs = _low_labs(_dedupe_labs(record.labs), now, options, knowledge)
    for cid in dict.fromkeys([*conditions, *low_labs]):
        c = knowledge.contributors[cid]
        conds, labs = conditions.get(cid, []), low_labs.get(cid, [])
        reasons = [text for _, text in labs]
        reasons += [f"{f.description} ({f.matched_by})" + (f", recorded {day(f.date)}" if f.date else "")
                    for f in conds]
        dates = sorted(d for d in [*(lab.date for lab, _ in labs), *(f.date for f in conds)] if d)
        findings.append(Finding(
            contributor=cid, category=c.category, label=c.label, grade=c.grade, sources=c.evidence,
            reason=_joined(reasons), references=tuple(dict.fromkeys(
                [*(lab.reference for lab, _ in labs), *(f.reference for f in conds)])),
            date=day(dates[-1]) if dates else None,
        ))

    findings.sort(key=lambda f: (knowledge.order(f.contributor), not f.ordered))
    review.findings = findings

    on_diuretic = any(cid in DIURETICS for m in meds for cid in m.contributors)
    recent_lab = any(
        within(lab.date, now, days=months_to_days(options.monitoring_months)) for lab in record.labs)
    review.monitoring_gap = on_diuretic and not recent_lab
    return review
