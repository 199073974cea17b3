"""Rules: a patient's facts -> evidence-graded findings, each with the resources and dates behind it."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from plugin.dates import day, months_to_days, parse_when, within
from plugin.knowledge import DIURETICS, Knowledge
from plugin.record import ConditionFact, LabFact, MedicationFact, PatientIdentity, PatientRecord
from plugin.units import canonical_unit

REFILL_KINDS = ("MedicationDispense", "MedicationAdministration")
MAX_REASONS = 3  # a card line stays readable; the references keep the full list


@dataclass(frozen=True)
class ReviewOptions:
    """Clinical windows; each is a documented setting of the service and the batch review (README, Settings)."""
    lab_lookback_days: int = 365      # the most recent electrolyte result within this window decides
    monitoring_months: int = 12       # a diuretic with no K/Mg/Ca/creatinine result this long -> lab suggestion
    dispense_window_days: int = 180   # a dispense counts as current medication this long after hand-over
    # An administration is one dose: it counts this long (an iron sucrose course is 5 doses within 14 days or
    # 10 dialysis sessions, Venofer US label; 30 days covers a course and the weeks after it).
    administration_window_days: int = 30
    # An order or statement with no newer activity of its class (renewal, dispense, statement) for this long is
    # shown as "possibly stale" (a US prescription is generally valid for a year after it is written).
    stale_order_days: int = 365
    # A pregnancy counts this long after its onset or recording, whichever is later (post-term begins at
    # 42 0/7 weeks = 294 days, ACOG Practice Bulletin 146; 300 days leaves a week for late recording).
    pregnancy_window_days: int = 300
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
    possibly_stale: bool = False      # every order behind it has had no activity for `stale_order_days`

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


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _when(value: str | None) -> datetime:
    """A sort key: undated records first. Findings list their records in this order whatever the input order
    (the batch reads an export file by file; the live card reads a prefetch Bundle)."""
    return parse_when(value) or _EPOCH


def _activity(m: MedicationFact) -> datetime | None:
    return parse_when(m.last_activity or m.start or m.dispensed)


def _current_medications(record: PatientRecord, now: datetime, options: ReviewOptions) -> list[MedicationFact]:
    return [
        m for m in record.medications
        if m.counts and _not_future(m.start, now)
        and (m.dispensed is None or within(m.dispensed, now, days=options.dispense_window_days))
        and (m.kind != "MedicationAdministration" or within(m.start, now, days=options.administration_window_days))
    ]


def _stale(record: PatientRecord, meds: list[MedicationFact], now: datetime, options: ReviewOptions) -> set[str]:
    """References of orders and statements with no activity of their class within `stale_order_days`.

    Activity is any counting medication resource of the same class (a renewal, a dispense, a statement, an
    administration), old dispenses included: an order dispensed last month is current however old it is.
    """
    horizon = now - timedelta(days=options.stale_order_days)
    active_classes = {cid for m in record.medications
                      if m.counts and (when := _activity(m)) is not None and horizon <= when
                      for cid in m.contributors}
    return {m.reference for m in meds
            if m.kind in ("MedicationRequest", "MedicationStatement") and not m.ordered
            and (when := _activity(m)) is not None and when < horizon
            and not active_classes.intersection(m.contributors)}


def _medication_findings(meds: list[MedicationFact], stale: set[str], now: datetime,
                         knowledge: Knowledge) -> list[Finding]:
    groups: dict[tuple[str, bool], list[MedicationFact]] = defaultdict(list)
    for med in meds:
        for cid in med.contributors:
            groups[(cid, med.ordered)].append(med)
    findings = []
    for (cid, ordered), facts in groups.items():
        c = knowledge.contributors[cid]
        facts.sort(key=lambda f: (f.reference in stale, _when(f.start), f.reference))  # current, then oldest first
        starts = sorted(s for f in facts if (s := f.start))
        # Orders and statements say when a drug started; a dispense (a refill) or a dose given says so only
        # when nothing else is on record.
        beginnings = [f for f in facts if f.kind not in REFILL_KINDS] or facts
        window = months_to_days(c.recent_start_months or 0)
        started = next((f for f in beginnings if c.recent_start_months and within(f.start, now, days=window)), None)
        recent = started is not None
        reasons = [f.description if ordered else _medication_reason(f, f.reference in stale) for f in facts]
        if recent and not ordered:
            reasons[facts.index(started)] += f" (started within {c.recent_start_months} months)"
        findings.append(Finding(
            contributor=cid, category=c.category, label=c.label, grade=c.grade, sources=c.evidence,
            reason=_joined(reasons), references=tuple(dict.fromkeys(f.reference for f in facts)),
            date=day(starts[-1]) if starts else None, ordered=ordered, recent_start=recent,
            possibly_stale=all(f.reference in stale for f in facts),
        ))
    return findings


def _medication_reason(f: MedicationFact, stale: bool) -> str:
    """"furosemide 40 MG Oral Tablet, active since 2026-01-12"; "…, given 2026-10-20"; "…, possibly stale (…)"."""
    if f.kind == "MedicationAdministration" or f.dispensed:
        verb = "given" if f.kind == "MedicationAdministration" else "dispensed"
        return f"{f.description}, {verb} {day(f.start)}" if f.start else f"{f.description}, {verb}"
    reason = f"{f.description}, {f.status or 'status unknown'}" + (f" since {day(f.start)}" if f.start else "")
    if stale:
        last = day(f.last_activity or f.start)
        newer = "" if last == day(f.start) else f" after {last}"
        reason += f", possibly stale (no renewal, dispense or statement{newer or ' since'})"
    return reason


def _latest(fact: ConditionFact) -> datetime | None:
    dates = [when for d in (fact.date, fact.recorded) if (when := parse_when(d)) is not None]
    return max(dates) if dates else None


def _condition_findings(conditions: list[ConditionFact], now: datetime, options: ReviewOptions,
                        normal_since: dict[str, datetime], warnings: list[str]) -> dict[str, list[ConditionFact]]:
    """Conditions that count now, per contributor. A pregnancy counts within the gestation window; an
    electrolyte diagnosis is superseded by a newer normal result of the same electrolyte."""
    groups: dict[str, list[ConditionFact]] = defaultdict(list)
    for cond in conditions:
        if not (cond.counts and _not_future(cond.date, now)):
            continue
        latest = _latest(cond)
        for cid in cond.contributors:
            if cid == "pregnancy" and latest is not None \
                    and latest < now - timedelta(days=options.pregnancy_window_days):
                warnings.append(f"{cond.reference}: pregnancy dated {day(cond.date or cond.recorded)} is beyond "
                                f"the {options.pregnancy_window_days}-day gestation window; not counted")
                continue
            if cid in normal_since and latest is not None and normal_since[cid] > latest:
                continue
            groups[cid].append(cond)
    for conds in groups.values():
        conds.sort(key=lambda f: (_when(f.date), f.reference))
    return groups


def _dedupe_labs(labs: list[LabFact]) -> list[LabFact]:
    """Same code, value and time under a different id is one result (seen in Synthea exports)."""
    seen: dict[tuple, LabFact] = {}
    for lab in labs:
        seen.setdefault((lab.loinc, lab.value, lab.shown, lab.date), lab)
    return list(seen.values())


def _verdict(lab: LabFact, limit: float) -> bool | None:
    """Whether a result is below `limit` (same unit): True, False, or None when a bound cannot tell ("<5.0")."""
    if lab.value is None:
        return None
    if lab.comparator is None:
        return lab.value < limit
    if lab.comparator == "<":
        return True if lab.value <= limit else None
    if lab.comparator == "<=":
        return True if lab.value < limit else None
    return False if lab.value >= limit else None  # ">" or ">=": at least the bound


def _fmt(value: float) -> str:
    return f"{round(value, 2):g}"


def _lab_results(labs: list[LabFact], now: datetime,
                 knowledge: Knowledge) -> dict[tuple[str, str], tuple[datetime, LabFact, bool | None, str]]:
    """Per (electrolyte, analyte): the most recent result up to `now`, whether it is low, and the limit it met."""
    latest: dict[tuple[str, str], tuple[datetime, LabFact]] = {}
    for lab in labs:
        when = parse_when(lab.date)
        if lab.contributor is None or when is None or when > now or (lab.value is None and not lab.flagged_low):
            continue
        key = (lab.contributor, lab.analyte)
        if key not in latest or (when, lab.rank) > (latest[key][0], latest[key][1].rank):
            latest[key] = (when, lab)
    results = {}
    for (cid, analyte), (when, lab) in latest.items():
        c = knowledge.contributors[cid]
        if lab.range_low is not None:
            is_low, limit = _verdict(lab, lab.range_low), f"reference range {lab.range_shown}"
        else:
            default = c.lab_low.get(analyte)
            is_low = _verdict(lab, default) if default is not None else None
            limit = f"below the default lower limit {default:g} {c.lab_unit}" if default else ""
        if lab.flagged_low and not is_low:
            is_low, limit = True, "flagged low by the laboratory"
        results[(cid, analyte)] = (when, lab, is_low, limit)
    return results


def _lab_reason(lab: LabFact, limit: str, knowledge: Knowledge) -> str:
    """"Calcium 2 mmol/L (8.02 mg/dL) on 2026-10-01 (below the default lower limit 8.6 mg/dL)": the value in the
    limit's unit beside it whenever the lab reported another unit."""
    shown = lab.shown
    if (lab.value is not None and lab.unit and canonical_unit(lab.reported_unit) != canonical_unit(lab.unit)
            and not (lab.range_shown and limit.startswith("reference") and lab.range_shown.endswith(
                lab.reported_unit or "\0"))):
        shown += f" ({lab.comparator or ''}{_fmt(lab.value)} {lab.unit})"
    preliminary = ", preliminary" if lab.status == "preliminary" else ""
    return f"{knowledge.labs[lab.loinc].name} {shown} on {day(lab.date)}{preliminary} ({limit})"


