"""One measured run in its own process, for batch_throughput: the batch review or the orjson FLOOR.

``python -m benchmarks.batch_child batch FOLDER --workers N --out REPORT.json [--no-validate]``
``python -m benchmarks.batch_child floor FOLDER``

Prints one JSON line: wall seconds of the work (imports excluded), patients, resources, and the peak RSS of this
process (VmHWM from /proc/self/status: since exec; `ru_maxrss` would include the RSS of the benchmark process
that forked this one) and of its largest child process (`ru_maxrss` of RUSAGE_CHILDREN: the pool workers, whose
figure includes the pages they share with this process after fork).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import orjson

TYPES = ("Patient", "Condition", "MedicationRequest", "Observation")


def peak_rss_kib() -> int:
    """Peak RSS of this process since exec, in KiB (VmHWM); ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def floor(folder: Path) -> dict:
    """Parse every line of the export with orjson and do nothing else (single process)."""
    started = time.perf_counter()
    patients = resources = 0
    for rtype in TYPES:
        path = folder / f"{rtype}.ndjson"
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            for line in fh:
                orjson.loads(line)
                resources += 1
        if rtype == "Patient":
            patients = resources
    return {"seconds": time.perf_counter() - started, "patients": patients, "resources": resources}


def batch(folder: Path, workers: int, out: Path, validate: bool) -> dict:
    """The batch review through its Python API, the JSON report streamed to the file, as the CLI does."""
    from datetime import UTC, datetime

    from cds_hooks.batch import RunConfig, run_review
    from cds_hooks.batch.reports.writer import write_report
    from plugin import ReviewOptions

    started = time.perf_counter()
    config = RunConfig(as_of=datetime.now(UTC), options=ReviewOptions(validate=validate), workers=workers)
    result = run_review([str(folder)], config)
    reviewed = time.perf_counter()
    write_report(result, "json", str(out))
    done = time.perf_counter()
    return {"seconds": done - started, "review_seconds": reviewed - started, "report_seconds": done - reviewed,
            "patients": len(result.reviewed), "resources": result.stats.resources,
            "bad_records": len(result.bad_records), "report_bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_child")
    parser.add_argument("mode", choices=("batch", "floor"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "floor":
        figures = floor(args.folder)
    else:
        figures = batch(args.folder, args.workers, args.out, not args.no_validate)
    figures["self_maxrss_kib"] = peak_rss_kib()
    figures["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
