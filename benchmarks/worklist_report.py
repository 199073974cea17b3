"""Writing the ranked worklist reports of a large review: seconds and the parent's peak memory per format.

The review runs once over a synthetic Bulk export (`benchmarks.generate.bulk_export`); then each report is
written to a temporary folder: JSON, CSV, HTML (with identifiers and EHR links) and the FHIR List/Task
Bundle. The worklist keeps one sort key per patient in memory and reads the rows back from a temporary file,
so the peak should stay flat in the number of patients.

``python -m benchmarks.worklist_report [--patients 10000] [--workers 2]`` (prints figures; not a test).
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.generate import bulk_export
from cds_hooks.batch.reports.options import ReportOptions
from cds_hooks.batch.reports.worklist import Worklist
from cds_hooks.batch.reports.writer import FHIR_WORKLIST, write_report
from cds_hooks.batch.runner import RunConfig, run_review
from plugin import default_knowledge

AS_OF = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    folder = bulk_export(args.patients).folder
    started = time.perf_counter()
    result = run_review([str(folder)], RunConfig(as_of=AS_OF, workers=args.workers))
    print(f"review: {len(result.reviewed)} patients in {time.perf_counter() - started:.1f} s")
    options = ReportOptions(identifiers=True, patient_link="https://ehr.example.org/patient/{id}")
    started = time.perf_counter()
    for _ in result.patients:
        pass
    rows_s = time.perf_counter() - started
    started = time.perf_counter()
    with Worklist(result, default_knowledge(), options) as worklist:
        for _ in worklist:
            pass
    print(f"rows read in patient order: {rows_s:.2f} s; ranked (one pass, then read back in rank order): "
          f"{time.perf_counter() - started:.2f} s")
    with tempfile.TemporaryDirectory(prefix="cramp-bench-report-") as out:
        for fmt in ("json", "csv", "html", FHIR_WORKLIST):
            path = Path(out) / f"report.{fmt}"
            started = time.perf_counter()
            write_report(result, fmt, str(path), options=options)
            seconds = time.perf_counter() - started
            tracemalloc.start()   # a second, traced pass (tracing slows allocation: not timed)
            write_report(result, fmt, str(path), options=options)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"{fmt:>13}: {seconds:6.2f} s, {path.stat().st_size / 2**20:7.1f} MiB written, "
                  f"Python heap peak {peak / 2**20:6.1f} MiB")
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