def _low_labs(results: dict, now: datetime, options: ReviewOptions,
              knowledge: Knowledge) -> dict[str, list[tuple[LabFact, str]]]:
    """Per electrolyte contributor: the most recent result per analyte, if low and within the lookback."""
    low: dict[str, list[tuple[LabFact, str]]] = defaultdict(list)
    for (cid, _), (_, lab, is_low, limit) in results.items():
        if is_low and within(lab.date, now, days=options.lab_lookback_days):
            low[cid].append((lab, _lab_reason(lab, limit, knowledge)))
    for labs in low.values():
        labs.sort(key=lambda item: (_when(item[0].date), item[0].reference))
    return low


def _normal_since(results: dict) -> dict[str, datetime]:
    """Per electrolyte: the date of its newest result, when that result is normal (it supersedes older diagnoses)."""
    newest: dict[str, tuple[datetime, bool | None]] = {}
    for (cid, _), (when, _, is_low, _) in results.items():
        if cid not in newest or when > newest[cid][0]:
            newest[cid] = (when, is_low)
    return {cid: when for cid, (when, is_low) in newest.items() if is_low is False}


def evaluate(record: PatientRecord, *, now: datetime, knowledge: Knowledge, options: ReviewOptions) -> Review:
    review = Review(patient=record.patient, warnings=list(record.warnings), identity=record.identity)
    if record.deceased:
        review.deceased = True
        review.warnings.append(f"{record.patient or 'patient'} is deceased ({record.deceased}): not reviewed")
        return review

    meds = _current_medications(record, now, options)
    findings = _medication_findings(meds, _stale(record, meds, now, options), now, knowledge)

    results = _lab_results(_dedupe_labs(record.labs), now, knowledge)
    conditions = _condition_findings(record.conditions, now, options, _normal_since(results), review.warnings)
    low_labs = _low_labs(results, now, options, knowledge)
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

    present = {f.contributor for f in findings}
    subsumed = {s for cid in present for s in knowledge.contributors[cid].subsumes}
    findings = [f for f in findings if f.contributor not in subsumed]
    findings.sort(key=lambda f: (f.possibly_stale, knowledge.order(f.contributor), not f.ordered))
    review.findings = findings

    on_diuretic = any(cid in DIURETICS for m in meds for cid in m.contributors)
    recent_lab = any(
        within(lab.date, now, days=months_to_days(options.monitoring_months)) for lab in record.labs)
    review.monitoring_gap = on_diuretic and not recent_lab
    return review
