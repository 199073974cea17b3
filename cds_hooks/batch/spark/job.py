"""The Spark driver: Bulk Data ndjson exports -> the `findings`, `patients`, `bad_records` and `run` tables.

It runs the batch's two pure steps (`cds_hooks.batch.steps`) and nothing of its own between a line and a
finding, so a finding in the table is what `cramp-cds review` (and the live card) says. The plan:

1. find the inputs with the single-machine rules (`inputs.discover`) over Hadoop file systems (`HadoopPath`);
2. read the relevant files as text; the JVM tags each line with its file, its block (`input_file_block_start`)
   and a position (`monotonically_increasing_id`, consecutive within a block);
3. Medications (Medication files, and lines naming `"Medication"` in files of unknown type) are collected to
   one `Resolver` per export and broadcast with the knowledge in the `StreamState`;
4. a JVM aggregate per block: its line count and first position (for bad records' line numbers), and the
   Observations without one of the rules' LOINCs, which are dropped there, before they cross into Python;
5. one Python pass: `steps.line_facts` per line, `steps.add_line` per block -> partial records keyed by
   (export, patient) with the order key (file, block); bad lines; per-block counts (data, not accumulators:
   a retried task never counts twice);
6. only those compact partial records are shuffled, by (export, patient), into `steps.review_patient`;
7. the tables are written sorted, the run's counts come from the same `Summary` the reports use.
"""
from __future__ import annotations

import itertools
import json
import operator
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial, reduce
from urllib.parse import unquote, urlsplit

import orjson
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cds_hooks.batch.bundles import skipped_not_fhir
from cds_hooks.batch.errors import InputError
from cds_hooks.batch.inputs import Inputs, NdjsonFile, discover, is_url
from cds_hooks.batch.model import PatientResult, Summary
from cds_hooks.batch.runner import RunConfig, listed_filter, repeated_warning, run_warnings
from cds_hooks.batch.spark.hadoop_path import HadoopFs
from cds_hooks.batch.spark.tables import (
    BAD_RECORD,
    BAD_RECORDS,
    EXPORT_ERROR,
    FINDINGS,
    PATIENTS,
    RUN,
    finding_rows,
    patient_row,
    table_format,
    write_table,
)
from cds_hooks.batch.steps import (
    StreamState,
    add_line,
    line_facts,
    parse_line,
    review_patient,
    trimmed_medication,
)
from plugin import default_knowledge
from plugin.fhir_read import Resolver

PART, BAD, COUNTS = 0, 1, 2     # the kinds of record the Python pass emits


@dataclass(frozen=True)
class FileInfo:
    """What an executor needs to know about one input file."""

    export: str
    label: str
    observations: bool          # only Observations: lines without a rule's LOINC are skipped unparsed


@dataclass
class SparkRun:
    """What a run did (its tables are under `out`)."""

    out: str
    table_format: str
    summary: Summary
    bad_records: int
    resources: int
    lines: int
    files: int
    skipped_files: int
    warnings: list[str] = field(default_factory=list)
    export_errors: int = 0                  # OperationOutcomes of the manifest's error files: the export lost data
    non_fhir_files: list[str] = field(default_factory=list)   # e.g. the export's log.ndjson, named, not read

    def to_dict(self) -> dict:
        s = self.summary
        return {"out": self.out, "tableFormat": self.table_format, "patients": s.patients,
                "documentedCramps": s.documented_cramps, "withContributor": s.with_contributor,
                "deceased": s.deceased, "listed": s.listed, "badRecords": self.bad_records,
                "resources": self.resources, "lines": self.lines, "files": self.files,
                "skippedFiles": self.skipped_files, "exportErrors": self.export_errors,
                "nonFhirFiles": len(self.non_fhir_files), "warnings": len(self.warnings)}


