"""Shared helpers of the benchmarks: the machine, percentiles, reports with TARGET/PASS/MISS, prefetch building.

Nothing here times anything by itself; every figure is measured by the benchmark module that prints it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CRAMP_SHARED_DATA", ROOT.parent / "shared" / "data"))
SAMPLES = ROOT / "samples"
BENCH_DIR = Path(os.environ.get("CRAMP_BENCH_DIR", ROOT / ".bench"))  # git-ignored cache of generated data
BENCH_BASE_URL = "http://bench.example.org/fhir"
SERVICE_IDS = ("leg-cramp-patient-view", "leg-cramp-order-select", "leg-cramp-order-sign")


# --- the machine -------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' + uncommitted changes' if dirty else ''}" if rev else "unknown"


def machine() -> dict[str, str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    ram = _ram_gib()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": _cpu_model(),
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "commit": _git_revision(),
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)" if load else "unknown",
    }


class ForeignLoad:
    """CPU time used by processes other than this one and its (waited-for) children while a benchmark ran.

    Busy time from /proc/stat minus this process tree's own user+system time: other sessions' tests on a shared
    machine show up here, and make wall-clock figures noisy.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None
        self.share: float | None = None

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return (float("nan"),) * 3
        hz = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        busy = (sum(fields[:8]) - idle) / hz
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.monotonic()

    def __enter__(self) -> Self:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        busy0, own0, t0 = self._start
        busy1, own1, t1 = self._sample()
        cores = os.cpu_count() or 1
        if t1 > t0 and not math.isnan(busy1):
            self.share = max(0.0, (busy1 - busy0) - (own1 - own0)) / ((t1 - t0) * cores)

    def note(self) -> str | None:
        if self.share is None:
            return None
        text = f"other processes used {self.share:.0%} of the machine's CPU while this ran"
        if self.share > 0.10:
            text += " (a shared machine: wall-clock figures are noisy; the side-by-side ratios are more robust)"
        return text


def machine_text(info: dict[str, str] | None = None) -> str:
    info = info or machine()
    return "\n".join(f"  {k:<7} {v}" for k, v in info.items())


# --- statistics --------------------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "mean": sum(ms) / len(ms), "max": max(ms)}


def fmt_ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


# --- reports -----------------------------------------------------------------------------------------------

PASS, MISS, INFO = "PASS", "MISS", "INFO"


@dataclass
class Target:
    name: str          # what is measured, e.g. "patient-view p95, 2,000 resources"
    figure: str        # the measured figure, formatted
    target: str        # the target, formatted, e.g. "< 50 ms"
    ok: bool | None    # None = reported only, no target (INFO)

    @property
    def verdict(self) -> str:
        return INFO if self.ok is None else (PASS if self.ok else MISS)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    title: str = ""


@dataclass
class Report:
    title: str
    command: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def target(self, name: str, figure: str, target: str, ok: bool | None) -> None:
        self.targets.append(Target(name, figure, target, ok))

    @property
    def misses(self) -> list[Target]:
        return [t for t in self.targets if t.ok is False]

    def to_text(self) -> str:
        out = [f"== {self.title} ==", f"command: {self.command}"]
        for table in self.tables:
            out.append("")
            if table.title:
                out.append(table.title)
            out.extend(_aligned([table.header, *table.rows]))
        if self.targets:
            out.append("")
            out.append("TARGETS")
            out.extend(_aligned([["verdict", "what", "figure", "target"],
                                 *[[t.verdict, t.name, t.figure, t.target] for t in self.targets]]))
        if self.notes:
            out.append("")
            out.extend(f"note: {n}" for n in self.notes)
        out.append(f"(took {self.elapsed_s:.1f} s)")
        return "\n".join(out)

    def to_markdown(self) -> str:
        out = [f"### {self.title}", "", f"`{self.command}` (took {self.elapsed_s:.0f} s)", ""]
        for table in self.tables:
            if table.title:
                out += [f"*{table.title}*", ""]
            out += _md_table(table.header, table.rows) + [""]
        if self.targets:
            out += _md_table(["target", "figure", "goal", "verdict"],
                             [[t.name, t.figure, t.target, f"**{t.verdict}**"] for t in self.targets]) + [""]
        out += [f"- {n}" for n in self.notes]
        if self.notes:
            out.append("")
        return "\n".join(out)


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(cell: object) -> str:
        return str(cell).replace("|", "\\|")

    return ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]]


def watched(run: Callable[..., Report], *args: Any, **kwargs: Any) -> Report:
    """Run a benchmark and note how much CPU other processes took meanwhile."""
    with ForeignLoad() as load:
        report = run(*args, **kwargs)
    if note := load.note():
        report.notes.append(note)
    return report


def print_standalone(run: Callable[..., Report], *args: Any, **kwargs: Any) -> Report:
    """What `python -m benchmarks.X` prints: the machine, then the report."""
    print("machine:")
    print(machine_text())
    print()
    sys.stdout.flush()
    report = watched(run, *args, **kwargs)
    print(report.to_text())
    sys.stdout.flush()
    return report


