"""Find what to read: Bundle / resource JSON files, Bulk Data ndjson files (plain or .gz), manifests, URLs.

Accepted inputs (any mix, several at once):

* a `.json` file holding a FHIR Bundle (any type) or one loose resource;
* an `.ndjson` / `.ndjson.gz` file (Bulk Data: one resource a line; one resource type per file);
* a Bulk Data `manifest.json`: its `output[].url`s are mapped to the files of the same name next to it
  (also `continuesInFile` targets); its `error[]` files (OperationOutcome ndjson) become the report's
  export errors (what the server says it could not export), not bad records;
* a folder: its `*.json`, `*.ndjson`, `*.ndjson.gz` files, recursively; a folder holding a Bulk
  `manifest.json` reads the ndjson files the manifest lists (its error files as export errors; other ndjson
  files are named in a warning, a log as a non-FHIR file);
* an `http(s)://` FHIR base URL (see :mod:`cds_hooks.batch.fhir_source`).

Bulk exports also carry files that are not FHIR: a client's `log.ndjson` (export events: `eventId`, no
`resourceType`). Such a file is recognised, named in the report as a non-FHIR file, and not read.

The resource type of an ndjson file comes from the manifest's `type`, else from its name
(`Condition.000.ndjson`, `2.Condition.ndjson`, `Observation.2.ndjson.gz` -> `Condition`/`Observation`).

Discovery only uses `pathlib.Path` methods (`exists`, `is_dir`, `iterdir`, `open`, `/`, `name`, `parent`…) on
the paths that `discover`'s `make_path` builds, so the Spark driver runs the very same rules over Hadoop
file systems (`cds_hooks.batch.spark.hadoop_path.HadoopPath`: `s3a://`, `abfss://`, `dbfs:/`, `hdfs://`).
Open files with `open_binary`, never the built-in `open`.
"""
from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import orjson

from cds_hooks.batch.errors import InputError
from cds_hooks.batch.model import BadRecord
from plugin.fhir_read import MEDICATION_TYPES

# The resource types the engine reads; an ndjson file of another (known) type is skipped unread.
RELEVANT_TYPES = frozenset({"Patient", "Medication", "Condition", "Observation", *MEDICATION_TYPES})
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
MANIFEST_NAME = "manifest.json"
_TYPE_TOKEN = re.compile(r"^[A-Z][A-Za-z]{2,}$")
_MAX_ERROR_TEXT = 300


@dataclass(frozen=True)
class NdjsonFile:
    path: Path
    type_hint: str | None       # one resource type for the whole file, or None (unknown / mixed)
    label: str                  # how reports name the file
    export: str = ""            # the export it belongs to (its folder, or the server URL): patients are
    #                             merged within one export, never across exports

    def __post_init__(self) -> None:
        if not self.export:
            object.__setattr__(self, "export", str(self.path.parent))

    @property
    def gzipped(self) -> bool:
        return self.path.name.endswith(".gz")

    @property
    def relevant(self) -> bool:
        return self.type_hint is None or self.type_hint in RELEVANT_TYPES


@dataclass(frozen=True, order=True)
class NonFhirFile:
    """A file that came with the export but holds no FHIR resources (e.g. the client's log)."""

    file: str
    kind: str

    def to_dict(self) -> dict:
        return {"file": self.file, "kind": self.kind}


@dataclass
class Inputs:
    json_files: list[Path] = field(default_factory=list)
    scanned_json: set[Path] = field(default_factory=set)   # found in a folder, not named: non-FHIR JSON is skipped
    ndjson: list[NdjsonFile] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    bad_records: list[BadRecord] = field(default_factory=list)
    export_errors: list[BadRecord] = field(default_factory=list)   # the manifest's error OperationOutcomes
    non_fhir: list[NonFhirFile] = field(default_factory=list)
    error_files: set[Path] = field(default_factory=set)            # a manifest's error files (resolved paths)
    warnings: list[str] = field(default_factory=list)

    def add_non_fhir(self, label: str, kind: str) -> None:
        if label not in {f.file for f in self.non_fhir}:
            self.non_fhir.append(NonFhirFile(label, kind))

    def add_ndjson(self, item: NdjsonFile) -> None:
        if item.type_hint is None and (kind := non_fhir_kind(item.path)):
            self.add_non_fhir(item.label, kind)
            return
        resolved = item.path.resolve()
        if all(f.path.resolve() != resolved for f in self.ndjson):
            self.ndjson.append(item)

    def add_json(self, path: Path) -> None:
        resolved = path.resolve()
        if all(p.resolve() != resolved for p in self.json_files):
            self.json_files.append(path)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def is_ndjson(path: Path) -> bool:
    return path.name.lower().endswith(NDJSON_SUFFIXES)


def non_fhir_kind(path: Path) -> str | None:
    """What a non-FHIR ndjson file is (`log.ndjson`, or a first line that is a log event), else None."""
    name = path.name.lower()
    if name in ("log.ndjson", "log.ndjson.gz"):
        return "Bulk Data export log (not FHIR resources)"
    try:
        with open_binary(path) as fh:
            first = next((line for line in fh if line.strip()), b"")
        head = orjson.loads(first) if first else None
    except (OSError, EOFError, orjson.JSONDecodeError):
        return None   # unreadable or not JSON: the main pass reports its lines as bad records
    if isinstance(head, dict) and "resourceType" not in head and "eventId" in head:
        return "export log events (not FHIR resources)"
    return None


