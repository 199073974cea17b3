"""The values the batch passes between its steps: bad records, per-patient results, the whole run."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

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


@dataclass
class BatchResult:
    as_of: datetime
    knowledge_version: str
    reviewed: list[PatientResult] = field(default_factory=list)   # every patient, sorted by reference
    bad_records: list[BadRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)             # run-level data-quality warnings
    stats: Stats = field(default_factory=Stats)
    selected: list[PatientResult] | None = None                   # after filters; None = all
    filters: dict = field(default_factory=dict)                   # {"onlyDocumentedCramps": …, "contributors": […]}

    @property
    def patients(self) -> list[PatientResult]:
        return self.reviewed if self.selected is None else self.selected
