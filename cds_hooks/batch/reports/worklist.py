"""The listed patients as a ranked worklist, with the panel's counts, built in one pass over the rows.

The rows come from disk in patient order (`PatientRows`); the worklist wants them by priority. One pass
pickles each row into a temporary file and keeps only its sort key and offset; iterating reads the rows
back in rank order. Memory holds a small key per patient, never the rows.
"""
from __future__ import annotations

import pickle
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Self

from cds_hooks.batch.model import BatchResult, PatientResult
from cds_hooks.batch.reports.identity import ShownIdentity, age_at, age_band, patient_link, shown_identity
from cds_hooks.batch.reports.options import ReportOptions
from cds_hooks.batch.reports.ranking import Priority, priority, sort_key
from plugin.knowledge import Knowledge


@dataclass(frozen=True)
class Entry:
    rank: int | None                 # 1 first; None: listed but not on the worklist (nothing found, deceased)
    priority: Priority
    row: PatientResult
    change: str | None               # "new" / "changed" since --since-report; None otherwise
    identity: ShownIdentity | None   # only with --identifiers
    link: str | None                 # --patient-link filled in


@dataclass
class Panel:
    """The denominators and charts: every count is of the listed patients (after filters)."""

    listed: int = 0
    deceased: int = 0                                        # listed, deceased: not reviewed
    on_worklist: int = 0
    tiers: Counter = field(default_factory=Counter)           # tier -> patients
    contributors: Counter = field(default_factory=Counter)    # contributor id -> reviewed patients with it
    with_cramps: Counter = field(default_factory=Counter)     # contributor id -> of those, cramps documented
    documented_cramps: int = 0                               # reviewed patients with cramps documented
    age_bands: Counter = field(default_factory=Counter)       # reviewed patients per age band
    new: int = 0
    changed: int = 0
    dropped: int = 0                                         # on the earlier worklist, not on this one

    @property
    def reviewed(self) -> int:
        return self.listed - self.deceased


class Worklist:
    """`with Worklist(result, knowledge, options) as wl:` then `wl.panel` and `for entry in wl: …`."""

    def __init__(self, result: BatchResult, knowledge: Knowledge, options: ReportOptions | None = None) -> None:
        self.options = options or ReportOptions()
        self.on = result.as_of.date()
        self.panel = Panel()
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worklist; see close()
        self._keys: list[tuple[tuple, int, Priority, str | None]] = []
        try:
            self._read(result, knowledge)
        except BaseException:
            self._file.close()
            raise

    def _read(self, result: BatchResult, knowledge: Knowledge) -> None:
        panel, previous = self.panel, self.options.previous
        listed_refs: set[str] = set()
        for row in result.patients:
            rv = row.review
            prio = priority(rv, knowledge)
            panel.listed += 1
            if rv.deceased:
                panel.deceased += 1
            else:
                ids = set(row.contributor_ids) - {"leg-cramps-documented"}
                panel.contributors.update(ids)
                if rv.documented_cramps:
                    panel.documented_cramps += 1
                    panel.with_cramps.update(ids)
                birth = rv.identity.birth_date if rv.identity else None
                panel.age_bands[age_band(age_at(birth, self.on))] += 1
            change = None
            if prio.tier is not None:
                panel.on_worklist += 1
                panel.tiers[prio.tier] += 1
                listed_refs.add(row.patient)
                if previous is not None:
                    change = previous.change(row.patient, row.contributor_ids)
                    panel.new += change == "new"
                    panel.changed += change == "changed"
            offset = self._file.tell()
            pickle.dump(row, self._file, pickle.HIGHEST_PROTOCOL)
            self._keys.append((sort_key(rv, row.source, prio.tier), offset, prio, change))
        if previous is not None:
            panel.dropped = previous.dropped(listed_refs)
        self._keys.sort(key=lambda k: k[0])

    def __iter__(self) -> Iterator[Entry]:
        opts = self.options
        for rank, (_, offset, prio, change) in enumerate(self._keys, 1):
            self._file.seek(offset)
            row: PatientResult = pickle.load(self._file)
            shown = shown_identity(row.review.identity, opts.identifier_system, self.on)
            yield Entry(rank if prio.tier is not None else None, prio, row, change,
                        shown if opts.identifiers else None,
                        patient_link(opts.patient_link, row.patient, shown.identifier))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