def type_from_name(name: str) -> str | None:
    """`2.Condition.ndjson` -> `Condition`; `log.ndjson` -> None."""
    stem = name
    for suffix in (".gz", ".ndjson", ".jsonl"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return next((t for t in stem.split(".") if _TYPE_TOKEN.match(t)), None)


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when its name ends in `.gz` (through `path.open`: any file system)."""
    raw = path.open("rb")
    if not path.name.endswith(".gz"):
        return raw
    unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
    unzipped.myfileobj = raw  # closed with it (as `gzip.open` does with the file it opens)
    return unzipped


def looks_like_manifest(path: Path) -> bool:
    if path.name.lower() == MANIFEST_NAME:
        return True
    with path.open("rb") as fh:
        head = fh.read(65536)
    return b'"resourceType"' not in head and b'"output"' in head and b'"transactionTime"' in head


def discover(args: list[str], make_path: Callable[[str], Path] = Path) -> Inputs:
    """Every input the command line names, in a stable order. Raises InputError for a missing path.

    `make_path`: how an argument becomes a path (a Hadoop path in the Spark driver)."""
    found = Inputs()
    for arg in args:
        if is_url(arg):
            found.urls.append(arg.rstrip("/"))
            continue
        path = make_path(arg)
        if not path.exists():
            raise InputError(f"input not found: {arg}")
        if path.is_dir():
            _discover_folder(path, found)
        elif path.suffix.lower() == ".json":
            if looks_like_manifest(path):
                read_manifest(path, found)
            else:
                found.add_json(path)
        elif is_ndjson(path):
            found.add_ndjson(NdjsonFile(path, type_from_name(path.name), str(path)))
        else:
            raise InputError(f"unsupported input {arg}: expected a .json Bundle or resource, an .ndjson(.gz) file, "
                             "a Bulk Data manifest.json, a folder, or an http(s) FHIR base URL")
    return found


def _discover_folder(folder: Path, found: Inputs) -> None:
    manifest = folder / MANIFEST_NAME
    has_manifest = manifest.is_file() and looks_like_manifest(manifest)
    listed: set[Path] = set()
    if has_manifest:
        before = {f.path.resolve() for f in found.ndjson}
        read_manifest(manifest, found)
        listed = {f.path.resolve() for f in found.ndjson} - before
    unlisted = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            _discover_folder(path, found)
        elif path == manifest or not path.is_file():
            continue
        elif is_ndjson(path):
            if has_manifest:
                if path.resolve() in listed or path.resolve() in found.error_files:
                    continue
                if kind := non_fhir_kind(path):
                    found.add_non_fhir(str(path), kind)
                else:
                    unlisted.append(path.name)
            else:
                found.add_ndjson(NdjsonFile(path, type_from_name(path.name), str(path)))
        elif path.suffix.lower() == ".json":
            found.add_json(path)
            found.scanned_json.add(path)
    if unlisted:
        found.warnings.append(f"{folder}: not listed in {MANIFEST_NAME}, not read: {', '.join(unlisted)}")


def _local_file(manifest: Path, url: object) -> Path | None:
    if not isinstance(url, str) or not url:
        return None
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return manifest.parent / name if name else None


def read_manifest(manifest: Path, found: Inputs) -> None:
    """Map a Bulk Data manifest's outputs to the local files of the same name next to it."""
    try:
        with manifest.open("rb") as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{manifest}: not a readable Bulk Data manifest ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise InputError(f"{manifest}: not a Bulk Data manifest (no \"output\" list)")
    items = [i for i in data["output"] if isinstance(i, dict)]
    by_url = {i.get("url"): i for i in items}
    seen: set[str] = set()
    queue = list(items)
    while queue:
        item = queue.pop(0)
        url = item.get("url")
        if not isinstance(url, str) or url in seen:
            continue
        seen.add(url)
        nxt = item.get("continuesInFile")  # non-standard in R4 servers (bulk-data-server); standard in v3
        if isinstance(nxt, str) and nxt not in seen:
            queue.append(by_url.get(nxt) or {"url": nxt, "type": item.get("type")})
        local = _local_file(manifest, url)
        if local is None or not local.is_file():
            name = local.name if local else repr(url)
            found.bad_records.append(BadRecord(str(manifest), None, f"output file {name} listed in the manifest "
                                                                    "is not next to it"))
            continue
        rtype = item.get("type") if isinstance(item.get("type"), str) else None
        found.add_ndjson(NdjsonFile(local, rtype or type_from_name(local.name), str(local)))
    for item in data.get("error") or ():
        local = _local_file(manifest, item.get("url") if isinstance(item, dict) else None)
        if local is not None and local.is_file():
            found.error_files.add(local.resolve())
            found.export_errors.extend(export_errors(local, str(local)))
        else:
            found.export_errors.append(BadRecord(str(manifest), None, "the server reported export errors in a "
                                                                      "file that is not next to the manifest"))
    if data.get("deleted"):
        found.warnings.append(f"{manifest}: {len(data['deleted'])} deleted-resource file(s) listed; deletions are "
                              "not applied")


def export_errors(path: Path, label: str) -> list[BadRecord]:
    """A manifest's `error` file (OperationOutcome ndjson), one entry per outcome: the export itself lost data."""
    out = []
    with open_binary(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                outcome = orjson.loads(line)
            except orjson.JSONDecodeError:
                out.append(BadRecord(label, n, "invalid JSON in the export's error file"))
                continue
            issues = outcome.get("issue") if isinstance(outcome, dict) else None
            texts = []
            for issue in issues if isinstance(issues, list) else ():
                if isinstance(issue, dict):
                    details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
                    text = issue.get("diagnostics") or details.get("text") or issue.get("code")
                    texts.append(f"{issue.get('severity', 'error')}: {text}")
            out.append(BadRecord(label, n, ("server reported: " + "; ".join(texts))[:_MAX_ERROR_TEXT]))
    return out
