"""Run a batch review: inputs -> (parallel) facts -> the engine's `evaluate` per patient -> BatchResult.

Every input kind ends in the engine the live service uses: Bundle files and per-patient FHIR searches
go through `plugin.review`; ndjson goes through the two steps every driver shares (`steps.line_facts` per
line, `steps.review_patient` per patient; the Spark driver in `cds_hooks.batch.spark` runs the same two).
This module is the single-machine driver. Work is split into tasks (one per JSON file, one per ndjson chunk);
with `workers > 1` they run in a process pool, and their results are taken in task order, so the
report is identical for any number of workers.

Memory: per-patient data does not stay in the parent. Task results are spilled to shard files on disk
(shards.py) as they arrive; then each shard is merged, reviewed and written back sorted, and the result's
`reviewed` rows are read from those files (`PatientRows`) by the reports, one patient at a time.
"""
from __future__ import annotations

import gc
import itertools
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cds_hooks.batch.bundles import JsonResult, JsonTask, process_json_file, review_resources
from cds_hooks.batch.errors import InputError
from cds_hooks.batch.fhir_source import FhirOptions, FhirSource, public_url
from cds_hooks.batch.inputs import Inputs, NdjsonFile, discover
from cds_hooks.batch.model import BadRecord, BatchResult, PatientResult, PatientRows, Summary, row_key
from cds_hooks.batch.progress import Progress
from cds_hooks.batch.shards import SHARDS, Spill, pack_records
from cds_hooks.batch.steps import review_patient
from cds_hooks.batch.stream import (
    DEFAULT_CHUNK_BYTES,
    Chunk,
    ChunkResult,
    StreamState,
    load_medications,
    plan_chunks,
    process_chunk,
)
from plugin import ReviewOptions, default_knowledge, review
from plugin.knowledge import Knowledge

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
    shards: int = SHARDS


@dataclass
class _Packed:
    """A chunk's result with its per-patient records already pickled by shard (the parent just appends them)."""

    result: ChunkResult
    shards: dict[int, bytes]
    patients: int

    @property
    def index(self) -> int:
        return self.result.index

    @property
    def resources(self) -> int:
        return self.result.resources


_STATE: _WorkerState | None = None


def _init_worker(state: _WorkerState) -> None:
    global _STATE
    _STATE = state
    gc.freeze()   # the knowledge and the Medications live as long as the worker: no GC walks over them


def _execute(task: Chunk | JsonTask, state: _WorkerState, pack: bool = True) -> _Packed | ChunkResult | JsonResult:
    """Run one task. In a worker (`pack`), a chunk's records are pickled by shard there, not in the parent."""
    if isinstance(task, Chunk):
        result = process_chunk(task, state.stream)
        if not pack:
            return result
        packed = pack_records(task.export, task.index, result.records, state.shards)
        patients, result.records = len(result.records), {}
        return _Packed(result, packed, patients)
    return process_json_file(task, now=state.as_of, options=state.options, knowledge=state.stream.knowledge)


def _run_in_worker(task: Chunk | JsonTask) -> _Packed | JsonResult:
    assert _STATE is not None
    return _execute(task, _STATE)


def _task_size(task: Chunk | JsonTask) -> int:
    return task.size


class _Merger:
    """Takes task results in task order: per-patient parts go to the spill, small run-level things stay here."""

    def __init__(self, tasks: list[Chunk | JsonTask], spill: Spill) -> None:
        self.tasks = tasks
        self.spill = spill
        self.loose: list[dict] = []
        self.bad: list[BadRecord] = []
        self.unattributed: Counter[str] = Counter()
        self.skipped_json: list[str] = []
        self.resources = 0
        self.lines = 0
        self.patients = 0          # for the progress bar: Bundle patients + records of Patient files so far
        self._file_lines: Counter[str] = Counter()

    def add(self, result: _Packed | ChunkResult | JsonResult) -> None:
        task = self.tasks[result.index]
        self.resources += result.resources
        if isinstance(result, JsonResult):
            self.spill.add_results(PatientResult(rv, result.label) for rv in result.reviews)
            self.patients += len(result.reviews)
            self.loose.extend(result.loose)
            self.bad.extend(result.bad)
            if result.skipped:
                self.skipped_json.append(result.skipped)
            return
        assert isinstance(task, Chunk)
        packed = result if isinstance(result, _Packed) else None
        if packed is not None:
            result = packed.result
        offset = self._file_lines[task.path]
        self._file_lines[task.path] += result.lines
        self.lines += result.lines
        self.bad.extend(BadRecord(task.label, offset + n, error) for n, error in result.bad)
        self.unattributed.update(result.unattributed)
        if packed is not None:
            self.spill.add_packed(packed.shards)
            patients = packed.patients
        else:
            self.spill.add_records(task.export, task.index, result.records)
            patients = len(result.records)
        if task.type_hint == "Patient":
            self.patients += patients


