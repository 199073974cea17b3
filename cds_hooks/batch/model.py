"""The values the batch passes between its steps: bad records, per-patient results, the whole run."""
from __future__ import annotations

import heapq
import pickle
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import overload

from plugin import Review


@dataclass(frozen=True, order=True)
class BadRecord:
    """One record that could not be read: `file` and 1-based `line` (None: the whole file / download / patient)."""

    file: str
    line: int | None
    error: str

    def sort_key(self) -> tuple[str, int]:
        return self.file, self.line or 0

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "error": self.error}

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.error}" if self.line is not None else f"{self.file}: {self.error}"


@dataclass(frozen=True)
class PatientResult:
    """The engine's `Review` of one patient, and the input it came from (file name or export folder)."""

    review: Review
    source: str

    @property
    def patient(self) -> str:
        return self.review.patient or ""

    @property
    def contributor_ids(self) -> list[str]:
        return [f.contributor for f in self.review.findings]


@dataclass
class Stats:
    resources: int = 0          # FHIR resources read (all types, relevant or not)
    lines: int = 0              # ndjson lines read (blank lines excluded)
    bytes: int = 0              # input bytes read
    files: int = 0              # input files read
    skipped_files: int = 0      # ndjson files of a type the engine does not read, skipped unread


def row_key(p: PatientResult) -> tuple[str, str]:
    """The report's order: by patient reference, then source."""
    return p.patient, p.source


def read_pickles(path: Path) -> Iterator:
    """The objects pickled one after the other into `path` (e.g. the sorted rows of one shard, see shards.py)."""
    with open(path, "rb") as fh:
        while True:
            try:
                yield pickle.load(fh)
            except EOFError:
                return


class PatientRows(Sequence[PatientResult]):
    """Reviewed patients kept on disk: sorted shard files read back as one sorted stream (`heapq.merge`).

    Iterating reads the files again each time (one row in memory per shard); `len()` is known; indexing reads
    the rows up to the index, which is fine for small runs and tests. `owner` (the temporary directory of the
    files) is kept alive as long as the rows are.
    """

    def __init__(self, files: list[Path], length: int, keep: Callable[[PatientResult], bool] | None = None,
                 owner: object = None) -> None:
        self.files, self.length, self.keep, self.owner = files, length, keep, owner

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[PatientResult]:
        rows = heapq.merge(*(read_pickles(f) for f in self.files), key=row_key)
        return rows if self.keep is None else filter(self.keep, rows)

    @overload
    def __getitem__(self, index: int) -> PatientResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[PatientResult]: ...
    def __getitem__(self, index):
        return list(self)[index]

    def __repr__(self) -> str:
        return f"PatientRows({self.length} patients in {len(self.files)} files)"


def astuple_shallow(obj: object) -> tuple:
    """A dataclass's field values, not copied (unlike `dataclasses.astuple`)."""
    return tuple(getattr(obj, f.name) for f in fields(obj))


@dataclass
class Summary:
    """What the report needs before its patient list, computed in one pass over every patient reviewed."""

    patients: int = 0
    documented_cramps: int = 0
    with_contributor: int = 0
    deceased: int = 0
    listed: int = 0                  # after filters
    contributors: Counter = field(default_factory=Counter)   # listed patients per contributor id

    def add(self, p: PatientResult, listed: bool) -> None:
        rv = p.review
        self.patients += 1
        self.documented_cramps += rv.documented_cramps
        self.with_contributor += bool(rv.contributors)
        self.deceased += rv.deceased
        if listed:
            self._list(p)

    def _list(self, p: PatientResult) -> None:
        self.listed += 1
        self.contributors.update(set(p.contributor_ids))

    def merged(self, other: Summary) -> Summary:
        """Two partial summaries as one (a distributed run sums its partitions' summaries)."""
        return Summary(*(a + b for a, b in zip(astuple_shallow(self), astuple_shallow(other), strict=True)))

    @classmethod
    def of(cls, reviewed: Iterable[PatientResult], selected: Iterable[PatientResult] | None) -> Summary:
        summary = cls()
        for p in reviewed:
            summary.add(p, listed=selected is None)
        for p in selected or ():
            summary._list(p)
        return summary


@dataclass
class BatchResult:
    """A run's outcome. `reviewed` (and `selected`) may be lists or `PatientRows` on disk; `summary` holds the
    counts the reports need (computed by the runner; `Summary.of` for a result built by hand)."""

    as_of: datetime
    knowledge_version: str
    reviewed: Sequence[PatientResult] = field(default_factory=list)   # every patient, sorted by reference
    bad_records: list[BadRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)             # run-level data-quality warnings
    stats: Stats = field(default_factory=Stats)
    selected: Sequence[PatientResult] | None = None               # after filters; None = all
    filters: dict = field(default_factory=dict)                   # {"onlyDocumentedCramps": …, "contributors": […]}
    summary: Summary | None = None
    export_errors: list[BadRecord] = field(default_factory=list)  # OperationOutcomes of the manifest's `error`
    non_fhir_files: list = field(default_factory=list)           # inputs.NonFhirFile: read as such, not as bad

    @property
    def patients(self) -> Sequence[PatientResult]:
        return self.reviewed if self.selected is None else self.selected

    def get_summary(self) -> Summary:
        if self.summary is None:
            self.summary = Summary.of(self.reviewed, self.selected)
        return self.summary