def _uri_key(uri: str) -> tuple[str, str, str]:
    """`file:/a b` and `file:///a%20b` name the same file (Hadoop's and Spark's spellings)."""
    parts = urlsplit(uri)
    return parts.scheme, parts.netloc, unquote(parts.path)


def read_lines(spark: SparkSession, uris: list[str]) -> DataFrame:
    """Every line of the files as (file index, block start, position, value)."""
    raw = spark.read.text(uris)
    index = {_uri_key(u): i for i, u in enumerate(uris)}
    seen = raw.inputFiles()
    missing = [s for s in seen if _uri_key(s) not in index]
    if missing:
        raise InputError(f"Spark read files the discovery did not name: {', '.join(missing[:3])}")
    to_index = F.create_map(*(F.lit(x) for s in seen for x in (s, index[_uri_key(s)])))
    return raw.select(to_index[F.input_file_name()].alias("file"), F.input_file_block_start().alias("block"),
                      F.monotonically_increasing_id().alias("pos"), "value")


def unread_observation(observation_files: list[int], lab_codes: frozenset[bytes]) -> Column:
    """The JVM's side of `steps.is_unread_observation`: a JSON-object-shaped line of an Observation file that
    names none of the rules' LOINCs in quotes. It keeps every line the Python test keeps (and Python tests
    the kept lines again), so dropping these here changes nothing but the cost."""
    value = F.col("value")
    named = reduce(operator.or_, (value.contains(f'"{code.decode()}"') for code in sorted(lab_codes)))
    return F.col("file").isin(observation_files) & value.startswith("{") & value.endswith("}") & ~named


def _medications(rows: Iterator) -> Iterator[tuple[tuple[int, int, int], dict]]:
    for row in rows:
        resource, _ = parse_line(row.value.encode())
        if resource is not None and resource["resourceType"] == "Medication":
            yield (row.file, row.block, row.pos), trimmed_medication(resource)


def load_resolvers(lines: DataFrame, files: list[NdjsonFile]) -> dict[str, Resolver]:
    """The Medications of each export, in file and line order (as the single-machine first pass adds them)."""
    whole = [i for i, f in enumerate(files) if f.type_hint == "Medication"]
    peek = [i for i, f in enumerate(files) if f.type_hint is None]
    resolvers = {f.export: Resolver() for f in files}
    if not (whole or peek):
        return resolvers
    wanted = F.col("file").isin(whole) | (F.col("file").isin(peek) & F.col("value").contains('"Medication"'))
    for (file, _, _), medication in sorted(lines.where(wanted).rdd.mapPartitions(_medications).collect(),
                                           key=operator.itemgetter(0)):
        resolvers[files[file].export].add(medication)
    return resolvers


def read_partition(rows: Iterator, state_bc, files_bc) -> Iterator[tuple]:
    """Step 1 over one partition: each block's lines folded into partial records; bad lines; counts."""
    state: StreamState = state_bc.value
    files: list[FileInfo] = files_bc.value
    for (file, block), group in itertools.groupby(rows, key=operator.attrgetter("file", "block")):
        info = files[file]
        records: dict = {}
        resources = bad = 0
        unattributed: Counter[str] = Counter()
        for row in group:
            facts = line_facts(row.value.encode(), info.export, state, observations=info.observations)
            resources += facts.resource
            if facts.error:
                bad += 1
                yield BAD, (file, block, row.pos, facts.error)
            if facts.unattributed:
                unattributed[facts.unattributed] += 1
            add_line(records, facts, state.as_of)
        for ref, record in records.items():
            yield PART, (info.export, ref), ((file, block), record)
        yield COUNTS, (file, block, resources, bad, dict(unattributed))


def review_group(item: tuple, state_bc, keep) -> tuple[tuple, list[tuple], Summary]:
    """Step 2 for one (export, patient): its patient row, its finding rows (when listed), its summary."""
    (export, patient), parts = item
    result: PatientResult = review_patient(export, patient, parts, state_bc.value)
    listed = keep is None or keep(result)
    summary = Summary()
    summary.add(result, listed)
    return patient_row(result, listed), finding_rows(result) if listed else [], summary


