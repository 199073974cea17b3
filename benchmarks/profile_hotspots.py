"""Where the time goes when a target is missed: cProfile of the hook call and of the batch, by bucket, plus
what-if EXPERIMENTS that quantify the proposed fixes.

``python -m benchmarks.profile_hotspots [--batch-patients 2000]``   (about 2 minutes; not part of make bench)

1. patient-view in-process (the small sample and the large ~2,000-resource patient): cProfile, own time summed
   into buckets (FHIR validation, SQLite, JSON, engine, service, Flask, ...), the top functions, and the time spent
   in the cyclic garbage collector (gc.callbacks).
2. the batch review (1 worker) over a generated export: the same.
3. EXPERIMENTS: the proposed fixes applied by monkeypatching *this process only* (the code on disk is unchanged),
   each measured by thread CPU time per call (robust on a shared machine), so the lead can see what each buys
   before changing the code. Re-run after a fix lands: its variant and the baseline should then agree.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from unittest import mock

import orjson

from benchmarks.common import (
    Report,
    Table,
    discovery_templates,
    hook_request,
    latency_summary,
    local_settings,
    prefetch_for,
    print_standalone,
    sample_patients,
    temp_dir,
)
from benchmarks.generate import bulk_export, large_patient
from benchmarks.hook_latency import add_echo_route, time_calls

BUCKETS = [  # (bucket, test on "filename:function"), first match wins
    ("FHIR validation (fhir.resources / pydantic)", ("fhir_core", "fhir/resources", "pydantic", "validate_python",
                                                     "plugin/validation.py")),
    ("database (feedback store: SQLAlchemy, sqlite3)", ("sqlite3", "sqlalchemy", "cds_hooks/storage/")),
    ("JSON (orjson)", ("orjson",)),
    ("regex (re, outside match_drug)", ("re.Pattern", "re.Match", "/re/")),
    ("engine: reading FHIR (plugin.fhir_read, codes, units, dates)",
     ("plugin/fhir_read.py", "plugin/codes.py", "plugin/units.py", "plugin/dates.py")),
    ("engine: review, rules, cards", ("plugin/",)),
    ("batch (cds_hooks.batch)", ("cds_hooks/batch/",)),
    ("service (cds_hooks)", ("cds_hooks/",)),
    ("Flask / Werkzeug", ("flask/", "werkzeug/")),
]


@contextlib.contextmanager
def gc_timer() -> Iterator[list[float]]:
    """Seconds spent in the cyclic GC while the block runs (total in result[0], collections in result[1])."""
    result = [0.0, 0]
    started: list[float] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            result[0] += time.perf_counter() - started.pop()
            result[1] += 1

    gc.callbacks.append(callback)
    try:
        yield result
    finally:
        gc.callbacks.remove(callback)


def _bucket(key: tuple[str, int, str]) -> str:
    where = f"{key[0]}:{key[2]}"
    for name, needles in BUCKETS:
        if any(n in where for n in needles):
            return name
    return "other (stdlib, builtins)"


def profile(fn: Callable[[], object], repeat: int) -> tuple[pstats.Stats, float, list[float]]:
    prof = cProfile.Profile()
    with gc_timer() as gc_seconds:
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(repeat):
            fn()
        prof.disable()
        wall = time.perf_counter() - t0
    return pstats.Stats(prof), wall, gc_seconds


def profile_tables(title: str, stats: pstats.Stats, wall: float, gc_seconds: list[float], per: int,
                   unit: str) -> list[Table]:
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-9
    buckets: dict[str, float] = defaultdict(float)
    for key, value in raw.items():
        buckets[_bucket(key)] += value[2]
    t1 = Table(["bucket (own time)", "share", f"ms per {unit}"], [], title=f"{title}: cProfile, {per} {unit}s, "
               f"{wall / per * 1000:.1f} ms per {unit} under the profiler; cyclic GC {gc_seconds[0] / per * 1000:.1f}"
               f" ms per {unit} ({gc_seconds[1]} collections)")
    for name, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
        t1.rows.append([name, f"{seconds / total:.0%}", f"{seconds / per * 1000:.2f}"])
    t2 = Table(["function", "calls", "own ms per " + unit, "cumulative ms per " + unit], [],
               title=f"{title}: top functions by own time")
    for key, value in sorted(raw.items(), key=lambda kv: -kv[1][2])[:12]:
        filename = key[0].split("site-packages/")[-1].replace(str(sys.prefix), "")
        filename = filename.split("/work/main/")[-1]
        t2.rows.append([f"{filename}:{key[1]}({key[2]})"[-90:], f"{value[1] // per:,}",
                        f"{value[2] / per * 1000:.2f}", f"{value[3] / per * 1000:.2f}"])
    return [t1, t2]


def cpu_ms(fn: Callable[[], object], n: int) -> dict[str, float]:
    xs = []
    for _ in range(n):
        t0 = time.thread_time()
        fn()
        xs.append((time.thread_time() - t0) * 1000)
    return latency_summary(xs)


# --- the proposed fixes, as reversible in-process patches ------------------------------------------------------

@contextlib.contextmanager
def no_validation() -> Iterator[None]:
    review_module = sys.modules["plugin.review"]
    patches = [mock.patch.object(review_module, "validation_problem", lambda resource: None)]
    if "cds_hooks.batch.stream" in sys.modules:
        patches.append(mock.patch.object(sys.modules["cds_hooks.batch.stream"], "validation_problem",
                                         lambda resource: None))
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def memoized_matchers() -> Iterator[None]:
    """match_drug / match_condition memoized on the codings and texts they read."""
    fhir_read = sys.modules["plugin.fhir_read"]
    drug, condition = fhir_read.match_drug, fhir_read.match_condition
    drugs: dict = {}
    conditions: dict = {}

    def key(concepts: list, extra: tuple) -> tuple:
        return (tuple((s, c) for con in concepts for s, c, _ in fhir_read.codings(con)),
                tuple(t for con in concepts for t in fhir_read.concept_texts(con)) + extra)

    def match_drug(concepts, extra_texts, knowledge):
        extra = tuple(t for t in extra_texts if t)
        k = key(concepts, extra)
        if k not in drugs:
            drugs[k] = drug(concepts, extra, knowledge)
        return drugs[k]

    def match_condition(concept, knowledge):
        k = key([concept] if isinstance(concept, dict) else [], ())
        if k not in conditions:
            conditions[k] = condition(concept, knowledge)
        return conditions[k]

    with mock.patch.object(fhir_read, "match_drug", match_drug), \
            mock.patch.object(fhir_read, "match_condition", match_condition):
        yield


@contextlib.contextmanager
def observation_prefilter() -> Iterator[None]:
    """cds_hooks.batch.stream.chunk_lines: an Observation line that names none of the knowledge's LOINC codes is
    dropped before it is parsed (it cannot yield a fact). EXPERIMENT only: line numbers of bad records shift."""
    import re

    from plugin import default_knowledge

    stream = sys.modules["cds_hooks.batch.stream"]
    knowledge = default_knowledge()
    codes = {c.encode() for c in (*knowledge.labs, *knowledge.monitoring_labs)}
    code = re.compile(rb'"code"\s*:\s*"([0-9]{1,7}-[0-9])"')
    original = stream.chunk_lines

    def chunk_lines(chunk):
        for line in original(chunk):
            if b'"resourceType":"Observation"' in line[:40] and not any(c in codes for c in code.findall(line)):
                continue
            yield line

    with mock.patch.object(stream, "chunk_lines", chunk_lines):
        yield


# --- the runs --------------------------------------------------------------------------------------------------

def hooks_section(report: Report) -> None:
    from cds_hooks.app import create_app
    from plugin import review

    with temp_dir("cramp-bench-profile-") as tmp:
        app = create_app(local_settings(tmp))
        add_echo_route(app)
        templates = discovery_templates(app)["leg-cramp-patient-view"]
        client = app.test_client()
        rows = [("small", "sample-ckd", dict(sample_patients())["sample-ckd"], 200),
                ("large", "bench-large", large_patient(), 20)]
        exp = Table(["patient", "variant (EXPERIMENT, patched in-process)", "CPU p50", "CPU p95", "vs baseline p50",
                     "wall p95", "wall p95 / floor"], [],
                    title="patient-view what-if: thread CPU time per call, 100 calls (small 300); then wall-clock "
                          "p95 next to the echo floor, calls alternating as in hook_latency")
        for row, pid, resources, repeat in rows:
            body = orjson.dumps(hook_request("patient-view", pid, prefetch_for(resources, templates)))

            def call(body=body) -> None:
                resp = client.post("/cds-services/leg-cramp-patient-view", data=body,
                                   content_type="application/json")
                assert resp.status_code == 200, resp.get_data(as_text=True)[:300]

            def echo(body=body) -> None:
                client.post("/bench/echo", data=body, content_type="application/json")

            for _ in range(5):
                call()
            stats, wall, gcs = profile(call, repeat)
            report.tables += profile_tables(f"patient-view {row}", stats, wall, gcs, repeat, "call")
            rv = review([orjson.loads(body)["prefetch"][k] for k in templates], now=datetime.now(UTC),
                        hook="patient-view")
            cited = {ref for f in rv.findings for ref in f.references}
            counter = mock.Mock(side_effect=sys.modules["plugin.validation"].validation_problem)
            with mock.patch.object(sys.modules["plugin.review"], "validation_problem", counter):
                call()
            report.notes.append(f"patient-view {row}: {counter.call_count} resources validated per call; the "
                                f"findings cite {len(cited)}")
            n = 300 if row == "small" else 100
            variants: list[tuple[str, list[Callable]]] = [
                ("baseline (code as is)", []),
                ("A: no FHIR validation in the hook path", [no_validation]),
                ("B: gc.freeze() after create_app", [frozen_gc]),
                ("A+B", [no_validation, frozen_gc]),
            ]
            base = None
            for name, patches in variants:
                with contextlib.ExitStack() as stack:
                    for p in patches:
                        stack.enter_context(p())
                    for _ in range(5):
                        call()
                    s = cpu_ms(call, n)
                    wall, floor = (latency_summary(x) for x in time_calls(call, echo, n, 5))
                base = base or s["p50"]
                exp.rows.append([row, name, f"{s['p50']:.2f} ms", f"{s['p95']:.2f} ms", f"{s['p50'] / base:.2f}x",
                                 f"{wall['p95']:.2f} ms", f"{wall['p95'] / floor['p95']:.1f}x"])
        report.tables.append(exp)


def batch_section(report: Report, patients: int) -> None:
    from cds_hooks.batch import RunConfig, run_review
    from plugin import ReviewOptions

    export = bulk_export(patients)
    config = RunConfig(as_of=datetime.now(UTC), options=ReviewOptions(validate=True), workers=1)

    def run_batch() -> tuple:
        result = run_review([str(export.folder)], config)
        return tuple((r.patient, tuple(r.contributor_ids)) for r in result.reviewed)

    stats, wall, gcs = profile(run_batch, 1)
    report.tables += profile_tables(f"batch, {patients:,} patients, 1 worker", stats, wall, gcs, 1, "run")
    exp = Table(["variant (EXPERIMENT, patched in-process)", "CPU s", "patients/s (CPU)", "speed-up",
                 "same findings"], [],
                title=f"batch what-if: {patients:,} patients, 1 worker, process CPU time")
    variants: list[tuple[str, list[Callable]]] = [
        ("baseline (code as is, validation on)", []),
        ("A: no FHIR validation (--no-validate)", [no_validation]),
        ("A + D: memoized drug/condition matching", [no_validation, memoized_matchers]),
        ("A + D + B: gc.freeze() before the run", [no_validation, memoized_matchers, frozen_gc]),
        ("A + D + B + E: Observation lines pre-filtered on bytes", [no_validation, memoized_matchers, frozen_gc,
                                                                    observation_prefilter]),
    ]
    base = None
    expected = None
    for name, patches in variants:
        with contextlib.ExitStack() as stack:
            for p in patches:
                stack.enter_context(p())
            t0 = time.process_time()
            found = run_batch()
            cpu = time.process_time() - t0
        base = base or cpu
        expected = expected or found
        exp.rows.append([name, f"{cpu:.2f}", f"{patients / cpu:,.0f}", f"{base / cpu:.2f}x",
                         "yes" if found == expected else "NO"])
    report.tables.append(exp)


def run(batch_patients: int = 2000) -> Report:
    started = time.perf_counter()
    report = Report("Hot spots (cProfile) and what-if experiments", "python -m benchmarks.profile_hotspots")
    hooks_section(report)
    batch_section(report, batch_patients)
    report.notes.append("the whole-word regex scan of drug names and condition words (knowledge.drug_names / "
                        "condition_words .finditer in plugin.fhir_read) runs in C without a profiler entry: it is "
                        "counted in the own time of the function iterating it (_word_matches, or match_drug before)")
    report.elapsed_s = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_hotspots", description=__doc__.split("\n")[0])
    parser.add_argument("--batch-patients", type=int, default=2000)
    args = parser.parse_args(argv)
    print_standalone(run, args.batch_patients)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
