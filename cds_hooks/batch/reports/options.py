"""What the person running the review chose about the report (beyond its format): identity, links, changes."""
from __future__ import annotations

from dataclasses import dataclass

from cds_hooks.batch.reports.since import PreviousReport


@dataclass(frozen=True)
class ReportOptions:
    identifiers: bool = False                 # show name, MRN, birth date, age, sex (off by default)
    identifier_system: str | None = None      # the MRN's system (default: the identifier typed MR, else the first)
    patient_link: str | None = None           # "https://ehr.example.org/patient/{id}"
    previous: PreviousReport | None = None    # --since-report: mark what is new
    card_trigger: str = "documented"          # the live service's trigger policy, for the card in the detail view