def _summaries(rows: Iterator[tuple]) -> Iterator[Summary]:
    total = Summary()
    for _, _, summary in rows:
        total = total.merged(summary)
    yield total


def _bad_row(item: tuple, offsets_bc, labels_bc) -> tuple:
    file, block, pos, error = item[1]
    first, before = offsets_bc.value[(file, block)]
    return BAD_RECORD, labels_bc.value[file], before + pos - first + 1, error


def _line_offsets(blocks: list) -> dict[tuple[int, int], tuple[int, int]]:
    """Per (file, block): its first position and the lines of the file before it."""
    offsets: dict[tuple[int, int], tuple[int, int]] = {}
    for file, group in itertools.groupby(sorted(blocks, key=lambda b: (b.file, b.block)), key=lambda b: b.file):
        before = 0
        for b in group:
            offsets[(file, b.block)] = (b.first, before)
            before += b.lines
    return offsets


def json_warnings(inputs: Inputs) -> list[str]:
    """JSON files are for `cramp-cds review`; one found in a folder that is not FHIR is skipped as it skips it."""
    unread = []
    skipped = []
    for path in inputs.json_files:
        data = None
        if path in inputs.scanned_json:
            try:
                with path.open("rb") as fh:
                    data = orjson.loads(fh.read())
            except (OSError, orjson.JSONDecodeError):
                data = None
        if isinstance(data, dict) and not isinstance(data.get("resourceType"), str):
            skipped.append(skipped_not_fhir(str(path)))
        else:
            unread.append(str(path))
    if unread:
        skipped.append(f"{len(unread)} JSON file(s) not read, spark-review reads Bulk Data ndjson only (review "
                       f"Bundles with cramp-cds review): {', '.join(unread[:5])}{' …' if len(unread) > 5 else ''}")
    return skipped


def discover_inputs(spark: SparkSession, args: list[str]) -> Inputs:
    urls = [a for a in args if is_url(a)]
    if urls:
        raise InputError(f"spark-review reads Bulk Data files, not FHIR servers ({urls[0]}): export first, or "
                         "use cramp-cds review")
    inputs = discover(args, make_path=HadoopFs(spark).path)
    if not (inputs.ndjson or inputs.bad_records or inputs.export_errors):
        raise InputError(f"no Bulk Data ndjson found in: {', '.join(args)}")
    return inputs


