"""HTTP load on the production server: gunicorn, 2 workers, 16 concurrent clients, 30 s, a realistic mix.

The server is the production command (``gunicorn -c python:cds_hooks.service.gunicorn_conf -b 127.0.0.1:PORT
'cds_hooks.app:create_app()'``: 2 processes of 8 threads) with
CRAMP_PROFILE=local (authentication off), a temporary CRAMP_DATA_DIR and the default INFO access log (to a file),
on a free loopback port. Clients are threads with one ``requests.Session`` each, in this process. The mix:
70% patient-view over the 12 sample patients (varied prefetch), 20% order-select (a quinine order, or a
contributor drug for a patient with documented cramps), 5% discovery, 5% feedback (an override with the
non-suppressing reason ``not-relevant`` on a card this client received). A 5 s warm-up at full load precedes
the measured window and is not counted.

The workers' RSS (/proc/<pid>/status VmRSS of the gunicorn master's children) is sampled every second.
Targets: 0 errors; p99 < 250 ms; workers' RSS in the last 10 s within 1.10x of the first 10 s.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson
import requests

from benchmarks.common import (
    ROOT,
    SAMPLES,
    Report,
    Table,
    children_of,
    fmt_ms,
    free_port,
    hook_request,
    latency_summary,
    load_json,
    prefetch_for,
    print_standalone,
    rss_kib,
    sample_patients,
    stop_process,
    temp_dir,
    venv_bin,
)

CLIENTS = 16
DURATION_S = 30.0
WARMUP_S = 5.0
WINDOW_S = 10.0
P99_MS = 250.0
MEMORY_RATIO = 1.10
MIX = (("patient-view", 70), ("order-select", 20), ("discovery", 5), ("feedback", 5))
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
JSON = {"Content-Type": "application/json"}


def start_gunicorn(port: int, data_dir: Path, log: BinaryIO) -> subprocess.Popen:
    env = dict(os.environ, CRAMP_PROFILE="local", CRAMP_DATA_DIR=str(data_dir))
    for key in ("CRAMP_DATABASE", "CRAMP_SECRET_KEY", "CRAMP_AUTH"):
        env.pop(key, None)
    return subprocess.Popen([venv_bin("gunicorn"), "-c", "python:cds_hooks.service.gunicorn_conf",
                             "-b", f"127.0.0.1:{port}", "cds_hooks.app:create_app()"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode} before answering")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer /healthz within {timeout:g} s")


def build_bodies(templates: dict[str, dict[str, str]]) -> dict[str, list[tuple[str, bytes]]]:
    """kind -> [(path, body)]: the request bodies the clients choose from."""
    pv_templates = templates["leg-cramp-patient-view"]
    os_templates = templates["leg-cramp-order-select"]
    patients = dict(sample_patients())
    bodies: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for pid, resources in patients.items():
        body = hook_request("patient-view", pid, prefetch_for(resources, pv_templates))
        bodies["patient-view"].append(("/cds-services/leg-cramp-patient-view", orjson.dumps(body)))
    # order-select: the sample quinine order, and a contributor drug (the hctz draft) for patients with cramps.
    quinine = load_json(SAMPLES / "hooks" / "order-select-quinine.json")["context"]
    hctz_drafts = load_json(SAMPLES / "hooks" / "order-sign-hctz.json")["context"]["draftOrders"]
    for pid, ctx in [("sample-quinine", quinine), ("sample-hctz", None), ("sample-asthma", None)]:
        if pid not in patients:
            continue
        if ctx is None:
            drafts = copy.deepcopy(hctz_drafts)
            for entry in drafts["entry"]:
                entry["resource"]["subject"] = {"reference": f"Patient/{pid}"}
            ids = [f"MedicationRequest/{e['resource']['id']}" for e in drafts["entry"]]
            ctx = {"draftOrders": drafts, "selections": ids}
        context = {"draftOrders": ctx["draftOrders"], "selections": ctx["selections"]}
        body = hook_request("order-select", pid, prefetch_for(patients[pid], os_templates), context=context)
        bodies["order-select"].append(("/cds-services/leg-cramp-order-select", orjson.dumps(body)))
    return bodies


def feedback_body(card_uuid: str) -> bytes:
    return orjson.dumps({"feedback": [{
        "card": card_uuid, "outcome": "overridden",
        "overrideReason": {"reason": {"system": "https://cramp-cds.org/fhir/CodeSystem/override-reason",
                                      "code": "not-relevant", "display": "Not relevant"}},
        "outcomeTimestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }]})


class Client(threading.Thread):
    def __init__(self, n: int, base: str, bodies: dict[str, list[tuple[str, bytes]]], start_at: float,
                 measure_from: float, stop_at: float) -> None:
        super().__init__(daemon=True, name=f"client-{n}")
        self.rng = random.Random(1000 + n)
        self.base, self.bodies = base, bodies
        self.start_at, self.measure_from, self.stop_at = start_at, measure_from, stop_at
        self.samples: list[tuple[float, str, int, float]] = []   # (start, kind, status, ms); status 0 = exception
        self.errors: list[str] = []
        self.cards: list[tuple[str, str]] = []                    # (service id, card uuid) seen
        self.warmup_requests = 0

    def one(self, session: requests.Session, kind: str) -> tuple[int, float]:
        if kind == "discovery":
            t0 = time.perf_counter()
            resp = session.get(f"{self.base}/cds-services", timeout=REQUEST_TIMEOUT_S)
        elif kind == "feedback":
            service, card = self.cards[-1] if self.cards else ("leg-cramp-patient-view", str(uuid.uuid4()))
            body = feedback_body(card)
            t0 = time.perf_counter()
            resp = session.post(f"{self.base}/cds-services/{service}/feedback", data=body, headers=JSON,
                                timeout=REQUEST_TIMEOUT_S)
        else:
            path, body = self.rng.choice(self.bodies[kind])
            t0 = time.perf_counter()
            resp = session.post(f"{self.base}{path}", data=body, headers=JSON, timeout=REQUEST_TIMEOUT_S)
            if resp.status_code == 200:
                for card in resp.json().get("cards", []):
                    if card.get("uuid"):
                        self.cards = [*self.cards[-20:], (path.rsplit("/", 1)[1], card["uuid"])]
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            self.errors.append(f"{kind}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp.status_code, ms

    def run(self) -> None:
        kinds, weights = zip(*MIX, strict=True)
        with requests.Session() as session:
            session.trust_env = False
            while time.monotonic() < self.start_at:
                time.sleep(0.001)
            while (now := time.monotonic()) < self.stop_at:
                kind = self.rng.choices(kinds, weights)[0]
                try:
                    status, ms = self.one(session, kind)
                except requests.RequestException as exc:
                    status, ms = 0, (time.monotonic() - now) * 1000
                    self.errors.append(f"{kind}: {type(exc).__name__}")
                if now >= self.measure_from:
                    self.samples.append((now - self.measure_from, kind, status, ms))
                else:
                    self.warmup_requests += 1


class MemorySampler(threading.Thread):
    """Every second: the summed VmRSS of the gunicorn master's children (the workers)."""

    def __init__(self, master: int, measure_from: float, stop_at: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.master, self.measure_from, self.stop_at = master, measure_from, stop_at
        self.samples: list[tuple[float, int, int]] = []   # (seconds into the window, workers' KiB, workers)
        self.master_kib: int | None = None

    def run(self) -> None:
        while (now := time.monotonic()) < self.measure_from:
            time.sleep(0.05)
        while (now := time.monotonic()) < self.stop_at + 0.5:
            workers = children_of(self.master)
            total = sum(rss_kib(p) or 0 for p in workers)
            self.samples.append((now - self.measure_from, total, len(workers)))
            self.master_kib = rss_kib(self.master)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))


