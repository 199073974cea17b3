"""Which patient needs a pharmacist first: a review's priority tier, its reason, and the worklist order.

Tiers (lower acts first), the way a care-gap worklist puts the most actionable item on top:

1. quinine current (harm: not approved for cramps, serious haematological reactions; E4);
2. an electrolyte result low (the cause may be treatable);
3. a contributor drug started recently (its recent-start window, E2) in a patient with leg cramps documented;
4. leg cramps documented and other contributors on record;
5. contributors on record, cramps not documented;
6. leg cramps documented, no contributor found.

Within a tier: the strongest evidence grade first, then more contributors, then the patient reference.
A patient with nothing found, or deceased, is not on the worklist (`tier` None).
"""
from __future__ import annotations

from dataclasses import dataclass

from plugin import Finding, Review
from plugin.knowledge import GRADES, Knowledge

TRIGGER = "leg-cramps-documented"
TIER_NAMES = {
    1: "Quinine current",
    2: "Electrolyte low",
    3: "Recently started drug, cramps documented",
    4: "Cramps documented, contributors on record",
    5: "Contributors on record",
    6: "Cramps documented, no contributor found",
}


@dataclass(frozen=True)
class Priority:
    tier: int | None        # 1 acts first; None: not on the worklist
    reason: str             # why this tier, with the drug / value / date behind it

    @property
    def name(self) -> str:
        return TIER_NAMES.get(self.tier or 0, "Not on the worklist")


def _what(findings: list[Finding]) -> str:
    return "; ".join(f"{f.label}: {f.reason}" for f in findings)


def priority(review: Review, knowledge: Knowledge) -> Priority:
    if review.deceased:
        return Priority(None, "deceased: not reviewed")
    contributors = review.contributors
    cramps = review.documented_cramps
    quinine = [f for f in contributors if f.contributor == "quinine"]
    low = [f for f in contributors if knowledge.contributors[f.contributor].category == "electrolyte"]
    recent = [f for f in contributors if f.recent_start]
    also = "; leg cramps documented" if cramps else ""
    if quinine:
        return Priority(1, _what(quinine) + also)
    if low:
        return Priority(2, _what(low) + also)
    if recent and cramps:
        return Priority(3, _what(recent) + also)
    n = len(contributors)
    if cramps and contributors:
        return Priority(4, f"leg cramps documented; {n} possible contributor{'s' * (n > 1)}")
    if contributors:
        return Priority(5, f"{n} possible contributor{'s' * (n > 1)}; leg cramps not documented")
    if cramps:
        return Priority(6, "leg cramps documented; no contributor found")
    return Priority(None, "no contributor found")


def best_grade(review: Review) -> str | None:
    """The strongest evidence grade among the review's contributors (GRADES order), None without any."""
    grades = {f.grade for f in review.contributors}
    return next((g for g in GRADES if g in grades), None)


def sort_key(review: Review, source: str, tier: int | None) -> tuple:
    """Worklist order: tier, strongest grade, most contributors, then patient and source (stable, deterministic)."""
    grade = best_grade(review)
    return (tier or len(TIER_NAMES) + 1, GRADES.index(grade) if grade else len(GRADES),
            -len(review.contributors), review.patient or "", source)
