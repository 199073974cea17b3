"""The normalised patient record: the compact facts the rules need, each with its provenance.

A fact keeps only what a rule or a card reads, so a batch review holds facts, not resources.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from plugin.dates import parse_when


@dataclass(frozen=True, slots=True)
class MedicationFact:
    reference: str              # "MedicationRequest/abc"
    contributors: tuple[str, ...]
    description: str            # "furosemide 40 MG Oral Tablet"
    matched_by: str             # "rxnorm 313988", "atc C03CA01", "name furosemide"
    status: str | None
    counts: bool                # the status says the patient is (or will be) taking it
    start: str | None           # ISO date the medication started / was ordered
    dispensed: str | None = None  # MedicationDispense hand-over date (counts only while recent)
    ordered: bool = False       # a draft order from the hook context
    kind: str = ""              # the resource type: "MedicationRequest", "MedicationAdministration"…
    last_activity: str | None = None  # the newest date the resource shows (written, renewed, asserted, given)


@dataclass(frozen=True, slots=True)
class ConditionFact:
    reference: str
    contributors: tuple[str, ...]
    description: str
    matched_by: str
    counts: bool                # clinically active and not refuted
    date: str | None            # onset or recorded date
    recorded: str | None = None  # recordedDate (may be later than the onset)


@dataclass(frozen=True, slots=True)
class LabFact:
    reference: str
    loinc: str
    contributor: str | None     # electrolyte contributor id, None for a monitoring-only lab
    analyte: str                # "total" / "ionized"
    value: float | None         # in the contributor's canonical unit (None: monitoring lab or unconvertible)
    unit: str | None            # canonical unit of `value`
    shown: str                  # the value as reported: "0.55 mmol/L"
    range_low: float | None     # the result's own lower limit, in the canonical unit
    range_shown: str | None     # "0.70-1.10 mmol/L"
    flagged_low: bool           # interpretation L / LL, or a text interpretation such as "Low"
    date: str | None            # effective date-time (ISO)
    comparator: str | None = None  # "<", "<=", ">=", ">": the value is a bound ("<1.0"), not a measurement
    status: str | None = None   # Observation.status: preliminary results count and say so
    reported_unit: str | None = None  # the unit the lab sent (the limit may be in another one)

    @property
    def rank(self) -> int:
        """Among results at the same time: a corrected or amended result outranks a final, a final a preliminary."""
        return STATUS_RANK.get(self.status, 2)


STATUS_RANK = {"corrected": 3, "amended": 3, "final": 2, None: 2, "preliminary": 1}


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """Who the patient is, for a reviewer's worklist only (batch `--identifiers`): never in a card or a log.

    `identifiers` are (system, type code, value) as recorded; the report picks the site's MRN system.
    The repr names no value, so an identity printed by accident (a log line, a traceback) shows no PHI.
    """
    name: str | None = None                 # "Daniel Okafor" (official/usual name first)
    birth_date: str | None = None           # "1955-11-02"
    sex: str | None = None                  # administrative gender: "male", "female", "other", "unknown"
    identifiers: tuple[tuple[str, str, str], ...] = ()

    def __repr__(self) -> str:
        return "PatientIdentity(<redacted>)"


@dataclass
class PatientRecord:
    """One patient's facts.

    With `now` set the record is compact: it keeps only what the rules can use as of `now` — medications
    and conditions that count, and per lab analyte the most recent usable result, plus the most recent lab
    of any kind (for the monitoring check). A review of a record with 2,000 Observations (or a batch of
    50,000 patients) then holds a handful of lab facts per patient instead of all of them.
    """
    patient: str | None = None              # "Patient/123"
    deceased: str | None = None             # date, or "yes" when only deceasedBoolean is known
    identity: PatientIdentity | None = None  # from the Patient resource (name, MRN, birth date, sex)
    medications: list[MedicationFact] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    labs: list[LabFact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    now: datetime | None = None
    _latest: dict[tuple, tuple[datetime, int]] = field(default_factory=dict, repr=False, compare=False)

    def add(self, fact: MedicationFact | ConditionFact | LabFact) -> None:
        if isinstance(fact, LabFact):
            self._add_lab(fact)
        elif self.now is not None and not fact.counts:
            return  # stopped, refuted, resolved…: never part of a finding
        elif isinstance(fact, MedicationFact):
            self.medications.append(fact)
        else:
            self.conditions.append(fact)

    def merge(self, other: PatientRecord) -> None:
        """Add another part of the same patient's record (a batch reads each resource type separately)."""
        for fact in [*other.medications, *other.conditions, *other.labs]:
            self.add(fact)
        self.warnings.extend(other.warnings)
        self.deceased = self.deceased or other.deceased
        self.identity = self.identity or other.identity

    def _add_lab(self, lab: LabFact) -> None:
        if self.now is None:
            self.labs.append(lab)
            return
        when = parse_when(lab.date)
        if when is None:
            return
        slots = []
        if monitoring_slot(when, self.now):
            slots.append(("any",))
        if analyte_slot(lab.contributor, when, self.now) and usable(lab):
            slots.append((lab.contributor, lab.analyte))
        for slot in slots:
            held = self._latest.get(slot)
            if held is None:
                self._latest[slot] = (when, len(self.labs))
                self.labs.append(lab)
            elif (when, lab.rank) > (held[0], self.labs[held[1]].rank):  # a tie keeps the first, as duplicates do
                self._latest[slot] = (when, held[1])
                self.labs[held[1]] = lab


# The slots of a compact record: the latest lab of any kind, and the latest usable result per analyte.
def monitoring_slot(when: datetime, now: datetime) -> bool:
    return when <= now + timedelta(days=1)  # the monitoring window tolerates a same-day timestamp


def analyte_slot(contributor: str | None, when: datetime, now: datetime) -> bool:
    return bool(contributor) and when <= now


def usable(lab: LabFact) -> bool:
    return lab.value is not None or lab.flagged_low
