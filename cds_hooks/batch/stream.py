"""Stream Bulk Data ndjson into compact per-patient facts, one byte-range chunk at a time.

Memory model: a line is parsed, turned into facts (`steps.line_facts`, the step every driver shares) and
dropped; only the facts (`plugin.record.PatientRecord`, folded by `steps.add_line`) are kept. Medications
(for `medicationReference`) are read first, in a pass over the Medication files only, and kept in a trimmed
form in a `plugin.fhir_read.Resolver`.

A plain file is split into chunks of about `chunk_bytes` that start and end on a line boundary, so
workers can read them in parallel; a `.gz` file is one chunk. A chunk's result carries its line count
so the parent turns chunk-relative line numbers into file line numbers. Results merged in chunk
order are identical to a single sequential pass, whatever the number of workers.
"""
from __future__ import annotations

import gzip
import itertools
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cds_hooks.batch.inputs import NdjsonFile
from cds_hooks.batch.steps import (
    StreamState,
    add_line,
    line_facts,
    parse_line,
    trimmed_medication,
)
from cds_hooks.gc_policy import collector_paused
from plugin.fhir_read import Resolver
from plugin.record import PatientRecord

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024  # one read per range: small enough to keep the heap flat


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


def chunk_lines(chunk: Chunk) -> Iterable[bytes]:
    """The lines of a chunk, without their newline (`steps.line_facts` strips a line anyway), blank ones kept.

    A plain range is read in one go and split once: no per-line copy (putting the newline back and stripping
    it again cost more than parsing the lines that matter). A `.gz` file is streamed line by line.
    """
    if chunk.gzipped:
        return _gzip_lines(chunk.path)
    with open(chunk.path, "rb") as fh:
        fh.seek(chunk.start)
        data = fh.read(chunk.end - chunk.start)  # one read of the range (~4 MB): far cheaper than readline
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()  # the range ends just after a newline
    return lines


def _gzip_lines(path: str) -> Iterator[bytes]:
    with gzip.open(path, "rb") as fh:
        yield from fh


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
    """A chunk's lines through `steps.line_facts`, folded into per-patient partial records (`steps.add_line`).

    A bad line is recorded; it never stops the chunk.
    """
    result = ChunkResult(chunk.index)
    records, bad, unattributed = result.records, result.bad, result.unattributed
    export, as_of = chunk.export, state.as_of
    observations = chunk.type_hint == "Observation"
    n = resources = 0
    with collector_paused():  # a chunk's lines are parsed and dropped one by one: nothing for the cyclic GC
        for n, line in enumerate(chunk_lines(chunk), 1):
            facts = line_facts(line, export, state, observations=observations)
            resources += facts.resource
            if facts.error:
                bad.append((n, facts.error))
            if facts.unattributed:
                unattributed[facts.unattributed] += 1
            add_line(records, facts, as_of)
    result.lines, result.resources = n, resources
    return result
