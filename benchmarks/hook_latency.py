"""Hook latency in-process: patient-view over small, medium and large prefetches, next to an echo FLOOR.

The app is the real one (``create_app``, local profile: authentication off, a temporary database, access log at
WARNING) driven through Flask's test client. The FLOOR is an extra route registered on the same app object that
parses the same request body with the service's own JSON reader and returns it as JSON: what any endpoint of this
app costs for that body. Service and floor are timed in blocks (a block of service calls, then a block of floor
calls, taking turns): drift hits both alike, and neither pays for the garbage the other leaves behind.

Rows:
  small   one project sample patient (samples/patients/ckd-diuretics.json) as prefetch
  medium  the largest patient bundle in ../shared/data/bundles as server-shaped searchset prefetch keys
  large   the generated ~2,000-resource patient (benchmarks.generate.large_patient)
  fhir    the medium patient served by the loopback FHIR server (tests.fhir_server), prefetch omitted, so the
          service fetches every key itself (skipped with the reason when Node.js/npm cannot run it)

Targets: p95 within 3x the floor's p95 (small, medium), within 2x for the large ~2,000-resource patient; p95 under
50 ms for the large patient.
"""
from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import orjson

from benchmarks.common import (
    Report,
    Table,
    count_by_type,
    discovery_templates,
    fmt_ms,
    hook_request,
    largest_shared_bundle,
    latency_summary,
    load_json,
    local_settings,
    prefetch_for,
    print_standalone,
    sample_patients,
    server_shaped,
    temp_dir,
)
from benchmarks.generate import large_patient

PATIENT_VIEW = "leg-cramp-patient-view"
SMALL_SAMPLE = "sample-ckd"
FLOOR_RATIO = 3.0
LARGE_FLOOR_RATIO = 2.0   # the large patient: parsing dominates, so the review must stay close to the floor
BLOCK = 10                # calls per block
LARGE_P95_MS = 50.0


def add_echo_route(app) -> None:
    """The FLOOR: parse the body with the service's JSON reader and answer it back as JSON."""
    try:
        from cds_hooks.service.app import json_response, read_json
    except ImportError:  # the service renamed its helpers: fall back to the same parser, orjson
        from flask import Response, request

        def read_json():
            return orjson.loads(request.get_data(cache=False))

        def json_response(payload):
            return Response(orjson.dumps(payload), mimetype="application/json")

    app.add_url_rule("/bench/echo", "bench_echo", lambda: json_response(read_json()), methods=["POST"])


def cases() -> list[tuple[str, str, str, list[dict]]]:
    """(row, patient id, what it is, resources) for small, medium and large."""
    out = []
    samples = dict(sample_patients())
    if SMALL_SAMPLE in samples:
        out.append(("small", SMALL_SAMPLE, "samples/patients/ckd-diuretics.json", samples[SMALL_SAMPLE]))
    bundle_path = largest_shared_bundle()
    if bundle_path is not None:
        resources = server_shaped(load_json(bundle_path))
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        out.append(("medium", patient["id"], f"../shared/data/bundles/{bundle_path.name[:40]}…", resources))
    out.append(("large", "bench-large", "generated (benchmarks.generate.large_patient)", large_patient()))
    return out


def time_calls(call: Callable[[], int], other: Callable[[], int], n: int, warmup: int,
               block: int = BLOCK) -> tuple[list, list]:
    """Milliseconds per call of `call` and of `other`, timed in blocks of `block` calls taking turns."""
    for _ in range(warmup):
        call()
        other()
    a: list[float] = []
    b: list[float] = []
    gc.collect()
    while len(a) < n:
        size = min(block, n - len(a))
        for fn, out in ((call, a), (other, b)):
            for _ in range(size):
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1000)
    return a, b


