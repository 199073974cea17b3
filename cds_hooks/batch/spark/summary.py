"""A summary of a `spark-review` run for people, read back from the tables it wrote (`--json`, `--html`).

The tables are the answer; this page and this JSON only condense them: the run's counts and denominators,
patients per contributor (and how many of them have leg cramps documented), warnings, and the first bad
records. Patients appear only as counts: the tables hold the rows for whoever needs them.
"""
from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from plugin.knowledge import Knowledge

MAX_LISTED_ISSUES = 500   # bad records shown; the bad_records table has them all


def read_summary(spark: SparkSession, out: str, fmt: str, knowledge: Knowledge) -> dict:
    """The run's figures from the `run`, `findings` and `bad_records` tables under `out`."""
    base = out.rstrip("/")
    run = spark.read.format(fmt).load(f"{base}/run").collect()[0]
    findings = spark.read.format(fmt).load(f"{base}/findings")
    with_cramps = {r.contributor: r.n for r in findings.where(F.col("documented_cramps"))
                   .groupBy("contributor").agg(F.countDistinct("patient", "source").alias("n")).collect()}
    bad = spark.read.format(fmt).load(f"{base}/bad_records")
    bad_total = bad.count()
    shown = bad.orderBy("kind", "file", "line", "error").limit(MAX_LISTED_ISSUES).collect()
    totals = dict(run.totals)
    return {
        "asOf": run.as_of.date().isoformat(),
        "knowledgeVersion": run.knowledge_version,
        "filters": json.loads(run.filters),
        "tables": base,
        "tableFormat": run.table_format,
        "counts": {"patients": run.patients, "reviewed": run.patients - run.deceased, "deceased": run.deceased,
                   "documentedCramps": run.documented_cramps, "withContributor": run.with_contributor,
                   "listed": run.listed, "badRecords": run.bad_records, "exportErrors": run.export_errors},
        "contributors": [{"id": cid, "label": knowledge.contributors[cid].label, "patients": n,
                          "withDocumentedCramps": with_cramps.get(cid, 0)}
                         for cid, n in sorted(totals.items(), key=lambda kv: knowledge.order(kv[0]))],
        "warnings": list(run.warnings),
        "nonFhirFiles": list(run.non_fhir_files),
        "issues": [{"kind": r.kind, "file": r.file, "line": r.line, "error": r.error} for r in shown],
        "issuesTotal": bad_total,
    }


def write_json(summary: dict, path: str) -> None:
    Path(path).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_html(summary: dict, path: str) -> None:
    env = Environment(loader=PackageLoader("cds_hooks.batch.reports", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    reviewed = summary["counts"]["reviewed"]
    peak = max((c["patients"] for c in summary["contributors"]), default=0) or 1
    bars = [{**c, "width": max(1, round(100 * c["patients"] / peak)),
             "share": f"{100 * c['patients'] / reviewed:.0f}%" if reviewed else ""} for c in summary["contributors"]]
    html = env.get_template("spark_summary.html.j2").render(s=summary, bars=bars)
    Path(path).write_text(html, encoding="utf-8")
