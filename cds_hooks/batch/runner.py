"""Run a batch review: inputs -> (parallel) facts -> the engine's `evaluate` per patient -> BatchResult.

Every input kind ends in the engine the live service uses: Bundle files and per-patient FHIR searches
go through `plugin.review`; ndjson goes through `plugin.review.facts_of` into `PatientRecord`s that
`plugin.rules.evaluate` reviews. Work is split into tasks (one per JSON file, one per ndjson chunk);
with `workers > 1` they run in a process pool, and their results are merged in task order, so the
report is identical for any number of workers.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cds_hooks.batch.bundles import JsonResult, JsonTask, process_json_file, review_resources
from cds_hooks.batch.errors import InputError
from cds_hooks.batch.fhir_source import FhirOptions, FhirSource, public_url
from cds_hooks.batch.inputs import Inputs, discover
from cds_hooks.batch.model import BadRecord, BatchResult, PatientResult
from cds_hooks.batch.progress import Progress
from cds_hooks.batch.stream import (
    DEFAULT_CHUNK_BYTES,
    Chunk,
    ChunkResult,
    StreamState,
    load_medications,
    merge_into,
    plan_chunks,
    process_chunk,
)
from plugin import ReviewOptions, default_knowledge, review
from plugin.knowledge import Knowledge
from plugin.record import PatientRecord
from plugin.rules import evaluate

LOOSE_SOURCE = "loose resource files"


@dataclass(frozen=True)
class RunConfig:
    as_of: datetime
    options: ReviewOptions = field(default_factory=ReviewOptions)
    knowledge: Knowledge | None = None
    workers: int = 1
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    fhir: FhirOptions = field(default_factory=FhirOptions)
    only_documented_cramps: bool = False
    contributors: tuple[str, ...] = ()      # keep patients with any of these (empty: no filter)


@dataclass(frozen=True)
class _WorkerState:
    stream: StreamState
    as_of: datetime
    options: ReviewOptions


_STATE: _WorkerState | None = None


def _init_worker(state: _WorkerState) -> None:
    global _STATE
    _STATE = state


def _execute(task: Chunk | JsonTask, state: _WorkerState) -> ChunkResult | JsonResult:
    if isinstance(task, Chunk):
        return process_chunk(task, state.stream)
    return process_json_file(task, now=state.as_of, options=state.options, knowledge=state.stream.knowledge)


def _run_in_worker(task: Chunk | JsonTask) -> ChunkResult | JsonResult:
    assert _STATE is not None
    return _execute(task, _STATE)


def _task_size(task: Chunk | JsonTask) -> int:
    return task.size


class _Merger:
    """Folds task results in task order into per-(export, patient) records and per-file reviews."""

    def __init__(self, tasks: list[Chunk | JsonTask]) -> None:
        self.tasks = tasks
        self.records: dict[tuple[str, str], PatientRecord] = {}
        self.reviews: list[PatientResult] = []
        self.loose: list[dict] = []
        self.bad: list[BadRecord] = []
        self.unattributed: Counter[str] = Counter()
        self.skipped_json: list[str] = []
        self.resources = 0
        self.lines = 0
        self._file_lines: Counter[str] = Counter()
        self._per_export: dict[str, dict[str, PatientRecord]] = {}

    @property
    def patients(self) -> int:
        return sum(len(r) for r in self._per_export.values()) + len(self.reviews)

    def add(self, result: ChunkResult | JsonResult) -> None:
        task = self.tasks[result.index]
        self.resources += result.resources
        if isinstance(result, JsonResult):
            self.reviews.extend(PatientResult(rv, result.label) for rv in result.reviews)
            self.loose.extend(result.loose)
            self.bad.extend(result.bad)
            if result.skipped:
                self.skipped_json.append(result.skipped)
            return
        assert isinstance(task, Chunk)
        offset = self._file_lines[task.path]
        self._file_lines[task.path] += result.lines
        self.lines += result.lines
        self.bad.extend(BadRecord(task.label, offset + n, error) for n, error in result.bad)
        self.unattributed.update(result.unattributed)
        merge_into(self._per_export.setdefault(task.export, {}), result.records)

    def exports(self) -> dict[str, dict[str, PatientRecord]]:
        return self._per_export


def _run_tasks(tasks: list[Chunk | JsonTask], state: _WorkerState, workers: int, progress: Progress) -> _Merger:
    merger = _Merger(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            result = _execute(task, state)
            merger.add(result)
            progress.advance(_task_size(task), resources=result.resources, patients=merger.patients)
        return merger
    pending: dict[int, ChunkResult | JsonResult] = {}
    next_index = 0
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_worker,
                             initargs=(state,)) as pool:
        futures = {pool.submit(_run_in_worker, task): task for task in tasks}
        try:
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                nbytes = resources = 0
                for future in done:
                    result = future.result()
                    pending[result.index] = result
                    nbytes += _task_size(futures[future])
                    resources += result.resources
                while next_index in pending:
                    merger.add(pending.pop(next_index))
                    next_index += 1
                progress.advance(nbytes, resources=resources, patients=merger.patients)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return merger


def _fetch_servers(inputs: Inputs, config: RunConfig, knowledge: Knowledge, stack: ExitStack,
                   progress: Progress) -> tuple[list[PatientResult], int]:
    """Export from (or search) each FHIR server input; downloaded files join `inputs.ndjson`."""
    searched: list[PatientResult] = []
    resources_read = 0
    for url in inputs.urls:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cramp-export-")))
        source = FhirSource(url, config.fhir, knowledge, note=progress.note)
        fetched = source.fetch(folder)
        inputs.ndjson.extend(fetched.files)
        inputs.bad_records.extend(fetched.bad_records)
        inputs.warnings.extend(fetched.warnings)
        for patient, resources in fetched.patients:
            resources_read += len(resources)
            rv = review(resources, now=config.as_of, options=config.options, knowledge=knowledge,
                        context={"patientId": patient.split("/", 1)[1]})
            searched.append(PatientResult(rv, public_url(url)))
    return searched, resources_read


def _select(results: list[PatientResult], config: RunConfig) -> list[PatientResult] | None:
    if not (config.only_documented_cramps or config.contributors):
        return None
    wanted = set(config.contributors)
    return [r for r in results
            if (not config.only_documented_cramps or r.review.documented_cramps)
            and (not wanted or wanted.intersection(r.contributor_ids))]


def run_review(args: list[str], config: RunConfig, progress: Progress | None = None) -> BatchResult:
    """Review every patient in the inputs named by `args` (paths or FHIR base URLs)."""
    progress = progress or Progress()
    knowledge = config.knowledge or default_knowledge()
    result = BatchResult(as_of=config.as_of, knowledge_version=knowledge.version)
    inputs = discover(args)
    with ExitStack() as stack:
        searched, searched_resources = _fetch_servers(inputs, config, knowledge, stack, progress)
        if not (inputs.json_files or inputs.ndjson or searched or inputs.bad_records):
            raise InputError(f"no FHIR input found in: {', '.join(args)}")
        resolvers, med_bad, med_resources = load_medications(inputs.ndjson)
        tasks: list[Chunk | JsonTask] = [
            JsonTask(n, str(path), str(path), path.stat().st_size, path in inputs.scanned_json)
            for n, path in enumerate(inputs.json_files)]
        tasks += plan_chunks(inputs.ndjson, config.chunk_bytes, first_index=len(tasks))
        skipped = [f for f in inputs.ndjson if not f.relevant]
        state = _WorkerState(StreamState(knowledge, resolvers, config.options.validate, config.as_of), config.as_of, config.options)
        progress.start(sum(_task_size(t) for t in tasks))
        merger = _run_tasks(tasks, state, max(1, config.workers), progress)

    reviewed = list(searched) + merger.reviews
    for export, records in merger.exports().items():
        for ref in records:
            rv = evaluate(records[ref], now=config.as_of, knowledge=knowledge, options=config.options)
            reviewed.append(PatientResult(rv, export))
    if merger.loose:
        for rv in review_resources(merger.loose, now=config.as_of, options=config.options, knowledge=knowledge):
            reviewed.append(PatientResult(rv, LOOSE_SOURCE))
    reviewed.sort(key=lambda r: (r.patient, r.source))
    result.reviewed = reviewed
    result.selected = _select(reviewed, config)
    result.filters = {"onlyDocumentedCramps": config.only_documented_cramps,
                      "contributors": list(config.contributors)}

    result.bad_records = sorted(
        [*inputs.bad_records, *(BadRecord(label, n, e) for label, n, e in med_bad), *merger.bad],
        key=BadRecord.sort_key)
    result.warnings = list(inputs.warnings) + merger.skipped_json
    if merger.unattributed:
        result.warnings.append("skipped resources with no patient reference: " + ", ".join(
            f"{n} {t}" for t, n in sorted(merger.unattributed.items())))
    if skipped:
        result.warnings.append(f"{len(skipped)} ndjson file(s) of types the review does not read were skipped: "
                               + ", ".join(sorted({f.type_hint or '' for f in skipped})))
    sources: dict[str, list[str]] = {}
    for r in reviewed:
        sources.setdefault(r.patient, []).append(r.source)
    for patient, where in sorted(sources.items()):
        if patient and len(where) > 1:
            result.warnings.append(f"{patient} appears in {len(where)} inputs ({', '.join(where)}): "
                                   "reviewed separately in each")
    stats = result.stats
    stats.resources = merger.resources + searched_resources + med_resources
    stats.lines = merger.lines
    stats.bytes = sum(_task_size(t) for t in tasks)
    stats.files = len(inputs.json_files) + len(inputs.ndjson)
    stats.skipped_files = len(skipped)
    return result


def default_workers() -> int:
    return os.cpu_count() or 1

