"""Spark local[2] vs the process pool on the same Bulk exports (10,000 and 50,000 patients), and the figures a
cluster estimate needs: patients/s per core and the bytes shuffled per patient.

``python -m benchmarks.spark_throughput [--patients 10000 50000] [--cores 2]``

Needs the ``[spark]`` extra and Java. The SparkSession's start-up (JVM, Python workers' first import) is
measured on its own and left out of the Spark rates; each size is run once in Spark and once with the
process pool (``cramp-cds review --workers 2``, in a subprocess, as ``batch_throughput`` does). The shuffle
volume is read from Spark's own stage metrics (``shuffleWriteBytes``).
"""
from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from benchmarks.batch_throughput import measure, warm_page_cache
from benchmarks.common import Report, Table, print_standalone, temp_dir
from benchmarks.generate import bulk_export, load_templates

SIZES = (10_000, 50_000)
SPARK_CONF = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
              "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"}
TARGET_PATIENTS = 20_000_000


def shuffle_write_bytes(spark) -> int:
    """Bytes written by every shuffle so far (Spark's stage metrics, read through the status store)."""
    store = spark.sparkContext._jsc.sc().statusStore()
    try:   # Spark 4: stageList(statuses, details, withSummaries, quantiles, taskStatus), with Scala defaults
        defaults = [getattr(store, f"stageList$default${n}")() for n in range(2, 6)]
        stages = store.stageList(None, *defaults)
    except Exception:  # noqa: BLE001 - py4j: Spark 3.5's stageList(statuses)
        stages = store.stageList(None)
    return sum(stages.apply(i).shuffleWriteBytes() for i in range(stages.size()))


def paper_estimate(rate_per_core: float, shuffle_per_patient: float, patients: int = TARGET_PATIENTS) -> list[list[str]]:
    """Wall time for `patients` on N executors of 4 cores: CPU at the measured per-core rate, plus the shuffle
    at 100 MB/s of network per executor (conservative for 10 GbE), plus five minutes of start-up and listing."""
    rows = []
    for executors in (4, 16, 64):
        cores = executors * 4
        cpu_s = patients / (rate_per_core * cores)
        shuffle_s = patients * shuffle_per_patient / (executors * 100e6)
        total = cpu_s + shuffle_s + 300
        rows.append([f"{executors} x 4 cores", f"{cpu_s / 60:,.0f} min", f"{shuffle_s / 60:,.1f} min",
                     f"{total / 3600:,.1f} h"])
    return rows


def run(sizes: tuple[int, ...] = SIZES, cores: int = 2) -> Report:
    from cds_hooks.batch.runner import RunConfig
    from cds_hooks.batch.spark.job import run_spark_review
    from cds_hooks.batch.spark.session import spark_session

    started = time.perf_counter()
    report = Report(f"Spark local[{cores}] vs the process pool (Bulk Data ndjson)",
                    "python -m benchmarks.spark_throughput")
    table = Table(["patients", "resources", "engine", "seconds", "patients/s", "patients/s per core",
                   "shuffle bytes/patient"], [])
    report.tables.append(table)
    as_of = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)
    templates = load_templates()
    t0 = time.perf_counter()
    spark = spark_session(f"local[{cores}]", SPARK_CONF)
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.parallelize(range(cores), cores).map(lambda x: x).collect()   # Python workers up
    startup = time.perf_counter() - t0
    report.notes.append(f"SparkSession start-up (JVM + first Python workers): {startup:.1f} s, not in the rates")
    print("measured:", report.notes[-1], flush=True)
    spark_rate = shuffle_per_patient = 0.0
    with temp_dir("cramp-bench-spark-") as tmp:
        for n in sizes:
            export = bulk_export(n, templates=templates)
            warm_page_cache(export.folder)
            before = shuffle_write_bytes(spark)
            t = time.perf_counter()
            result = run_spark_review(spark, [str(export.folder)], RunConfig(as_of=as_of), str(tmp / f"tables-{n}"),
                                      table_format_wanted="parquet")
            seconds = time.perf_counter() - t
            shuffled = (shuffle_write_bytes(spark) - before) / max(result.summary.patients, 1)
            spark_rate, shuffle_per_patient = result.summary.patients / seconds, shuffled
            table.rows.append([f"{n:,}", f"{export.resources:,}", f"Spark local[{cores}]", f"{seconds:.1f}",
                               f"{spark_rate:,.0f}", f"{spark_rate / cores:,.0f}", f"{shuffled:,.0f}"])
            print("measured:", " | ".join(table.rows[-1]), flush=True)   # a long run shows its figures as it goes
            f = measure(["batch", str(export.folder), "--workers", str(cores), "--out", str(tmp / f"r-{n}.json")])
            pool_rate = f["patients"] / f["seconds"]
            table.rows.append([f"{n:,}", f"{export.resources:,}", f"process pool, {cores} workers",
                               f"{f['seconds']:.1f}", f"{pool_rate:,.0f}", f"{pool_rate / cores:,.0f}", "-"])
            print("measured:", " | ".join(table.rows[-1]), flush=True)
    spark.stop()
    per_core = spark_rate / cores
    report.tables.append(Table(["cluster", "CPU", "shuffle", "wall time"], paper_estimate(per_core, shuffle_per_patient),
                               f"Paper estimate for {TARGET_PATIENTS:,} patients at {per_core:,.0f} patients/s per "
                               f"core and {shuffle_per_patient:,.0f} shuffle bytes per patient (largest run)"))
    report.elapsed_s = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spark_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    print_standalone(run, tuple(args.patients), args.cores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
