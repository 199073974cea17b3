"""Stream Bulk Data ndjson into compact per-patient facts, one byte-range chunk at a time.

Memory model: a line is parsed, turned into facts (`plugin.review.facts_of`) and dropped; only the
facts (`plugin.record.PatientRecord`) are kept. Medications (for `medicationReference`) are read first,
in a pass over the Medication files only, and kept in a trimmed form in a `plugin.fhir_read.Resolver`.

A plain file is split into chunks of about `chunk_bytes` that start and end on a line boundary, so
workers can read them in parallel; a `.gz` file is one chunk. A chunk's result carries its line count
so the parent turns chunk-relative line numbers into file line numbers. Results merged in chunk
order are identical to a single sequential pass, whatever the number of workers.
"""
from __future__ import annotations

import gzip
import itertools
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import orjson

from cds_hooks.batch.inputs import NdjsonFile
from plugin.fhir_read import MEDICATION_TYPES, Resolver, local_reference, subject_of
from plugin.knowledge import Knowledge
from plugin.record import PatientRecord
from plugin.review import deceased_of, facts_of
from plugin.validation import validation_problem

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024  # one read per range: small enough to keep the heap flat
FACT_TYPES = frozenset({"Condition", "Observation", *MEDICATION_TYPES})
_BOM = b"\xef\xbb\xbf"
_MEDICATION_KEYS = ("resourceType", "id", "code", "ingredient")
_LOINC_LIKE = re.compile(rb'"([0-9]{1,7}-[0-9])"')  # every JSON string shaped like a LOINC code


@dataclass(frozen=True)
class Chunk:
    index: int          # position in the run's global order (files in order, chunks by offset)
    export: str
    path: str
    label: str
    gzipped: bool
    start: int
    end: int            # exclusive; for .gz the compressed size (the file is read whole)
    type_hint: str | None = None  # the file's one resource type, when known

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class ChunkResult:
    index: int
    lines: int = 0                                   # every line of the chunk, blank ones included
    resources: int = 0
    records: dict[str, PatientRecord] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line within the chunk, 1-based; error)
    unattributed: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class StreamState:
    """What every worker needs: the knowledge, the Medications of each export, whether to validate, and the
    as-of date (records are kept compact: only what the rules can use as of then)."""

    knowledge: Knowledge
    resolvers: dict[str, Resolver]
    validate: bool
    as_of: datetime | None = None

    @cached_property
    def lab_codes(self) -> frozenset[bytes]:
        """The LOINCs the rules read, as bytes: most Observations carry none of them."""
        return frozenset(code.encode() for code in self.knowledge.lab_loincs)


def plan_chunks(files: list[NdjsonFile], chunk_bytes: int = DEFAULT_CHUNK_BYTES, first_index: int = 0) -> list[Chunk]:
    """Byte ranges over the files the main pass reads, each from a line start to just after a newline.

    Files of a type the engine does not read, and Medication files (read by `load_medications`), are left out.
    """
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    chunks: list[Chunk] = []
    for f in files:
        if not f.relevant or f.type_hint == "Medication":
            continue
        size = os.path.getsize(f.path)
        if f.gzipped:
            bounds = [0, size]
        else:
            bounds = [0]
            with open(f.path, "rb") as fh:
                target = chunk_bytes
                while target < size:
                    fh.seek(target)
                    fh.readline()          # finish the line that `target` falls in
                    cut = fh.tell()
                    if cut >= size:
                        break
                    bounds.append(cut)
                    target = max(cut, target) + chunk_bytes
            bounds.append(size)
        for start, end in itertools.pairwise(bounds):
            chunks.append(Chunk(first_index + len(chunks), f.export, str(f.path), f.label, f.gzipped, start, end,
                                f.type_hint))
    return chunks


def iter_lines(chunk: Chunk) -> Iterator[bytes]:
    """The raw lines of a chunk, with their newline."""
    if chunk.gzipped:
        with gzip.open(chunk.path, "rb") as fh:
            yield from fh
        return
    with open(chunk.path, "rb") as fh:
        fh.seek(chunk.start)
        data = fh.read(chunk.end - chunk.start)  # one read of the range (~4 MB): far cheaper than readline
    lines = data.split(b"\n")
    last = lines.pop()  # empty when the range ends just after a newline
    for line in lines:
        yield line + b"\n"
    if last:
        yield last


