"""Batch per-line breakdown: where one worker's time per ndjson line goes, next to the orjson parse FLOOR.

In this process, one thread, over the first chunks of each file of the generated 10,000-patient export (the one
benchmarks.batch_throughput uses; built on first use), read from the page cache. Each stage is its own pass over
the same chunks, so its figure is what that stage costs per line:

  read + split     the chunk's byte range read and cut into lines (``stream.chunk_lines``)
  pre-filter       the Observation lines tested for a rule's LOINC without parsing (``steps.is_unread_observation``)
  parse kept       orjson.loads of the lines the pre-filter keeps (what the batch must parse)
  FLOOR            orjson.loads of every line (what benchmarks.batch_throughput's floor does per line)
  whole chunk      ``stream.process_chunk`` as the batch runs it (the collector paused, as in the batch run)
  whole, GC on     the same with the cyclic garbage collector left on

Figures are µs per line (all lines of the chunks). No target here: batch_throughput holds the 60% target; this
says what limits it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable
from unittest import mock

import orjson

from benchmarks.common import Report, Table, print_standalone
from benchmarks.generate import bulk_export, load_templates

PATIENTS = 10_000
BYTES_PER_TYPE = 48 << 20   # the first chunks of each file, up to this many bytes


def _setup(patients: int, bytes_per_type: int):
    from datetime import UTC, datetime

    from cds_hooks.batch.inputs import discover
    from cds_hooks.batch.steps import StreamState
    from cds_hooks.batch.stream import load_medications, plan_chunks
    from plugin import ReviewOptions, default_knowledge

    export = bulk_export(patients, templates=load_templates())
    inputs = discover([str(export.folder)])
    resolvers, _, _ = load_medications(inputs.ndjson)
    chunks, taken = [], {}
    for chunk in plan_chunks(inputs.ndjson):
        if taken.get(chunk.path, 0) < bytes_per_type:
            taken[chunk.path] = taken.get(chunk.path, 0) + chunk.size
            chunks.append(chunk)
    state = StreamState(default_knowledge(), resolvers, True, datetime.now(UTC), ReviewOptions())
    return export, chunks, state


def _timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(patients: int = PATIENTS, bytes_per_type: int = BYTES_PER_TYPE, repeats: int = 3) -> Report:
    started = time.perf_counter()
    from cds_hooks.batch import stream
    from cds_hooks.batch.steps import is_unread_observation
    from cds_hooks.batch.stream import chunk_lines, process_chunk

    report = Report("Batch per-line breakdown (one worker, in-process)", "python -m benchmarks.batch_lines")
    export, chunks, state = _setup(patients, bytes_per_type)
    lines = {c.index: chunk_lines(c) for c in chunks}
    n_lines = sum(len(v) for v in lines.values())
    observation_chunks = [c for c in chunks if c.type_hint == "Observation"]
    codes = state.lab_codes
    kept = [line for c in chunks for line in lines[c.index]
            if line.strip() and not (c.type_hint == "Observation" and is_unread_observation(line.strip(), codes))]

    def read_split() -> None:
        for c in chunks:
            chunk_lines(c)

    def prefilter() -> None:
        for c in observation_chunks:
            for line in lines[c.index]:
                is_unread_observation(line.strip(), codes)

    def parse(selection: list[bytes]) -> Callable[[], None]:
        def go() -> None:
            for line in selection:
                orjson.loads(line)
        return go

    every = [line for c in chunks for line in lines[c.index] if line.strip()]

    unvalidated = dataclasses.replace(state, validate=False)

    def whole(paused: bool, validate: bool = True) -> Callable[[], None]:
        def go() -> None:
            # process_chunk pauses the collector itself; the GC-on variant swaps the pause for nothing
            swap = contextlib.nullcontext() if paused else mock.patch.object(stream, "collector_paused",
                                                                             contextlib.nullcontext)
            with swap:
                for c in chunks:
                    process_chunk(c, state if validate else unvalidated)
        return go

    gc.collect()
    stages = [("read + split", read_split), ("pre-filter (Observation lines)", prefilter),
              ("parse kept lines", parse(kept)), ("FLOOR: parse every line", parse(every)),
              ("whole chunk (collector paused)", whole(True)), ("whole chunk, GC on", whole(False)),
              ("whole chunk, --no-validate", whole(True, validate=False))]
    seconds = {name: _timed(fn, repeats) for name, fn in stages}
    floor = seconds["FLOOR: parse every line"]
    table = Table(["stage", "µs per line", "vs floor"], [],
                  title=f"{n_lines:,} lines ({len(kept):,} parsed by the batch) from {len(chunks)} chunks")
    report.tables.append(table)
    for name, _ in stages:
        table.rows.append([name, f"{seconds[name] * 1e6 / n_lines:.2f}", f"{seconds[name] / floor:.2f}x"])
    whole_s = seconds["whole chunk (collector paused)"]
    report.notes.append(f"one worker reaches {floor / whole_s:.0%} of the floor on these chunks (floor time / whole "
                        f"chunk time; {floor / seconds['whole chunk, --no-validate']:.0%} without validation); best "
                        f"of {repeats} passes per stage")
    report.notes.append(f"export: {export.folder.name}, first {bytes_per_type >> 20} MiB of each file")
    report.elapsed_s = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_lines", description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=PATIENTS)
    parser.add_argument("--mib", type=int, default=BYTES_PER_TYPE >> 20, help="MiB read from each file")
    args = parser.parse_args(argv)
    print_standalone(run, args.patients, args.mib << 20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
