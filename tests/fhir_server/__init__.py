"""A real FHIR R4 server on loopback for integration tests and benchmarks.

The server is ``server.mjs`` in this folder: a small Node HTTP front over the in-memory FHIR
repository of ``@medplum/fhir-router`` (pinned in ``package.json`` / ``package-lock.json``).
This module installs it (``npm ci``), starts it on a free port and loads test data into it::

    from tests.fhir_server import FhirServer, ensure_installed, node_available

    if (reason := node_available()) is None:
        with FhirServer() as fhir:               # or FhirServer(token="s3cret")
            resp = fhir.load(bundle)             # transaction; urn:uuid references resolved
            requests.get(f"{fhir.base_url}/Patient/123")

pytest users want the ``fhir_server`` / ``fresh_fhir_server`` fixtures in ``fixtures.py``.
See README.md in this folder for what the server supports.
"""

from __future__ import annotations

import collections
import copy
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import requests

__all__ = [
    "NODE_DIR",
    "FhirServer",
    "FhirServerError",
    "ensure_installed",
    "node_available",
    "to_transaction",
]

NODE_DIR = Path(__file__).parent
STAMP = NODE_DIR / "node_modules" / ".cramp-stamp"
MIN_NODE = (20, 19)  # engines of @medplum/* 4.5.2 ("^20.19.0 || >=22.12.0")
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
NPM_TIMEOUT_S = 600.0

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_URN_UUID = re.compile(r"^urn:uuid:([0-9a-fA-F-]{36})$")


class FhirServerError(RuntimeError):
    """The server answered a request with an error (carries the HTTP status and OperationOutcome)."""

    def __init__(self, status: int, body: Any, what: str):
        self.status = status
        self.body = body
        super().__init__(f"{what}: HTTP {status}: {_outcome_text(body)}")


def _outcome_text(body: Any) -> str:
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [
            i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code", "")
            for i in body.get("issue", [])
        ]
        return "; ".join(t for t in texts if t) or "OperationOutcome"
    text = body if isinstance(body, str) else json.dumps(body)[:500]
    return text[:500]