def run_spark_review(spark: SparkSession, args: list[str], config: RunConfig, out: str, *,
                     table_format_wanted: str = "auto", partitions: int | None = None) -> SparkRun:
    """Review every patient of the Bulk exports named by `args` and write the tables under `out`."""
    sc = spark.sparkContext
    knowledge = config.knowledge or default_knowledge()
    inputs = discover_inputs(spark, args)
    files = [f for f in inputs.ndjson if f.relevant]
    skipped = [f for f in inputs.ndjson if not f.relevant]
    not_read = json_warnings(inputs)
    partitions = partitions or sc.defaultParallelism
    infos = [FileInfo(f.export, f.label, f.type_hint == "Observation") for f in files]
    observation_files = [i for i, info in enumerate(infos) if info.observations]

    summary, unattributed = Summary(), Counter()
    resources = lines_read = 0
    bad_count = len(inputs.bad_records)
    export_errors = sorted(inputs.export_errors)
    bad_df = spark.createDataFrame([(BAD_RECORD, b.file, b.line, b.error) for b in inputs.bad_records]
                                   + [(EXPORT_ERROR, b.file, b.line, b.error) for b in export_errors], BAD_RECORDS)
    patients_df = spark.createDataFrame([], PATIENTS)
    findings_df = spark.createDataFrame([], FINDINGS)
    cached = []
    if files:
        lines = read_lines(spark, [f.path.uri for f in files])
        state = StreamState(knowledge, load_resolvers(lines, files), config.options.validate, config.as_of,
                            config.options)
        unread = unread_observation(observation_files, state.lab_codes)
        blocks = lines.groupBy("file", "block").agg(
            F.min("pos").alias("first"), F.count(F.lit(1)).alias("lines"),
            F.sum(unread.cast("long")).alias("unread")).collect()
        medication_files = {i for i, f in enumerate(files) if f.type_hint == "Medication"}
        lines_read = sum(b.lines for b in blocks if b.file not in medication_files)  # as the pool counts
        resources = sum(b.unread for b in blocks)
        state_bc, files_bc = sc.broadcast(state), sc.broadcast(infos)
        tagged = lines.where(~unread).rdd.mapPartitions(
            partial(read_partition, state_bc=state_bc, files_bc=files_bc)).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(tagged)
        for _, _, count, bad, missing in tagged.filter(lambda t: t[0] == COUNTS).map(
                operator.itemgetter(1)).collect():
            resources += count
            bad_count += bad
            unattributed.update(missing)
        offsets_bc = sc.broadcast(_line_offsets(blocks))
        labels_bc = sc.broadcast([f.label for f in files])
        bad_rows = tagged.filter(lambda t: t[0] == BAD).map(partial(_bad_row, offsets_bc=offsets_bc,
                                                                    labels_bc=labels_bc))
        bad_df = bad_df.unionByName(spark.createDataFrame(bad_rows, BAD_RECORDS))
        reviewed = (tagged.filter(lambda t: t[0] == PART).map(operator.itemgetter(1, 2))
                    .groupByKey(partitions)
                    .map(partial(review_group, state_bc=state_bc, keep=listed_filter(config)))
                    .persist(StorageLevel.MEMORY_AND_DISK))
        cached.append(reviewed)
        summary = reviewed.mapPartitions(_summaries).fold(Summary(), Summary.merged)
        patients_df = spark.createDataFrame(reviewed.map(operator.itemgetter(0)), PATIENTS)
        findings_df = spark.createDataFrame(reviewed.flatMap(operator.itemgetter(1)), FINDINGS)

    repeated = [repeated_warning(r.patient, list(r.sources)) for r in (
        patients_df.where(F.col("patient") != "").groupBy("patient")
        .agg(F.count(F.lit(1)).alias("n"), F.sort_array(F.collect_list("source")).alias("sources"))
        .where(F.col("n") > 1).orderBy("patient").collect())]
    warnings = run_warnings(inputs.warnings, not_read, unattributed, skipped, repeated)

    fmt = table_format(spark, table_format_wanted)
    write_table(findings_df, out, "findings", fmt, partitions)
    write_table(patients_df, out, "patients", fmt, partitions)
    write_table(bad_df, out, "bad_records", fmt, 1)
    run = SparkRun(out, fmt, summary, bad_count, resources, lines_read,
                   len(inputs.json_files) + len(inputs.ndjson), len(skipped), warnings, len(export_errors),
                   [f"{f.file} ({f.kind})" for f in sorted(inputs.non_fhir)])
    write_table(spark.createDataFrame([_run_row(run, config, knowledge)], RUN), out, "run", fmt, 1)
    for rdd in cached:
        rdd.unpersist()
    return run


def _run_row(run: SparkRun, config: RunConfig, knowledge) -> tuple:
    s = run.summary
    filters = {"onlyDocumentedCramps": config.only_documented_cramps, "contributors": list(config.contributors)}
    totals = {cid: s.contributors[cid] for cid in sorted(s.contributors, key=knowledge.order)}
    as_of: datetime = config.as_of
    return (as_of, knowledge.version, json.dumps(filters), s.patients, s.documented_cramps, s.with_contributor,
            s.deceased, s.listed, run.bad_records, run.export_errors, run.resources, run.lines, run.files,
            run.skipped_files, totals, run.warnings, run.non_fhir_files, run.table_format)