# --- processes and ports -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python() -> str:
    """The interpreter running the benchmarks (the project's venv under `make bench`)."""
    return sys.executable


def venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def rss_kib(pid: int) -> int | None:
    """Resident set size of one process in KiB from /proc (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_of(pid: int) -> list[int]:
    """Direct children of a process, from /proc/<pid>/task/*/children."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        return []
    return sorted(set(kids))


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: for processes a benchmark started (by their own pid only)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# --- the service in-process ----------------------------------------------------------------------------------

def local_settings(data_dir: Path, **changes: Any):
    """Settings of the local profile (authentication off) with a temporary database; access log quiet."""
    from cds_hooks.settings import Settings

    env = {"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(data_dir), "CRAMP_LOG_LEVEL": "WARNING"}
    env.update({k: str(v) for k, v in changes.items()})
    return Settings.from_env(env)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def discovery_templates(app) -> dict[str, dict[str, str]]:
    """service id -> prefetch templates, read from the app's own discovery document."""
    client = app.test_client()
    doc = client.get("/cds-services").get_json()
    return {s["id"]: s.get("prefetch", {}) for s in doc["services"]}


# --- FHIR data -> prefetch -----------------------------------------------------------------------------------

def _template_type(template: str) -> tuple[str, bool]:
    """('MedicationRequest', False) for a search template, ('Patient', True) for a read."""
    return re.split(r"[/?]", template, maxsplit=1)[0], "?" not in template


def searchset(resources: list[dict], base: str = BENCH_BASE_URL, includes: list[dict] = ()) -> dict:
    def entry(r: dict, mode: str) -> dict:
        return {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": mode}}

    return {
        "resourceType": "Bundle", "type": "searchset", "total": len(resources),
        "link": [{"relation": "self", "url": f"{base}/search"}],
        "entry": [entry(r, "match") for r in resources] + [entry(r, "include") for r in includes],
    }


def prefetch_for(resources: list[dict], templates: dict[str, str]) -> dict[str, Any]:
    """Every template key filled the way a FHIR server would answer it, from one patient's resources.

    A read key gets the resource; a search key gets a searchset Bundle of every resource of its type (not filtered
    by the template's code/date parameters: the client may send more than asked, a worst case for the service).
    Medications that medication resources reference are added as `include` entries (`_include`).
    """
    medications = {f"Medication/{r['id']}": r for r in resources if r.get("resourceType") == "Medication"}
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        rtype, is_read = _template_type(template)
        matching = [r for r in resources if r.get("resourceType") == rtype]
        if is_read:
            prefetch[key] = matching[0] if matching else None
            continue
        refs = [(r.get("medicationReference") or {}).get("reference") for r in matching]
        includes = list({ref: medications[ref] for ref in refs if ref in medications}.values())
        prefetch[key] = searchset(matching, includes=includes)
    return prefetch


def hook_request(hook: str, patient_id: str, prefetch: dict | None, *, context: dict | None = None,
                 fhir_server: str | None = None) -> dict:
    ctx = {"userId": "Practitioner/bench", "patientId": patient_id}
    ctx.update(context or {})
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": ctx}
    if fhir_server:
        body["fhirServer"] = fhir_server
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def _walk_references(node: Any, mapping: dict[str, str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in mapping:
            node["reference"] = mapping[ref]
        for value in node.values():
            _walk_references(value, mapping)
    elif isinstance(node, list):
        for value in node:
            _walk_references(value, mapping)


def server_shaped(bundle: dict) -> list[dict]:
    """A transaction/collection Bundle's resources as a FHIR server would return them after upload:
    every resource has an id and `urn:uuid:` references become `Type/id`."""
    mapping: dict[str, str] = {}
    resources: list[dict] = []
    for n, entry in enumerate(bundle.get("entry") or ()):
        resource = entry.get("resource")
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        full_url = entry.get("fullUrl") or ""
        if not resource.get("id"):
            resource["id"] = full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1] or f"bench-{n}"
        if full_url:
            mapping[full_url] = f"{resource['resourceType']}/{resource['id']}"
        resources.append(resource)
    _walk_references(resources, mapping)
    return resources


def load_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def sample_patients() -> list[tuple[str, list[dict]]]:
    """(patient id, resources) of every project sample patient (samples/patients/*.json)."""
    out = []
    for path in sorted((SAMPLES / "patients").glob("*.json")):
        resources = server_shaped(load_json(path))
        patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
        if patient is not None:
            out.append((patient["id"], resources))
    return out


def largest_shared_bundle() -> Path | None:
    bundles = sorted((SHARED_DATA / "bundles").glob("*.json"), key=lambda p: p.stat().st_size) \
        if (SHARED_DATA / "bundles").is_dir() else []
    return bundles[-1] if bundles else None


def count_by_type(resources: Iterable[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in resources:
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    return counts
