"""Terminology pack: what it costs to load and whether matching and reviews slow down with it.

1. Loading the knowledge in a fresh interpreter, with the pack and without (`load_knowledge(pack=None)`, the
   FLOOR): import of `plugin.knowledge` plus the load, timed inside the process. Repeated 5 times; medians.
2. `plugin.review` of every sample patient (in process, the hook's engine work), with and without the pack:
   200 rounds after 20 warm-up rounds; median and p95 per patient review.
3. `match_drug` of a code-only product (an RxNorm SBD only the pack knows, an NDC) against a name-only
   order (the word-pattern fallback, whose pattern grows with the pack's brand names): µs per call.
Targets: the knowledge load with the pack under 1 s (the service's whole start-up is `benchmarks.startup`); review p95 with the pack within 10 % (or 0.1 ms) of without.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import time
from datetime import UTC, datetime

from benchmarks.common import ROOT, Report, Table, percentile, print_standalone, python, sample_patients

REPEATS = 5
ROUNDS, WARMUP = 200, 20
NOW = datetime(2026, 11, 1, tzinfo=UTC)

_LOAD_SNIPPET = """
import time, json, sys
t0 = time.perf_counter()
from plugin.knowledge import load_knowledge
t1 = time.perf_counter()
k = load_knowledge(pack=None) if sys.argv[1] == "bare" else load_knowledge()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "rxnorm": len(k.rxnorm), "ndc": len(k.ndc)}))
"""


def _load(kind: str) -> dict:
    out = subprocess.run([python(), "-c", _LOAD_SNIPPET, kind], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def _review_ms(knowledge, patients) -> list[float]:
    from plugin import review

    per_patient: list[float] = []
    for n in range(WARMUP + ROUNDS):
        for _, resources in patients:
            t0 = time.perf_counter()
            review(resources, now=NOW, knowledge=knowledge)
            if n >= WARMUP:
                per_patient.append((time.perf_counter() - t0) * 1000)
    return per_patient


def _match_us(knowledge, concept: dict, calls: int = 20000) -> float:
    from plugin.fhir_read import match_drug

    match_drug([concept], [], knowledge)
    t0 = time.perf_counter()
    for _ in range(calls):
        match_drug([concept], [], knowledge)
    return (time.perf_counter() - t0) / calls * 1e6


def run(repeats: int = REPEATS) -> Report:
    from plugin.codes import NDC, RXNORM
    from plugin.knowledge import load_knowledge

    started = time.perf_counter()
    report = Report("Terminology pack: load, review and match cost", "python -m benchmarks.terminology")
    loads = {kind: [_load(kind) for _ in range(repeats)] for kind in ("bare", "pack")}
    rows = []
    for kind, runs in loads.items():
        rows.append([{"bare": "without the pack (FLOOR)", "pack": "with the pack"}[kind],
                     f"{statistics.median(r['import_s'] for r in runs) * 1000:.0f} ms",
                     f"{statistics.median(r['load_s'] for r in runs) * 1000:.0f} ms",
                     f"{runs[0]['rxnorm']:,}", f"{runs[0]['ndc']:,}"])
    report.tables.append(Table(["knowledge", "import", "load", "RxNorm codes", "NDCs"], rows,
                               f"fresh interpreter, median of {repeats}"))
    load = statistics.median(r["load_s"] for r in loads["pack"])
    report.target("knowledge load with the pack (median; the import is the same without it)",
                  f"{load * 1000:.0f} ms", "< 1 s", load < 1.0)

    bare, pack = load_knowledge(pack=None), load_knowledge()
    patients = sample_patients()
    timing = {name: _review_ms(k, patients) for name, k in (("without", bare), ("with", pack))}
    rows = [[f"{name} the pack", f"{statistics.median(ms):.3f} ms", f"{percentile(ms, 95):.3f} ms", f"{len(ms):,}"]
            for name, ms in timing.items()]
    report.tables.append(Table(["review of a sample patient", "median", "p95", "reviews"], rows,
                               f"{len(patients)} sample patients x {ROUNDS} rounds, in process"))
    p95_bare, p95_pack = percentile(timing["without"], 95), percentile(timing["with"], 95)
    report.target("review p95 with the pack vs without", f"{p95_pack:.3f} vs {p95_bare:.3f} ms",
                  "within 10 % or 0.1 ms", p95_pack <= max(p95_bare * 1.10, p95_bare + 0.1))

    cases = [("RxNorm SBD only the pack knows (214081 Thalitone)", {"coding": [{"system": RXNORM, "code": "214081"}]}),
             ("NDC 0004-0121-01 (Bumex)", {"coding": [{"system": NDC, "code": "0004-0121-01"}]}),
             ("name only: 'Demadex 20 mg tablet'", {"text": "Demadex 20 mg tablet"})]
    rows = [[label, f"{_match_us(bare, c):.1f} µs", f"{_match_us(pack, c):.1f} µs"] for label, c in cases]
    report.tables.append(Table(["match_drug of", "without the pack", "with the pack"], rows))
    report.notes.append("the name-only case uses the word cache, as the engine does; a new text pays one regex scan")
    report.elapsed_s = time.perf_counter() - started
    return report


if __name__ == "__main__":
    print_standalone(run)
