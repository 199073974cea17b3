"""The normalised patient record: the compact facts the rules need, each with its provenance.

A fact keeps only what a rule or a card reads, so a batch review holds facts, not resources.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass(frozen=True, slots=True)
class ConditionFact:
    reference: str
    contributors: tuple[str, ...]
    description: str
    matched_by: str
    counts: bool                # clinically active and not refuted
    date: str | None            # onset or recorded date


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
    flagged_low: bool           # interpretation L / LL
    date: str | None            # effective date-time (ISO)


@dataclass
class PatientRecord:
    patient: str | None = None              # "Patient/123"
    deceased: str | None = None             # date, or "yes" when only deceasedBoolean is known
    medications: list[MedicationFact] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    labs: list[LabFact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, fact: MedicationFact | ConditionFact | LabFact) -> None:
        if isinstance(fact, MedicationFact):
            self.medications.append(fact)
        elif isinstance(fact, ConditionFact):
            self.conditions.append(fact)
        else:
            self.labs.append(fact)
