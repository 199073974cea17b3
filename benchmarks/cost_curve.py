"""Cost growth: patient-view time per resource at 500, 2,000, 8,000 and 20,000 resources, next to the echo FLOOR.

The app is the real one (``create_app``, local profile, body and resource limits raised for the largest patient),
driven in-process through Flask's test client, like benchmarks.hook_latency. Each size is the generated large
patient (benchmarks.generate.sized_patient) as patient-view prefetch. Three variants are measured **in blocks**
(a block of calls of one variant, then a block of the next, repeated), never alternating call by call, so the
garbage one variant leaves behind is not paid by the other:

  service         the hook call as deployed (the service's own garbage-collector policy applies)
  service, no GC  the same call with Python's cyclic garbage collector switched off around it
  floor           the echo route (parse the body with the service's JSON reader, answer it back as JSON)

Figures are p50 microseconds per resource (the call's time divided by the resources in its prefetch).
Target: the service's µs per resource at 20,000 resources within 1.3x of that at 2,000 (cost linear in the data).
"""
from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

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
    temp_dir,
)
from benchmarks.generate import sized_patient
from benchmarks.hook_latency import PATIENT_VIEW, add_echo_route

SIZES = (500, 2_000, 8_000, 20_000)
WORK_PER_SIZE = 150_000   # resources processed per variant and size: calls = WORK_PER_SIZE / size (bounded)
GROWTH = 1.3              # target: µs/resource at the largest size within this of the 2,000-resource figure
BLOCK = 5                 # calls per block


def calls_for(size: int, scale: float = 1.0) -> int:
    return max(6, min(150, round(WORK_PER_SIZE * scale / size)))


def blocks(variants: dict[str, Callable[[], int]], calls: int, block: int = BLOCK) -> dict[str, list[float]]:
    """Milliseconds per call of each variant, measured in blocks of `block` calls, variants taking turns."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    done = 0
    while done < calls:
        n = min(block, calls - done)
        for name, call in variants.items():
            for _ in range(n):
                t0 = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t0) * 1000)
        done += n
    return times


def without_gc(call: Callable[[], int]) -> Callable[[], int]:
    def wrapped() -> int:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return call()
        finally:
            if enabled:
                gc.enable()
    return wrapped


def run(sizes: tuple[int, ...] = SIZES, scale: float = 1.0) -> Report:
    started = time.perf_counter()
    from cds_hooks.app import create_app

    report = Report("Cost growth (patient-view, µs per resource)", "python -m benchmarks.cost_curve")
    table = Table(["resources", "body", "calls", "service p50", "µs/res", "no GC p50", "µs/res", "floor p50",
                   "µs/res", "ours µs/res", "service / floor"], [],
                  title="p50 per call and per resource; ours = service minus floor")
    report.tables.append(table)
    per_resource: dict[int, float] = {}
    with temp_dir("cramp-bench-curve-") as tmp:
        app = create_app(local_settings(tmp, CRAMP_MAX_BODY_BYTES=200_000_000,
                                        CRAMP_MAX_PREFETCH_RESOURCES=max(sizes) * 2))
        add_echo_route(app)
        templates = discovery_templates(app)[PATIENT_VIEW]
        client = app.test_client()
        for size in sizes:
            resources = sized_patient(size)
            body = orjson.dumps(hook_request("patient-view", resources[0]["id"], prefetch_for(resources, templates)))

            def service(body=body) -> int:
                return client.post(f"/cds-services/{PATIENT_VIEW}", data=body,
                                   content_type="application/json").status_code

            def echo(body=body) -> int:
                return client.post("/bench/echo", data=body, content_type="application/json").status_code

            status = service()
            if status != 200:
                report.notes.append(f"{size:,}: the service answered {status}")
                continue
            calls = calls_for(size, scale)
            for warm in (service, echo):
                warm()
            times = blocks({"service": service, "nogc": without_gc(service), "floor": echo}, calls)
            p50 = {name: latency_summary(ms)["p50"] for name, ms in times.items()}
            us = {name: p50[name] * 1000 / size for name in p50}
            per_resource[size] = us["service"]
            table.rows.append([f"{size:,}", f"{len(body) / 1e6:.1f} MB", str(calls),
                               _ms(p50["service"]), f"{us['service']:.1f}", _ms(p50["nogc"]), f"{us['nogc']:.1f}",
                               _ms(p50["floor"]), f"{us['floor']:.1f}", f"{us['service'] - us['floor']:.1f}",
                               f"{p50['service'] / p50['floor']:.2f}x"])
    base, top = 2_000, max(sizes)
    if base in per_resource and top in per_resource and top != base:
        growth = per_resource[top] / per_resource[base]
        report.target(f"µs per resource at {top:,} vs {base:,} resources", f"{growth:.2f}x "
                      f"({per_resource[top]:.1f} vs {per_resource[base]:.1f} µs)", f"≤ {GROWTH:g}x", growth <= GROWTH)
    report.notes.append(f"blocks of {BLOCK} calls per variant, taking turns; calls per size = {WORK_PER_SIZE * scale:,.0f}"
                        " resources of work / size (6 to 150); the patient is benchmarks.generate.sized_patient")
    report.notes.append("prefetch search keys hold every resource of their type (a worst case, as in hook_latency)")
    report.elapsed_s = time.perf_counter() - started
    return report


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost_curve", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--scale", type=float, default=1.0, help="scale the calls per size (default 1)")
    args = parser.parse_args(argv)
    print_standalone(run, tuple(args.sizes), args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