# --------------------------------------------------------------------------------------------
# Node / npm
# --------------------------------------------------------------------------------------------
def _node_version(node: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", out.strip())
    return tuple(int(x) for x in m.groups()) if m else None


def _stamp_value() -> str:
    h = hashlib.sha256()
    h.update((NODE_DIR / "package-lock.json").read_bytes())
    h.update(b"\0")
    h.update((NODE_DIR / "package.json").read_bytes())
    return h.hexdigest()


def _installed() -> bool:
    try:
        return (
            STAMP.read_text().strip() == _stamp_value()
            and (NODE_DIR / "node_modules" / "@medplum" / "fhir-router" / "package.json").is_file()
        )
    except OSError:
        return False


def ensure_installed() -> None:
    """Run ``npm ci`` in NODE_DIR unless node_modules matches package-lock.json (hash in .cramp-stamp).

    Safe to call from several processes at once (pytest-xdist workers): an exclusive file lock
    outside the work tree serialises the installs. Raises RuntimeError with npm's stderr tail.
    """
    if _installed():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found on PATH")
    lock_path = Path(tempfile.gettempdir()) / (
        "cramp-fhir-npm-" + hashlib.sha256(str(NODE_DIR.resolve()).encode()).hexdigest()[:16] + ".lock"
    )
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _installed():  # another process finished it while we waited
                return
            try:
                proc = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                    cwd=NODE_DIR,
                    capture_output=True,
                    text=True,
                    timeout=NPM_TIMEOUT_S,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"npm ci timed out after {NPM_TIMEOUT_S:.0f} s") from exc
            if proc.returncode != 0:
                tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
                raise RuntimeError(f"npm ci failed (exit {proc.returncode}):\n{tail}")
            STAMP.write_text(_stamp_value() + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_availability: dict[str, str | None] = {}


def node_available() -> str | None:
    """None when the server can run here; otherwise a human reason to skip.

    Checks node (>= 20.19, the engines range of @medplum 4.5.2) and npm, then installs the
    packages if needed (``ensure_installed``), so "npm install failed: ..." is a possible reason.
    The answer is cached for the process.
    """
    if "reason" in _availability:
        return _availability["reason"]
    reason: str | None = None
    node = shutil.which("node")
    if node is None:
        reason = "node not found on PATH"
    else:
        version = _node_version(node)
        if version is None:
            reason = f"cannot run {node} --version"
        elif version[:2] < MIN_NODE:
            reason = (
                f"node {'.'.join(map(str, version))} is too old: @medplum/fhir-router 4.5.2 needs "
                f">= {MIN_NODE[0]}.{MIN_NODE[1]}"
            )
        elif shutil.which("npm") is None and not _installed():
            reason = "npm not found on PATH (needed once to install the FHIR server's packages)"
        else:
            try:
                ensure_installed()
            except RuntimeError as exc:
                reason = f"npm install failed: {exc}"
    _availability["reason"] = reason
    return reason


# --------------------------------------------------------------------------------------------
# Bundles
# --------------------------------------------------------------------------------------------
def _fhir_id_from_entry(entry: dict) -> str | None:
    resource = entry.get("resource") or {}
    rid = resource.get("id")
    if isinstance(rid, str) and _FHIR_ID.match(rid):
        return rid
    m = _URN_UUID.match(entry.get("fullUrl") or "")
    return m.group(1).lower() if m else None


def to_transaction(bundle_or_resources: dict | Iterable[dict], *, preserve_ids: bool = False) -> dict:
    """Turn a Bundle (any type) or an iterable of resources into a transaction Bundle.

    * transaction/batch Bundles are kept (deep-copied); with ``preserve_ids`` their plain
      ``POST`` entries become ``PUT Type/<id>`` (``resource.id``, else the ``urn:uuid`` of the
      fullUrl) so the server keeps the ids of the file instead of assigning new ones;
    * other Bundles (collection, searchset, document, ...) and lists: a resource with an id
      becomes ``PUT Type/id``, one without an id ``POST Type``; ``urn:uuid:`` fullUrls are kept
      (a new one is made for resources that have neither), so references between entries
      resolve. searchset entries with ``search.mode == "outcome"`` are dropped.
    """
    if isinstance(bundle_or_resources, dict) and bundle_or_resources.get("resourceType") == "Bundle":
        bundle = copy.deepcopy(bundle_or_resources)
        if bundle.get("type") in ("transaction", "batch"):
            if preserve_ids:
                for entry in bundle.get("entry", []):
                    req = entry.get("request") or {}
                    resource = entry.get("resource")
                    if (
                        req.get("method") == "POST"
                        and resource
                        and not req.get("ifNoneExist")
                        and req.get("url") == resource.get("resourceType")
                        and (rid := _fhir_id_from_entry(entry))
                    ):
                        resource["id"] = rid
                        entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{rid}"}
            return bundle
        entries = [
            e
            for e in bundle.get("entry", [])
            if (e.get("search") or {}).get("mode") != "outcome" and e.get("resource")
        ]
    elif isinstance(bundle_or_resources, dict):
        entries = [{"resource": copy.deepcopy(bundle_or_resources)}]
    else:
        entries = [{"resource": copy.deepcopy(r)} for r in bundle_or_resources]

    out = []
    for entry in entries:
        resource = copy.deepcopy(entry["resource"])
        rtype = resource.get("resourceType")
        if not rtype:
            raise ValueError(f"not a FHIR resource (no resourceType): {str(resource)[:200]}")
        full_url = entry.get("fullUrl") or ""
        rid = resource.get("id")
        if isinstance(rid, str) and _FHIR_ID.match(rid):
            request = {"method": "PUT", "url": f"{rtype}/{rid}"}
            full_url = full_url or f"urn:uuid:{uuid.uuid4()}"
        else:
            resource.pop("id", None)
            request = {"method": "POST", "url": rtype}
            full_url = full_url if full_url.startswith("urn:uuid:") else f"urn:uuid:{uuid.uuid4()}"
        out.append({"fullUrl": full_url, "resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


# --------------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------------
class FhirServer:
    """``node server.mjs 0`` as a context manager; ``base_url`` is ``http://127.0.0.1:<port>/fhir``.

    ``token``: if given, the server demands ``Authorization: Bearer <token>`` (except for
    ``GET /fhir/metadata`` and CORS preflights); ``headers``/``load``/``get`` send it.
    ``default_count``: page size for searches without ``_count`` (server default 20).
    ``log``: log one line per request into the captured output (see ``output()``).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        default_count: int | None = None,
        log: bool = False,
        start_timeout: float = START_TIMEOUT_S,
    ):
        self.token = token
        self.default_count = default_count
        self.log = log
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.base_url: str = ""
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=400)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._session = requests.Session()

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.running:
            return self
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not found on PATH")
        ensure_installed()
        env = dict(os.environ)
        for key in ("FHIR_REQUIRE_TOKEN", "FHIR_PORT", "FHIR_DEFAULT_COUNT", "FHIR_LOG"):
            env.pop(key, None)
        env["CRAMP_FHIR_PARENT_PIPE"] = "1"  # the server exits when our end of stdin closes
        if self.token:
            env["FHIR_REQUIRE_TOKEN"] = self.token
        if self.default_count is not None:
            env["FHIR_DEFAULT_COUNT"] = str(self.default_count)
        if self.log:
            env["FHIR_LOG"] = "1"
        self._lines.clear()
        self._ready.clear()
        self.port = None
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            [node, str(NODE_DIR / "server.mjs"), "0"],
            cwd=NODE_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read_output, name="fhir-server-output", daemon=True)
        self._reader.start()
        deadline = t0 + self.start_timeout
        while not self._ready.wait(0.05):
            if self._proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(
                    f"FHIR server exited with code {self._proc.returncode} before listening:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"FHIR server did not print LISTENING within {self.start_timeout:.0f} s:\n{self.output()}"
                )
        self.startup_seconds = time.monotonic() - t0
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        return self

    def _read_output(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not self._ready.is_set():
                m = re.fullmatch(r"LISTENING (\d+)", line.strip())
                if m:
                    self.port = int(m.group(1))
                    self._ready.set()
                    continue
            self._lines.append(line)

    def output(self) -> str:
        """The last lines the server wrote (stdout and stderr), for error messages."""
        return "\n".join(self._lines)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE_S)
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(2)
        self._session.close()
        self._session = requests.Session()
        self._proc = None

    # -- HTTP helpers ----------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Accept": "application/fhir+json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if extra:
            h.update(extra)
        return h

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``path`` relative to base_url ("Patient/1", "Observation?code=..."), or absolute."""
        if not self.running:
            raise RuntimeError("FHIR server is not running")
        url = path if path.startswith("http") else f"{self.base_url}/{path.lstrip('/')}"
        kwargs["headers"] = self.headers(kwargs.get("headers"))
        kwargs.setdefault("timeout", 60)
        return self._session.request(method, url, **kwargs)

    def get(self, path: str, **params: Any) -> dict:
        """GET and return the JSON body; raises FhirServerError on 4xx/5xx."""
        resp = self.request("GET", path, params=params or None)
        return self._json_or_raise(resp, f"GET {path}")

    def search_all(self, path: str, **params: Any) -> list[dict]:
        """Every matching resource (search.mode == match), following ``next`` links."""
        out: list[dict] = []
        bundle = self.get(path, **params)
        while True:
            out += [
                e["resource"]
                for e in bundle.get("entry", [])
                if (e.get("search") or {}).get("mode", "match") == "match"
            ]
            nxt = next((lk["url"] for lk in bundle.get("link", []) if lk.get("relation") == "next"), None)
            if not nxt:
                return out
            bundle = self._json_or_raise(self.request("GET", nxt), f"GET {nxt}")

    def load(self, bundle_or_resources: dict | Iterable[dict], *, preserve_ids: bool = False) -> dict:
        """POST data as one transaction and return the transaction-response Bundle.

        Accepts a transaction/batch Bundle (sent as is), any other Bundle or a list of resources
        (converted by ``to_transaction``). ``preserve_ids=True`` turns POST entries into PUTs so
        the ids in the file survive (see ``to_transaction``). Raises FhirServerError on failure
        (the server rolls a failed transaction back completely).
        """
        tx = to_transaction(bundle_or_resources, preserve_ids=preserve_ids)
        resp = self.request(
            "POST",
            "",
            data=json.dumps(tx).encode(),
            headers={"Content-Type": "application/fhir+json"},
        )
        return self._json_or_raise(resp, "POST transaction")

    def reset(self) -> None:
        """Delete every resource (test-only endpoint POST /__admin/reset)."""
        resp = self.request("POST", f"{self.origin}/__admin/reset")
        if resp.status_code != 204:
            raise FhirServerError(resp.status_code, resp.text, "reset")

    def stats(self) -> dict[str, int]:
        """Resource counts by type (test-only endpoint GET /__admin/stats)."""
        resp = self.request("GET", f"{self.origin}/__admin/stats")
        return self._json_or_raise(resp, "stats")["counts"]

    @staticmethod
    def _json_or_raise(resp: requests.Response, what: str) -> dict:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 400:
            raise FhirServerError(resp.status_code, body, what)
        return body

    @staticmethod
    def created_ids(response_bundle: dict, resource_type: str | None = None) -> list[str]:
        """``Type/id`` of every entry of a transaction-response (optionally of one type), in order."""
        out = []
        for e in response_bundle.get("entry", []):
            loc = (e.get("response") or {}).get("location", "")
            ref = "/".join(loc.split("/_history/")[0].split("/")[-2:])
            if ref and (resource_type is None or ref.startswith(resource_type + "/")):
                out.append(ref)
        return out

    def __repr__(self) -> str:
        state = self.base_url if self.running else "stopped"
        return f"<FhirServer {state}{' token' if self.token else ''}>"