def run(clients: int = CLIENTS, duration: float = DURATION_S, warmup: float = WARMUP_S) -> Report:
    started = time.perf_counter()
    report = Report("HTTP load (gunicorn, 2 workers, production command)", "python -m benchmarks.load_http")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with temp_dir("cramp-bench-load-") as tmp, open(tmp / "gunicorn.log", "wb") as log:
        proc = start_gunicorn(port, tmp / "data", log)
        try:
            wait_ready(base, proc)
            doc = requests.get(f"{base}/cds-services", timeout=10).json()
            templates = {s["id"]: s.get("prefetch", {}) for s in doc["services"]}
            bodies = build_bodies(templates)
            t0 = time.monotonic() + 0.5
            measure_from, stop_at = t0 + warmup, t0 + warmup + duration
            threads = [Client(n, base, bodies, t0, measure_from, stop_at) for n in range(clients)]
            sampler = MemorySampler(proc.pid, measure_from, stop_at)
            sampler.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=warmup + duration + REQUEST_TIMEOUT_S + 10)
            sampler.join(timeout=5)
            hung = [t.name for t in threads if t.is_alive()]
        finally:
            stop_process(proc)
        log_tail = (tmp / "gunicorn.log").read_text(errors="replace").splitlines()[-5:]
    _summarise(report, threads, sampler, duration, clients, bodies, hung, log_tail)
    report.elapsed_s = time.perf_counter() - started
    return report


