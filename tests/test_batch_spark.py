"""`cramp-cds spark-review` in Spark local[2]: the tables say exactly what `cramp-cds review` says.

One SparkSession for the module (starting a JVM costs tens of seconds). Files are split into 512 KiB blocks
(`spark.sql.files.maxPartitionBytes`) so that a patient's lines, and bad lines, land in several blocks and
partitions: parity then covers the line numbering and the merge order, not only the easy case.

Skipped with the reason where pyspark or Java is missing; `CRAMP_REQUIRE_SPARK=1` (set by `.ci/run`) turns
the skip into a failure.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from cds_hooks.batch.cli import as_of_date
from cds_hooks.batch.runner import RunConfig, run_review
from plugin import ReviewOptions
from tests.builders import NOW, cramps, lab, med_request, patient, rx

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]

SHARED_NDJSON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ndjson"
SHARED_EXPORTS = sorted(p for p in SHARED_NDJSON.glob("*") if p.is_dir()) if SHARED_NDJSON.is_dir() else []
SPARK_CONF = {
    "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "3", "spark.default.parallelism": "3",
    "spark.sql.files.maxPartitionBytes": str(512 * 1024), "spark.sql.files.openCostInBytes": str(128 * 1024),
    "spark.driver.memory": "768m", "spark.sql.session.timeZone": "UTC",
}


def _unavailable() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (Debian: apt-get install openjdk-17-jre-headless)"
    return None


@pytest.fixture(scope="module")
def spark():
    reason = _unavailable()
    if reason:
        if os.environ.get("CRAMP_REQUIRE_SPARK") == "1":
            pytest.fail(f"CRAMP_REQUIRE_SPARK=1 but {reason}")
        pytest.skip(reason)
    from cds_hooks.batch.spark.session import spark_session

    session = spark_session("local[2]", SPARK_CONF)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def pool_view(args: list[str], config: RunConfig) -> dict:
    """`cramp-cds review`'s answer, reduced to what the tables hold."""
    result = run_review(args, config)
    patients = {(p.patient, p.source): p for p in result.reviewed}
    listed = {(p.patient, p.source) for p in result.patients}
    return {
        "patients": sorted((*key, key in listed, p.review.deceased, p.review.documented_cramps,
                            p.review.monitoring_gap, tuple(p.contributor_ids), tuple(p.review.warnings))
                           for key, p in patients.items()),
        "findings": sorted((p.patient, p.source, n, f.contributor, f.category, f.grade, tuple(f.sources), f.date,
                            tuple(f.references), f.reason, p.review.documented_cramps)
                           for p in result.patients for n, f in enumerate(p.review.findings, 1)),
        "bad_records": sorted((b.file, b.line or 0, b.error) for b in result.bad_records),
        "export_errors": sorted((b.file, b.line or 0, b.error) for b in result.export_errors),
        "non_fhir_files": [f"{f.file} ({f.kind})" for f in result.non_fhir_files],
        "warnings": result.warnings,
        "counts": (result.summary.patients, result.summary.documented_cramps, result.summary.with_contributor,
                   result.summary.deceased, result.summary.listed, result.stats.resources, result.stats.lines),
        "totals": dict(result.summary.contributors),
    }


def spark_view(spark, out: Path) -> dict:
    """The four tables written under `out`, reduced the same way."""
    def rows(name: str) -> list:
        return spark.read.parquet(str(out / name)).collect()

    run = rows("run")
    assert len(run) == 1
    run = run[0]
    return {
        "patients": sorted((r.patient, r.source, r.listed, r.deceased, r.documented_cramps, r.monitoring_gap,
                            tuple(r.contributors), tuple(r.warnings)) for r in rows("patients")),
        "findings": sorted((r.patient, r.source, r.position, r.contributor, r.category, r.grade, tuple(r.sources),
                            r.date, tuple(r.references), r.reason, r.documented_cramps) for r in rows("findings")),
        "bad_records": sorted((r.file, r.line or 0, r.error) for r in rows("bad_records") if r.kind == "bad-record"),
        "export_errors": sorted((r.file, r.line or 0, r.error) for r in rows("bad_records") if r.kind == "export-error"),
        "non_fhir_files": list(run.non_fhir_files),
        "warnings": list(run.warnings),
        "counts": (run.patients, run.documented_cramps, run.with_contributor, run.deceased, run.listed,
                   run.resources, run.lines),
        "totals": dict(run.totals),
    }