def _run_tasks(tasks: list[Chunk | JsonTask], state: _WorkerState, workers: int, progress: Progress,
               spill: Spill) -> _Merger:
    merger = _Merger(tasks, spill)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            result = _execute(task, state, pack=False)
            merger.add(result)
            progress.advance(_task_size(task), resources=result.resources, patients=merger.patients)
        return merger
    # A bounded window of tasks in flight, and each result dropped (with its future) once taken: results that
    # arrive ahead of a slow task wait in `pending`, so at most `window` results are ever held here.
    window = 4 * workers
    pending: dict[int, _Packed | JsonResult] = {}
    in_flight: dict = {}
    queue = iter(tasks)
    next_index = 0
    spill.flush()
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_worker,
                             initargs=(state,)) as pool:
        try:
            while True:
                while len(in_flight) + len(pending) < window and (task := next(queue, None)) is not None:
                    in_flight[pool.submit(_run_in_worker, task)] = task
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                nbytes = resources = 0
                for future in done:
                    task = in_flight.pop(future)
                    result = future.result()
                    pending[result.index] = result
                    nbytes += _task_size(task)
                    resources += result.resources
                del done, future, result
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
        inputs.export_errors.extend(fetched.export_errors)
        inputs.warnings.extend(fetched.warnings)
        for patient, resources in fetched.patients:
            resources_read += len(resources)
            rv = review(resources, now=config.as_of, options=config.options, knowledge=knowledge,
                        context={"patientId": patient.split("/", 1)[1]})
            searched.append(PatientResult(rv, public_url(url)))
    return searched, resources_read


def listed_filter(config: RunConfig) -> Callable[[PatientResult], bool] | None:
    """Which patients are listed (None: all). Every driver lists by this."""
    if not (config.only_documented_cramps or config.contributors):
        return None
    only, wanted = config.only_documented_cramps, frozenset(config.contributors)
    return lambda r: ((not only or r.review.documented_cramps)
                      and (not wanted or not wanted.isdisjoint(r.contributor_ids)))


def _review_shards(spill: Spill, rows_dir: Path, config: RunConfig, knowledge: Knowledge,
                   keep: Callable[[PatientResult], bool] | None) -> tuple[list[Path], Summary, list[str]]:
    """Review each shard's patients, write its rows sorted; the summary and the 'appears in N inputs' warnings."""
    rows_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    summary = Summary()
    repeated: list[tuple[str, str]] = []
    state = StreamState(knowledge, {}, config.options.validate, config.as_of, config.options)
    for k, rows, parts in spill.shards_read_back():
        rows.extend(review_patient(export, ref, patient_parts, state) for (export, ref), patient_parts in parts.items())
        del parts
        rows.sort(key=row_key)
        path = rows_dir / f"rows-{k:03d}.pickle"
        with open(path, "wb") as fh:
            for p in rows:
                pickle.dump(p, fh, pickle.HIGHEST_PROTOCOL)
                summary.add(p, keep is None or keep(p))
        files.append(path)
        for patient, group in itertools.groupby(rows, key=lambda r: r.patient):
            where = [r.source for r in group]
            if patient and len(where) > 1:
                repeated.append((patient, repeated_warning(patient, where)))
    repeated.sort()
    return files, summary, [text for _, text in repeated]


def repeated_warning(patient: str, sources: list[str]) -> str:
    """The run-level warning for a patient found in several inputs (`sources` in report order)."""
    return f"{patient} appears in {len(sources)} inputs ({', '.join(sources)}): reviewed separately in each"