def run(calls: int = 200, warmup: int = 20, fhir_calls: int = 200) -> Report:
    started = time.perf_counter()
    from cds_hooks.app import create_app

    report = Report("Hook latency (in-process, Flask test client)", "python -m benchmarks.hook_latency")
    table = Table(["row", "resources", "body", "cards", "service p50", "p95", "p99", "floor p50", "floor p95",
                   "p95 / floor"], [], title=f"patient-view, {calls} calls per row after {warmup} warm-up calls")
    report.tables.append(table)
    with temp_dir("cramp-bench-latency-") as tmp:
        app = create_app(local_settings(tmp))
        add_echo_route(app)
        templates = discovery_templates(app)[PATIENT_VIEW]
        client = app.test_client()
        medium: tuple[str, list[dict]] | None = None
        for row, patient_id, what, resources in cases():
            body = orjson.dumps(hook_request("patient-view", patient_id, prefetch_for(resources, templates)))
            counts = count_by_type(r for r in resources if r["resourceType"] in
                                   {t.split("?")[0].split("/")[0] for t in templates.values()})
            n_resources = sum(counts.values())
            if row == "medium":
                medium = (patient_id, resources)
            first = client.post(f"/cds-services/{PATIENT_VIEW}", data=body, content_type="application/json")
            if first.status_code != 200:
                report.notes.append(f"{row}: the service answered {first.status_code}: "
                                    f"{first.get_data(as_text=True)[:300]}")
                report.target(f"p95 within {FLOOR_RATIO:g}x floor, {row}", "error", f"≤ {FLOOR_RATIO:g}x", False)
                continue
            n_cards = len(first.get_json().get("cards", []))

            def service(body=body) -> int:
                return client.post(f"/cds-services/{PATIENT_VIEW}", data=body,
                                   content_type="application/json").status_code

            def echo(body=body) -> int:
                return client.post("/bench/echo", data=body, content_type="application/json").status_code

            svc_ms, floor_ms = time_calls(service, echo, calls, warmup)
            s, f = latency_summary(svc_ms), latency_summary(floor_ms)
            ratio = s["p95"] / f["p95"]
            table.rows.append([row, f"{n_resources:,}", f"{len(body) / 1e6:.2f} MB", str(n_cards), fmt_ms(s["p50"]),
                               fmt_ms(s["p95"]), fmt_ms(s["p99"]), fmt_ms(f["p50"]), fmt_ms(f["p95"]),
                               f"{ratio:.1f}x"])
            report.notes.append(f"{row}: {what}; " + ", ".join(f"{n} {t}" for t, n in counts.items())
                                + ("" if n_cards else "; no card: the record documents no leg cramps (trigger policy "
                                   "'documented'), the review runs in full all the same"))
            goal = LARGE_FLOOR_RATIO if row == "large" else FLOOR_RATIO
            report.target(f"patient-view p95 within {goal:g}x the floor, {row}", f"{ratio:.1f}x "
                          f"({fmt_ms(s['p95'])} vs {fmt_ms(f['p95'])})", f"≤ {goal:g}x", ratio <= goal)
            if row == "large":
                report.target(f"patient-view p95, {n_resources:,} resources", fmt_ms(s["p95"]),
                              f"< {LARGE_P95_MS:g} ms", s["p95"] < LARGE_P95_MS)
        _fhir_row(report, table, client, templates, medium, fhir_calls, min(warmup, 5))
    report.notes.append("prefetch search keys hold every resource of their type (not filtered by the template's "
                        "code/date query): the client sends more than asked, a worst case")
    report.elapsed_s = time.perf_counter() - started
    return report


def _fhir_row(report: Report, table: Table, client, templates: dict[str, str],
              medium: tuple[str, list[dict]] | None, calls: int, warmup: int) -> None:
    """The FHIR-fallback path: no prefetch, the service fetches from the loopback FHIR server."""
    def skip(reason: str) -> None:
        table.rows.append(["fhir", "-", "-", "-", "skipped", "", "", "", "", ""])
        report.notes.append(f"fhir: skipped: {reason}")

    if medium is None:
        return skip("no medium patient (../shared/data/bundles absent)")
    try:
        from tests.fhir_server import FhirServer, node_available
    except ImportError as exc:
        return skip(f"tests.fhir_server cannot be imported ({exc})")
    reason = node_available()
    if reason is not None:
        return skip(reason)
    patient_id, resources = medium
    wanted = {t.split("?")[0].split("/")[0] for t in templates.values()}
    with FhirServer() as fhir:
        fhir.load([r for r in resources if r["resourceType"] in wanted], preserve_ids=True)
        body = orjson.dumps(hook_request("patient-view", patient_id, None, fhir_server=fhir.base_url))
        first = client.post(f"/cds-services/{PATIENT_VIEW}", data=body, content_type="application/json")
        if first.status_code != 200:
            return skip(f"the service answered {first.status_code}: {first.get_data(as_text=True)[:300]}")
        n_cards = len(first.get_json().get("cards", []))
        queries = _resolved_queries(templates, patient_id)

        def service() -> int:
            return client.post(f"/cds-services/{PATIENT_VIEW}", data=body,
                               content_type="application/json").status_code

        pool = ThreadPoolExecutor(max_workers=len(queries))

        def direct() -> int:  # the same searches straight from the FHIR server, in parallel: the fetch floor
            return sum(1 for _ in pool.map(lambda q: fhir.request("GET", q).status_code, queries))

        try:
            svc_ms, floor_ms = time_calls(service, direct, calls, warmup)
        finally:
            pool.shutdown()
        fetched = sum(len(fhir.search_all(q.split("?")[0], **_params(q))) if "?" in q else 1 for q in queries)
    s, f = latency_summary(svc_ms), latency_summary(floor_ms)
    table.rows.append(["fhir", f"{fetched:,} fetched", f"{len(body)} B", str(n_cards), fmt_ms(s["p50"]),
                       fmt_ms(s["p95"]), fmt_ms(s["p99"]), fmt_ms(f["p50"]), fmt_ms(f["p95"]),
                       f"{s['p95'] / f['p95']:.1f}x"])
    report.notes.append(f"fhir: the medium patient loaded into the loopback FHIR server (node); no prefetch, "
                        f"{calls} calls; its floor is the same {len(queries)} searches sent straight to the FHIR "
                        f"server in parallel (no target set for this row)")


def _resolved_queries(templates: dict[str, str], patient_id: str) -> list[str]:
    from datetime import UTC, datetime

    from cds_hooks.service.prefetch import resolve_template

    now = datetime.now(UTC)
    return [resolve_template(t, {"patientId": patient_id}, now) for t in templates.values()]


def _params(query: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(query.split("?", 1)[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hook_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="timed calls per row (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--fhir-calls", type=int, default=200, help="timed calls of the FHIR row (default 200)")
    args = parser.parse_args(argv)
    print_standalone(run, args.calls, args.warmup, args.fhir_calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