def assert_same(spark, args: list[str], out: Path, config: RunConfig) -> dict:
    from cds_hooks.batch.spark.job import run_spark_review

    run = run_spark_review(spark, args, config, str(out), table_format_wanted="parquet")
    expected, got = pool_view(args, config), spark_view(spark, out)
    for key in expected:
        assert got[key] == expected[key], key
    assert run.bad_records == len(expected["bad_records"])
    return got


@pytest.mark.shared_data
@pytest.mark.parametrize("export", SHARED_EXPORTS, ids=[p.name for p in SHARED_EXPORTS])
def test_spark_tables_equal_the_single_machine_review_on_every_shared_export(spark, export, tmp_path):
    got = assert_same(spark, [str(export)], tmp_path / "tables", RunConfig(as_of=NOW))
    assert got["patients"], "every shared export holds patients"


def test_spark_tables_equal_the_single_machine_review_on_a_generated_export(spark, tmp_path):
    from benchmarks.generate import bulk_export

    export = bulk_export(300, cache=tmp_path / "generated")
    got = assert_same(spark, [str(export.folder)], tmp_path / "tables", RunConfig(as_of=NOW))
    assert len(got["patients"]) == 300
    assert got["findings"]


def _write(path: Path, lines: list, *, gz: bool = False) -> None:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())


def trap_exports(root: Path) -> list[str]:
    """Two hand-written exports with what goes wrong in real ones: bad lines in large split files, blank lines,
    a gzipped file, Medications by reference and in a file of unknown type, a patient in both exports, a
    resource without a patient, a type the review does not read."""
    p = lambda pid: {"reference": f"Patient/{pid}"}
    filler = [lab(f"hr{i}", "8867-4", 60 + i % 30, "/min", subject=p(f"p{i % 40}")) for i in range(1600)]
    first = root / "2026-11"
    _write(first / "Patient.000.ndjson", [patient(f"p{i}") for i in range(40)]
           + [patient("dead", deceasedDateTime="2025-01-02"), "", {"resourceType": "Patient"}])
    _write(first / "Medication.000.ndjson", [{"resourceType": "Medication", "id": "simva",
                                              "code": rx("83367", "simvastatin")}, "{broken"])
    _write(first / "MedicationRequest.000.ndjson.gz", [
        med_request(f"m{i}", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"), subject=p(f"p{i}"))
        for i in range(0, 40, 3)] + [
        med_request("ref", subject=p("p1"), medicationReference={"reference": "Medication/simva"}),
        med_request("stopped", rx("36117", "salmeterol"), subject=p("p2"), status="stopped")], gz=True)
    _write(first / "Condition.000.ndjson", [cramps(f"c{i}") | {"subject": p(f"p{i}")} for i in range(0, 40, 4)])
    _write(first / "Observation.000.ndjson", filler[:300] + [
        lab("mg1", "19123-9", 1.2, "mg/dL", subject=p("p1")),
        lab("k-new", "2823-3", 3.1, "mmol/L", when="2026-09-01T08:00:00Z", subject=p("p4")),
        lab("k-dup", "2823-3", 3.1, "mmol/L", when="2026-09-01T08:00:00Z", subject=p("p4")),
        "not json at all", "[1, 2]", "", "{\"resourceType\": \"Observation\", \"code\": {\"text\": \"no subject\"}}",
        {k: v for k, v in lab("orphan", "2823-3", 2.0, "mmol/L").items() if k != "subject"},
    ] + filler[300:])
    _write(first / "Encounter.000.ndjson", ["never read: the review does not read Encounters"])
    second = root / "2026-12"
    _write(second / "mixed.ndjson", [
        {"resourceType": "Medication", "id": "salm", "code": rx("36117", "salmeterol")},
        patient("p1"), med_request("laba", subject=p("p1"), medicationReference={"reference": "Medication/salm"}),
        "{\"resourceType\": 12}"])
    third = root / "2027-01"   # a manifest with an error file, the client's log beside it
    _write(third / "Patient.ndjson", [patient("q1"), patient("q2")])
    _write(third / "Condition.ndjson", [cramps("cq") | {"subject": p("q1")}])
    _write(third / "errors.ndjson", [{"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing", "diagnostics": "Observation export failed"}]}])
    _write(third / "log.ndjson", [{"eventId": "kickoff", "timestamp": "2027-01-02T00:00:00Z"}])
    (third / "manifest.json").write_text(json.dumps({
        "transactionTime": "2027-01-02T00:00:00Z", "request": "https://fhir.example.org/$export",
        "output": [{"type": "Patient", "url": "https://files.example.org/Patient.ndjson"},
                   {"type": "Condition", "url": "https://files.example.org/Condition.ndjson"}],
        "error": [{"type": "OperationOutcome", "url": "https://files.example.org/errors.ndjson"}]}))
    return [str(first), str(second), str(third)]