def parse_line(line: bytes) -> tuple[dict | None, str | None]:
    """(resource, None) or (None, error) for one non-blank ndjson line."""
    if line.startswith(_BOM):
        line = line[3:]
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON ({str(exc)[:120]})"
    if not isinstance(resource, dict):
        return None, f"not a JSON object ({type(resource).__name__})"
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return None, "no resourceType: not a FHIR resource"
    return resource, None


def trimmed_medication(resource: dict) -> dict:
    """The parts of a Medication the engine reads (code and ingredients)."""
    return {k: resource[k] for k in _MEDICATION_KEYS if k in resource}


def load_medications(files: list[NdjsonFile]) -> tuple[dict[str, Resolver], list[tuple[str, int, str]], int]:
    """First pass: Medication resources per export -> (resolvers, bad lines (label, line, error), resources read).

    Files known to hold Medications are read whole (their bad lines are reported here); files of unknown
    type are only peeked at (`"Medication"` in the raw line) and their bad lines are reported by the main pass.
    """
    resolvers: dict[str, Resolver] = {}
    bad: list[tuple[str, int, str]] = []
    count = 0
    for f in files:
        resolver = resolvers.setdefault(f.export, Resolver())
        if f.type_hint not in ("Medication", None):
            continue
        whole = f.type_hint == "Medication"
        opener = gzip.open if f.gzipped else open
        with opener(f.path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip() or not (whole or b'"Medication"' in line):
                    continue
                resource, error = parse_line(line)
                if error:
                    if whole:
                        bad.append((f.label, n, error))
                    continue
                count += whole   # lines of other files are counted by the main pass
                if resource["resourceType"] == "Medication":
                    resolver.add(trimmed_medication(resource))
    return resolvers, bad, count


def process_chunk(chunk: Chunk, state: StreamState) -> ChunkResult:
    """Parse a chunk's lines into per-patient facts. A bad line is recorded; it never stops the chunk."""
    knowledge, validate = state.knowledge, state.validate
    resolver = state.resolvers.get(chunk.export) or Resolver()
    result = ChunkResult(chunk.index)
    records = result.records

    def record_of(ref: str) -> PatientRecord:
        rec = records.get(ref)
        if rec is None:
            rec = records[ref] = PatientRecord(patient=ref, now=state.as_of)
        return rec

    observations = chunk.type_hint == "Observation"
    lab_codes = state.lab_codes
    loinc_like = _LOINC_LIKE.findall
    n = resources = 0
    for n, line in enumerate(iter_lines(chunk), 1):
        body = line.strip()
        if not body:
            continue
        # An Observation no rule reads (vital signs, other labs: most of them) is counted, not even parsed;
        # a line not shaped like one JSON object is parsed all the same, to be reported as a bad record.
        if observations and body[0] == 0x7B and body[-1] == 0x7D and lab_codes.isdisjoint(loinc_like(body)):
            resources += 1
            continue
        resource, error = parse_line(body)
        if error:
            result.bad.append((n, error))
            continue
        resources += 1
        rtype = resource["resourceType"]
        try:
            if rtype == "Patient":
                ref = local_reference(resource)
                if ref is None:
                    result.bad.append((n, "Patient without an id"))
                    continue
                rec = record_of(ref)
                deceased = deceased_of(resource)
                if deceased and not rec.deceased:
                    rec.deceased = deceased
            elif rtype in FACT_TYPES:
                subject = subject_of(resource, resolver)
                if not subject or not subject.startswith("Patient/"):
                    result.unattributed[rtype] += 1
                    continue
                rec = record_of(subject)  # every patient seen is reviewed, even one with no facts
                facts = facts_of(resource, knowledge, resolver, rec.warnings, current_only=True)
                # Strict validation for the medications and conditions that count; labs are read for their
                # numbers, and validating every one of them would be most of the batch's time.
                if validate and rtype != "Observation" and facts:
                    problem = validation_problem(resource)
                    if problem:
                        ref = local_reference(resource) or rtype
                        rec.warnings.append(f"{ref} is not valid FHIR R4 ({problem}); read anyway")
                for fact in facts:
                    rec.add(fact)
        except Exception as exc:  # noqa: BLE001 - one resource must never stop the review
            result.bad.append((n, f"{rtype} could not be reviewed ({type(exc).__name__})"))
    result.lines, result.resources = n, resources
    return result
