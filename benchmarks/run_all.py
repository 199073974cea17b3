"""Run every benchmark (``make bench``): the combined text to stdout; optionally regenerate docs/performance.md.

``python -m benchmarks.run_all [--only NAME ...] [--quick] [--markdown docs/performance.md]``

Order: hook latency (in-process), cost growth (in-process), start-up, HTTP load, batch throughput (it generates the Bulk exports into
``.bench/`` the first time, ~15 s and ~5 GB, then reuses them). About 6 minutes on 2 cores. ``--quick`` is a
smoke run (fewer calls, smaller exports) for checking the wiring; its figures are not for the docs.
``--markdown`` replaces the text between the ``<!-- bench:results:start -->`` and ``<!-- bench:results:end -->``
markers of the given file (the markers are appended if missing); everything else in the file is kept.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    batch_lines,
    batch_throughput,
    cost_curve,
    hook_latency,
    load_http,
    startup,
    terminology,
)
from benchmarks.common import ROOT, Report, machine, machine_text, watched

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def plan(quick: bool) -> list[tuple[str, Callable[[], Report]]]:
    if quick:
        return [
            ("hook_latency", lambda: hook_latency.run(calls=30, warmup=5, fhir_calls=10)),
            ("cost_curve", lambda: cost_curve.run(sizes=(500, 2_000, 8_000), scale=0.2)),
            ("startup", lambda: startup.run(repeats=2)),
            ("terminology", lambda: terminology.run(repeats=2)),
            ("load_http", lambda: load_http.run(clients=8, duration=6, warmup=2)),
            ("batch_throughput", lambda: batch_throughput.run(sizes=(500, 1000))),
            ("batch_lines", lambda: batch_lines.run(patients=1000, bytes_per_type=4 << 20, repeats=1)),
        ]
    return [
        ("hook_latency", hook_latency.run),
        ("cost_curve", cost_curve.run),
        ("startup", startup.run),
        ("terminology", terminology.run),
        ("load_http", load_http.run),
        ("batch_throughput", batch_throughput.run),
        ("batch_lines", batch_lines.run),
    ]


def failed(name: str, exc: BaseException) -> Report:
    report = Report(f"{name}: FAILED to run", f"python -m benchmarks.{name}")
    report.notes.append(f"{type(exc).__name__}: {exc}")
    report.notes += [line for line in traceback.format_exc().splitlines()[-6:] if line.strip()]
    report.target(f"{name} ran", "error", "runs", False)
    return report


def summary(reports: list[Report]) -> list[tuple[str, str, str, str, str]]:
    return [(r.title.split(" (")[0], t.name, t.figure, t.target, t.verdict) for r in reports for t in r.targets]


def to_markdown(info: dict[str, str], reports: list[Report], elapsed: float, quick: bool) -> str:
    lines = [START, "", f"## Latest results ({info['date']})", ""]
    if quick:
        lines += ["**Quick smoke run: not representative.**", ""]
    lines += ["| machine | |", "|---|---|", *[f"| {k} | {v} |" for k, v in info.items()], "",
              f"`make bench` took {elapsed / 60:.1f} min.", "", "### All targets", "",
              "| benchmark | target | figure | goal | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {b} | {n} | {f.replace('|', '/')} | {g} | **{v}** |" for b, n, f, g, v in summary(reports)]
    lines.append("")
    for report in reports:
        lines += [report.to_markdown(), ""]
    lines += [END]
    return "\n".join(lines)


def write_markdown(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Performance\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these: hook_latency cost_curve startup terminology load_http batch_throughput batch_lines")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (figures not representative)")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="regenerate the results section of FILE (e.g. docs/performance.md)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = machine()
    print("cramp-cds benchmarks" + (" (QUICK smoke run: figures not representative)" if args.quick else ""))
    print("machine:")
    print(machine_text(info))
    print(flush=True)
    reports: list[Report] = []
    for name, run in plan(args.quick):
        if args.only and name not in args.only:
            continue
        try:
            report = watched(run)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            report = failed(name, exc)
        reports.append(report)
        print(report.to_text())
        print(flush=True)
    elapsed = time.perf_counter() - started
    print("== Summary ==")
    rows = summary(reports)
    width = max((len(f"{b}: {n}") for b, n, *_ in rows), default=10)
    for bench, name, figure, target, verdict in rows:
        print(f"  {verdict:<5} {f'{bench}: {name}':<{width}}  {figure}  (target {target})")
    misses = sum(1 for *_, v in rows if v == "MISS")
    print(f"{misses} target(s) missed; total {elapsed / 60:.1f} min", flush=True)
    if args.markdown:
        path = args.markdown if args.markdown.is_absolute() else ROOT / args.markdown
        write_markdown(path, to_markdown(info, reports, elapsed, args.quick))
        print(f"results section of {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