def _summarise(report: Report, threads: list[Client], sampler: MemorySampler, duration: float, clients: int,
               bodies: dict, hung: list[str], log_tail: list[str]) -> None:
    samples = [s for t in threads for s in t.samples]
    errors = [e for t in threads for e in t.errors]
    measured_errors = sum(1 for s in samples if s[2] != 200)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for _, kind, _, ms in samples:
        by_kind[kind].append(ms)
    table = Table(["requests", "count", "req/s", "errors", "p50", "p95", "p99", "max"], [],
                  title=f"{clients} clients for {duration:g} s (after a warm-up of "
                        f"{sum(t.warmup_requests for t in threads):,} requests)")
    report.tables.append(table)
    everything = [ms for _, _, _, ms in samples]
    if not everything:
        report.notes.append("no request completed: " + "; ".join(errors[:5]))
        report.target("errors", "no requests", "0", False)
        return
    for kind, ms_list in [("all", everything), *sorted(by_kind.items())]:
        s = latency_summary(ms_list)
        errs = measured_errors if kind == "all" else sum(1 for x in samples if x[1] == kind and x[2] != 200)
        table.rows.append([kind, f"{s['n']:,}", f"{s['n'] / duration:,.0f}", str(errs), fmt_ms(s["p50"]),
                           fmt_ms(s["p95"]), fmt_ms(s["p99"]), fmt_ms(s["max"])])
    total = latency_summary(everything)
    report.target("errors (all requests, warm-up included)", str(len(errors)), "0", not errors)
    report.target("p99 latency, all requests", fmt_ms(total["p99"]), f"< {P99_MS:g} ms", total["p99"] < P99_MS)
    report.target("throughput", f"{len(everything) / duration:,.0f} req/s", "(reported)", None)

    mem = Table(["window", "samples", "workers", "workers' RSS (avg)"], [], title="gunicorn workers' RSS, sampled 1/s")
    report.tables.append(mem)
    first = [kib for t, kib, _ in sampler.samples if t < WINDOW_S]
    last = [kib for t, kib, _ in sampler.samples if duration - WINDOW_S <= t <= duration]
    if first and last:
        a, b = sum(first) / len(first), sum(last) / len(last)
        workers = max(n for _, _, n in sampler.samples)
        mem.rows.append([f"first {WINDOW_S:g} s", str(len(first)), str(workers), f"{a / 1024:.1f} MiB"])
        mem.rows.append([f"last {WINDOW_S:g} s", str(len(last)), str(workers), f"{b / 1024:.1f} MiB"])
        report.target("workers' RSS, last 10 s / first 10 s", f"{b / a:.3f} ({b / 1024:.1f} vs {a / 1024:.1f} MiB)",
                      f"≤ {MEMORY_RATIO:.2f}", b / a <= MEMORY_RATIO)
        if sampler.master_kib:
            report.notes.append(f"gunicorn master RSS {sampler.master_kib / 1024:.1f} MiB (not counted)")
    else:
        report.target("workers' RSS, last 10 s / first 10 s", "not sampled", f"≤ {MEMORY_RATIO:.2f}", False)
    if errors:
        report.notes.append("first errors: " + "; ".join(errors[:3]))
    if hung:
        report.notes.append(f"client threads still running at the end (abandoned): {', '.join(hung)}")
    report.notes.append(f"mix: {', '.join(f'{k} {w}%' for k, w in MIX)}; patient-view over "
                        f"{len(bodies['patient-view'])} sample patients, order-select over "
                        f"{len(bodies['order-select'])} orders")
    report.notes.append("the clients run in this Python process on the same 2 cores as the 2 workers: their own "
                        "CPU time is part of every latency")
    if log_tail and any("Traceback" in line or "ERROR" in line for line in log_tail):
        report.notes.append("gunicorn log tail: " + " | ".join(log_tail))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_http", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--duration", type=float, default=DURATION_S, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="unmeasured seconds first (default 5)")
    args = parser.parse_args(argv)
    print_standalone(run, args.clients, args.duration, args.warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
