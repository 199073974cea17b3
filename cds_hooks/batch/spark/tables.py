"""The output tables of `spark-review`: their schemas, the rows of one reviewed patient, and writing them.

| table | one row per | columns |
|---|---|---|
| `findings` | finding of a listed patient (the CSV report's rows) | `patient`, `source`, `position`, `contributor`, `category`, `grade`, `sources`, `date`, `references`, `reason`, `documented_cramps`, `possibly_stale` |
| `patients` | patient reviewed | `patient`, `source`, `listed`, `deceased`, `documented_cramps`, `monitoring_gap`, `contributors`, `warnings` |
| `bad_records` | record that could not be read, or error the export itself reported | `kind`, `file`, `line`, `error` |
| `run` | run (one row) | counts, totals, warnings, non-FHIR files, knowledge version, as-of, filters, table format |

Rows are hash-partitioned by their first `ORDER_BY` column and sorted within each file, so the same inputs
(and `--partitions`) give the same files with the same rows in the same order, without the sampling job a
global sort would cost.
"""
from __future__ import annotations

import importlib.util

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from cds_hooks.batch.model import PatientResult


def _schema(*fields: tuple[str, object, bool]) -> StructType:
    return StructType([StructField(name, kind, nullable) for name, kind, nullable in fields])


_TEXTS = ArrayType(StringType(), containsNull=False)

FINDINGS = _schema(
    ("patient", StringType(), False), ("source", StringType(), False), ("position", IntegerType(), False),
    ("contributor", StringType(), False), ("category", StringType(), False), ("grade", StringType(), False),
    ("sources", _TEXTS, False), ("date", StringType(), True), ("references", _TEXTS, False),
    ("reason", StringType(), False), ("documented_cramps", BooleanType(), False),
    ("possibly_stale", BooleanType(), False))
PATIENTS = _schema(
    ("patient", StringType(), False), ("source", StringType(), False), ("listed", BooleanType(), False),
    ("deceased", BooleanType(), False), ("documented_cramps", BooleanType(), False),
    ("monitoring_gap", BooleanType(), False), ("contributors", _TEXTS, False), ("warnings", _TEXTS, False))
BAD_RECORDS = _schema(("kind", StringType(), False), ("file", StringType(), False), ("line", LongType(), True),
                      ("error", StringType(), False))
BAD_RECORD, EXPORT_ERROR = "bad-record", "export-error"   # the `kind`s: ours to skip, or the server's own loss
RUN = _schema(
    ("as_of", TimestampType(), False), ("knowledge_version", StringType(), False),
    ("filters", StringType(), False), ("patients", LongType(), False), ("documented_cramps", LongType(), False),
    ("with_contributor", LongType(), False), ("deceased", LongType(), False), ("listed", LongType(), False),
    ("bad_records", LongType(), False), ("export_errors", LongType(), False), ("resources", LongType(), False),
    ("lines", LongType(), False),
    ("files", LongType(), False), ("skipped_files", LongType(), False),
    ("totals", MapType(StringType(), LongType(), valueContainsNull=False), False),
    ("warnings", _TEXTS, False), ("non_fhir_files", _TEXTS, False), ("table_format", StringType(), False))

ORDER_BY = {"findings": ("patient", "source", "position"), "patients": ("patient", "source"),
            "bad_records": ("kind", "file", "line", "error")}


def patient_row(p: PatientResult, listed: bool) -> tuple:
    rv = p.review
    return (p.patient, p.source, listed, rv.deceased, rv.documented_cramps, rv.monitoring_gap,
            [f.contributor for f in rv.findings], list(rv.warnings))


def finding_rows(p: PatientResult) -> list[tuple]:
    rv = p.review
    return [(p.patient, p.source, n, f.contributor, f.category, f.grade, list(f.sources), f.date,
             list(f.references), f.reason, rv.documented_cramps, f.possibly_stale)
            for n, f in enumerate(rv.findings, 1)]


def delta_available(spark: SparkSession) -> bool:
    """Delta Lake is usable: the `delta-spark` package is installed and its classes are on the JVM's path."""
    if importlib.util.find_spec("delta") is None:
        return False
    try:
        spark.sparkContext._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
    except Exception:  # noqa: BLE001 - py4j raises its own error types for a missing class
        return False
    return True


def table_format(spark: SparkSession, wanted: str) -> str:
    """`auto`: Delta when delta-spark is present, else Parquet."""
    if wanted == "auto":
        return "delta" if delta_available(spark) else "parquet"
    return wanted


def write_table(df: DataFrame, out: str, name: str, fmt: str, partitions: int) -> None:
    if name in ORDER_BY:
        order = ORDER_BY[name]
        df = df.repartition(partitions, order[0]).sortWithinPartitions(*order)
    else:
        df = df.coalesce(1)
    df.write.format(fmt).mode("overwrite").save(f"{out.rstrip('/')}/{name}")