def run_warnings(inputs: list[str], skipped_json: list[str], unattributed: Counter[str],
                 skipped: list[NdjsonFile], repeated: list[str]) -> list[str]:
    """The run's data-quality warnings, in the report's order (shared by every driver)."""
    warnings = [*inputs, *skipped_json]
    if unattributed:
        warnings.append("skipped resources with no patient reference: " + ", ".join(
            f"{n} {t}" for t, n in sorted(unattributed.items())))
    if skipped:
        warnings.append(f"{len(skipped)} ndjson file(s) of types the review does not read were skipped: "
                        + ", ".join(sorted({f.type_hint or '' for f in skipped})))
    return warnings + repeated


def run_review(args: list[str], config: RunConfig, progress: Progress | None = None) -> BatchResult:
    """Review every patient in the inputs named by `args` (paths or FHIR base URLs).

    The result's `reviewed` (and `selected`) rows live in a temporary directory that is removed when the
    result is garbage-collected; iterate them as often as needed (each pass reads them from disk).
    """
    progress = progress or Progress()
    knowledge = config.knowledge or default_knowledge()
    gc.collect()
    gc.freeze()   # long-lived objects (modules, knowledge): out of the cyclic GC's way
    result = BatchResult(as_of=config.as_of, knowledge_version=knowledge.version)
    inputs = discover(args)
    workdir = tempfile.TemporaryDirectory(prefix="cramp-review-")
    try:
        spill = Spill(Path(workdir.name) / "spill")
        with ExitStack() as stack:
            stack.callback(spill.close)
            searched, searched_resources = _fetch_servers(inputs, config, knowledge, stack, progress)
            if not (inputs.json_files or inputs.ndjson or searched or inputs.bad_records or inputs.export_errors):
                raise InputError(f"no FHIR input found in: {', '.join(args)}")
            spill.add_results(searched)
            del searched
            resolvers, med_bad, med_resources = load_medications(inputs.ndjson)
            tasks: list[Chunk | JsonTask] = [
                JsonTask(n, str(path), str(path), path.stat().st_size, path in inputs.scanned_json)
                for n, path in enumerate(inputs.json_files)]
            tasks += plan_chunks(inputs.ndjson, config.chunk_bytes, first_index=len(tasks))
            skipped = [f for f in inputs.ndjson if not f.relevant]
            state = _WorkerState(StreamState(knowledge, resolvers, config.options.validate, config.as_of,
                                             config.options),
                                 config.as_of, config.options, spill.shards)
            progress.start(sum(_task_size(t) for t in tasks))
            merger = _run_tasks(tasks, state, max(1, config.workers), progress, spill)
            del state, resolvers
        if merger.loose:
            spill.add_results(PatientResult(rv, LOOSE_SOURCE) for rv in review_resources(
                merger.loose, now=config.as_of, options=config.options, knowledge=knowledge))
            merger.loose = []
        keep = listed_filter(config)
        files, summary, repeated = _review_shards(spill, Path(workdir.name) / "rows", config, knowledge, keep)
    except BaseException:
        workdir.cleanup()
        raise
    result.reviewed = PatientRows(files, summary.patients, owner=workdir)
    result.selected = None if keep is None else PatientRows(files, summary.listed, keep, owner=workdir)
    result.summary = summary
    result.filters = {"onlyDocumentedCramps": config.only_documented_cramps,
                      "contributors": list(config.contributors)}

    result.bad_records = sorted(
        [*inputs.bad_records, *(BadRecord(label, n, e) for label, n, e in med_bad), *merger.bad],
        key=BadRecord.sort_key)
    result.warnings = run_warnings(inputs.warnings, merger.skipped_json, merger.unattributed, skipped, repeated)
    result.export_errors, result.non_fhir_files = sorted(inputs.export_errors), sorted(inputs.non_fhir)
    stats = result.stats
    stats.resources = merger.resources + searched_resources + med_resources
    stats.lines = merger.lines
    stats.bytes = sum(_task_size(t) for t in tasks)
    stats.files = len(inputs.json_files) + len(inputs.ndjson)
    stats.skipped_files = len(skipped)
    return result


def default_workers() -> int:
    return os.cpu_count() or 1
