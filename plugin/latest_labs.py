"""One patient's lab results reduced, while the record is read, to the few a compact record keeps.

A long chart holds thousands of Observations, and a compact :class:`plugin.record.PatientRecord` keeps per slot
(the latest lab of any kind; the latest usable result per analyte) one result. Reading a result in full (value,
unit conversion, reference range, interpretation) costs far more than reading its code and date, so each result
is first offered as a *candidate* (code and date only) and, once every result has been seen, only the candidates
that matter are read in full and added to the record, in their original order:

- per slot, the winner (the newest; on a tie the first, as the record does);
- per slot, the first result that occupies it (the record's lab list keeps each slot where it was first filled).

Added in their original order, these give the record exactly what adding every result would have given.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from plugin.dates import parse_when
from plugin.record import STATUS_RANK, LabFact, PatientRecord, analyte_slot, monitoring_slot, usable


@dataclass
class _Candidate:
    seq: int                                  # arrival order
    when: datetime
    slot: tuple[str, str] | None              # (contributor, analyte), None for a monitoring-only lab
    read: Callable[[], LabFact | None]        # the full reading, done only for the candidates that matter
    source: object                            # what the caller wants back with the fact (e.g. the resource)
    rank: int = 2                             # at equal dates a corrected result outranks a final (LabFact.rank)
    _fact: LabFact | None = None
    _done: bool = False

    def fact(self) -> LabFact | None:
        if not self._done:
            self._fact, self._done = self.read(), True
        return self._fact


class LatestLabs:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self._candidates: list[_Candidate] = []

    def offer(self, date: str | None, slot: tuple[str, str] | None, read: Callable[[], LabFact | None],
              source: object = None, status: str | None = None) -> None:
        """A result with its date, analyte slot and Observation status; `read` builds its fact if it matters."""
        when = parse_when(date)
        if when is not None:  # the record drops a result without a date
            self._candidates.append(_Candidate(len(self._candidates), when, slot, read, source,
                                               STATUS_RANK.get(status, 2)))

    def chosen(self) -> list[tuple[LabFact, object]]:
        """(fact, source) of the results that matter, in their original order."""
        monitoring = [c for c in self._candidates if monitoring_slot(c.when, self.now)]
        by_slot: dict[tuple[str, str], list[_Candidate]] = {}
        for c in self._candidates:
            if c.slot is not None and analyte_slot(c.slot[0], c.when, self.now):
                by_slot.setdefault(c.slot, []).append(c)
        keep: dict[int, _Candidate] = {}
        for group, fills in [(monitoring, _read), *((group, _usable) for group in by_slot.values())]:
            first = next((c for c in group if fills(c)), None)
            if first is not None:
                newest = next(c for c in sorted(group, key=_newest_first, reverse=True) if fills(c))
                keep[first.seq], keep[newest.seq] = first, newest
        return [(fact, c.source) for _, c in sorted(keep.items()) if (fact := c.fact()) is not None]

    def add_to(self, record: PatientRecord) -> list[object]:
        """Add the results that matter to `record`; the sources of those added, in order."""
        sources = []
        for fact, source in self.chosen():
            record.add(fact)
            sources.append(source)
        return sources


def _newest_first(c: _Candidate) -> tuple[datetime, int, int]:
    return c.when, c.rank, -c.seq  # max(): the newest, of equal dates the corrected one, then the first


def _read(c: _Candidate) -> bool:
    return c.fact() is not None


def _usable(c: _Candidate) -> bool:
    fact = c.fact()
    return fact is not None and usable(fact)