def test_spark_tables_equal_the_single_machine_review_on_exports_with_traps(spark, tmp_path):
    got = assert_same(spark, trap_exports(tmp_path / "exports"), tmp_path / "tables", RunConfig(as_of=NOW))
    assert len(got["bad_records"]) == 5 and len(got["export_errors"]) == 1
    assert any("appears in 2 inputs" in w for w in got["warnings"])
    assert any(line == 305 for _, line, _ in got["bad_records"])   # numbered across the file's blocks


def test_the_command_applies_the_filters_and_options_as_the_single_machine_review(spark, tmp_path, capsys):
    from cds_hooks.cli import main

    exports, out = trap_exports(tmp_path / "exports"), tmp_path / "tables"
    code = main(["spark-review", *exports, "--out", str(out), "--as-of", "2026-11-01", "--table-format", "parquet",
                 "--only-documented-cramps", "--contributor", "thiazide-diuretic", "--contributor", "low-potassium",
                 "--lab-lookback-days", "30", "--no-validate", "--partitions", "2",
                 "--json", str(tmp_path / "summary.json"), "--html", str(tmp_path / "summary.html")])
    assert code == 3   # tables written, with bad records
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["badRecords"] == 5 and summary["tableFormat"] == "parquet"
    assert sorted(p.name for p in out.iterdir()) == ["bad_records", "findings", "patients", "run"]
    config = RunConfig(as_of=as_of_date("2026-11-01"), options=ReviewOptions(lab_lookback_days=30, validate=False),
                       only_documented_cramps=True, contributors=("thiazide-diuretic", "low-potassium"))
    expected, got = pool_view(exports, config), spark_view(spark, out)
    assert got == expected
    assert {row[0] for row in got["findings"]} < {row[0] for row in got["patients"]}

    # The summary for people says what the single-machine review says, from the tables.
    people = json.loads((tmp_path / "summary.json").read_text())
    result = run_review(exports, config)
    assert people["counts"] == {
        "patients": result.summary.patients, "reviewed": result.summary.patients - result.summary.deceased,
        "deceased": result.summary.deceased, "documentedCramps": result.summary.documented_cramps,
        "withContributor": result.summary.with_contributor, "listed": result.summary.listed,
        "badRecords": len(result.bad_records), "exportErrors": len(result.export_errors)}
    assert {c["id"]: c["patients"] for c in people["contributors"]} == dict(result.summary.contributors)
    with_cramps = {cid: len({(p.patient, p.source) for p in result.patients if p.review.documented_cramps
                             and cid in p.contributor_ids}) for cid in result.summary.contributors}
    assert {c["id"]: c["withDocumentedCramps"] for c in people["contributors"]} == with_cramps
    assert people["issuesTotal"] == len(result.bad_records) + len(result.export_errors) == len(people["issues"])
    page = (tmp_path / "summary.html").read_text()
    assert "<script" not in page and "http" not in page.split("</style>", 1)[0]   # self-contained
    assert f'<b data-testid="count-reviewed">{people["counts"]["reviewed"]}</b>' in page
    for c in people["contributors"]:
        assert c["label"] in page
    assert all(i["file"] in page for i in people["issues"])


def test_a_missing_input_and_a_fhir_server_are_refused_clearly(spark, tmp_path, capsys):
    from cds_hooks.cli import main

    assert main(["spark-review", str(tmp_path / "nope"), "--out", str(tmp_path / "t")]) == 4
    assert "input not found" in capsys.readouterr().err
    assert main(["spark-review", "https://fhir.example.org/r4", "--out", str(tmp_path / "t")]) == 4
    assert "not FHIR servers" in capsys.readouterr().err
