"""A FHIR server as batch input: Bulk Data `$export` (preferred), or per-patient searches as a fallback.

Bulk export (https://hl7.org/fhir/uv/bulkdata/export.html):

1. kick-off `GET {base}/$export` (or `{base}/Group/{id}/$export` with `--group`) with
   `Accept: application/fhir+json`, `Prefer: respond-async` and `_type` = the types the engine reads;
2. poll the `Content-Location` status URL: 202 -> wait `Retry-After` (seconds or an HTTP date) or an
   exponential backoff, up to `max_wait` seconds in all (then the export is cancelled with `DELETE`);
3. 200 -> the manifest; each `output` file is streamed to a temporary folder (with the bearer token
   when `requiresAccessToken` is true, never otherwise); a failed download is a bad record, the rest
   is reviewed. The manifest's `error` files become bad records.

Without `$export` (kick-off answers 4xx other than 401/403, or `--no-export`, or `--patients`): for each
patient of `--patients` or of the `--group`'s members, `Patient/{id}` and the searches the live service
prefetches (medications, conditions, the engine's lab LOINCs), following `next` links up to a page
limit. A patient whose requests fail is a bad record and is skipped; the others complete.

The bearer token (env `CRAMP_FHIR_TOKEN`) is sent only to the server's own origin (and to export files
that require it); it is never logged, printed or put in a report. Reports name downloads by their URL
without the query string (pre-signed URLs carry secrets there).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import requests

from cds_hooks.batch.errors import ExportNotSupported, FhirSourceError, UsageError
from cds_hooks.batch.inputs import NdjsonFile, export_errors, type_from_name
from cds_hooks.batch.model import BadRecord
from cds_hooks.fhir.client import Budget, ClientOptions, FetchFailure, FhirClient
from plugin.codes import LOINC
from plugin.fhir_read import missing_medication_references
from plugin.knowledge import Knowledge

TOKEN_ENV = "CRAMP_FHIR_TOKEN"
EXPORT_TYPES = ("Patient", "Medication", "MedicationRequest", "MedicationStatement", "MedicationDispense",
                "Condition", "Observation")
FHIR_JSON = "application/fhir+json"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DOWNLOAD_BLOCK = 1 << 20


@dataclass(frozen=True)
class FhirOptions:
    group: str | None = None
    patients: tuple[str, ...] = ()
    no_export: bool = False
    token: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_wait: float = 3600.0        # total seconds to wait for an export to finish
    max_pages: int = 100            # `next` pages followed per search
    poll_min: float = 1.0           # first backoff when the server gives no Retry-After
    poll_max: float = 120.0         # longest backoff step

    def __post_init__(self) -> None:
        for pid in (*self.patients, *((self.group,) if self.group else ())):
            if not _ID.match(pid):
                raise UsageError(f"not a FHIR id: {pid!r} (letters, digits, '-', '.'; at most 64)")


@dataclass
class Fetched:
    """What a server gave: downloaded ndjson files, and/or per-patient resources from searches."""

    files: list[NdjsonFile] = field(default_factory=list)
    patients: list[tuple[str, list[dict]]] = field(default_factory=list)   # ("Patient/1", resources)
    bad_records: list[BadRecord] = field(default_factory=list)
    export_errors: list[BadRecord] = field(default_factory=list)   # the manifest's error OperationOutcomes
    warnings: list[str] = field(default_factory=list)


def public_url(url: str) -> str:
    """A URL as reports may show it: no query string, no fragment, no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def retry_after(response: requests.Response, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def _diagnostics(response: requests.Response) -> str:
    """The OperationOutcome's first diagnostics, short; else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for issue in body.get("issue") or ():
            if isinstance(issue, dict) and isinstance(issue.get("diagnostics"), str):
                return issue["diagnostics"][:200]
    return response.reason or ""


class FhirSource:
    def __init__(self, base: str, options: FhirOptions, knowledge: Knowledge, *,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, note: Callable[[str], None] = lambda _m: None) -> None:
        self.base = base.rstrip("/")
        self.options = options
        self.knowledge = knowledge
        self.session = session or requests.Session()
        self.sleep, self.clock, self.note = sleep, clock, note
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"not an http(s) FHIR base URL: {public_url(base)}")
        self._origin = (parts.scheme, parts.netloc.lower())

    # --- plumbing ---------------------------------------------------------------------------------

    @property
    def timeout(self) -> tuple[float, float]:
        return self.options.connect_timeout, self.options.read_timeout

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc.lower()) == self._origin

    def _headers(self, url: str, accept: str = FHIR_JSON, *, token: bool | None = None, **extra: str) -> dict:
        headers = {"Accept": accept, **extra}
        send = self._same_origin(url) if token is None else token
        if send and self.options.token:
            headers["Authorization"] = f"Bearer {self.options.token}"
        return headers

    def _get(self, url: str, **kw) -> requests.Response:
        try:
            return self.session.get(url, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise FhirSourceError(f"{public_url(url)}: request failed ({type(exc).__name__})") from None

    # --- entry point ------------------------------------------------------------------------------

    def fetch(self, folder: Path) -> Fetched:
        """Export into `folder`, or search per patient; raises FhirSourceError when nothing can be had."""
        if self.options.patients or self.options.no_export:
            if not (self.options.patients or self.options.group):
                raise UsageError("--no-export needs --patients ID,… or --group ID to know whom to search")
            return self.search_patients()
        try:
            return self.export(folder)
        except ExportNotSupported as exc:
            if not self.options.group:
                raise FhirSourceError(f"{exc}; to search patient by patient instead, give --patients ID,… "
                                      "or --group ID") from None
            self.note(f"{exc}: falling back to per-patient searches of Group/{self.options.group}")
            fetched = self.search_patients()
            fetched.warnings.insert(0, f"{exc}: per-patient searches were used")
            return fetched

    # --- Bulk Data export -------------------------------------------------------------------------

    def kick_off(self) -> str:
        group = self.options.group
        url = f"{self.base}/Group/{quote(group, safe='')}/$export" if group else f"{self.base}/$export"
        response = self._get(url, params={"_type": ",".join(EXPORT_TYPES)},
                             headers=self._headers(url, Prefer="respond-async"))
        status = response.status_code
        if status == 202:
            location = response.headers.get("Content-Location")
            if not location:
                raise FhirSourceError("export kick-off answered 202 without a Content-Location")
            return urljoin(url, location)
        if status in (401, 403):
            raise FhirSourceError(f"export kick-off refused: HTTP {status} (is {TOKEN_ENV} set and valid?)")
        if 400 <= status < 500:
            detail = _diagnostics(response)
            raise ExportNotSupported(f"the server does not run $export here (HTTP {status}"
                                     + (f": {detail})" if detail else ")"))
        raise FhirSourceError(f"export kick-off failed: HTTP {status} {_diagnostics(response)}".rstrip())

    def wait_for_manifest(self, status_url: str) -> dict:
        deadline = self.clock() + self.options.max_wait
        backoff = self.options.poll_min
        failures = 0
        while True:
            try:
                response = self.session.get(status_url, timeout=self.timeout,
                                            headers=self._headers(status_url, "application/json"))
            except requests.RequestException as exc:
                failures += 1
                if failures > 3:
                    raise FhirSourceError(f"export status could not be read ({type(exc).__name__})") from None
                response = None
            if response is not None and response.status_code == 200:
                try:
                    manifest = response.json()
                except ValueError:
                    raise FhirSourceError("export finished but its manifest is not JSON") from None
                if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                    raise FhirSourceError("export finished but its manifest has no \"output\" list")
                return manifest
            if response is not None and response.status_code not in (202, 429):
                raise FhirSourceError(f"export failed: HTTP {response.status_code} "
                                      f"{_diagnostics(response)}".rstrip())
            if response is not None:
                failures = 0
                progress = response.headers.get("X-Progress")
                if progress:
                    self.note(f"export in progress: {progress[:100]}")
            wait = (retry_after(response) if response is not None else None)
            wait = backoff if wait is None else wait
            backoff = min(backoff * 2, self.options.poll_max)
            if self.clock() + wait > deadline:
                self._cancel(status_url)
                raise FhirSourceError(f"export not finished after {self.options.max_wait:g} s; cancelled")
            self.sleep(wait)

    def _cancel(self, status_url: str) -> None:
        try:
            self.session.delete(status_url, timeout=self.timeout, headers=self._headers(status_url))
        except requests.RequestException:
            pass

    def download(self, url: str, target: Path, *, token: bool) -> BadRecord | None:
        label = public_url(url)
        try:
            with self.session.get(url, stream=True, timeout=self.timeout,
                                  headers=self._headers(url, "application/fhir+ndjson", token=token)) as response:
                if response.status_code != 200:
                    return BadRecord(label, None, f"download failed: HTTP {response.status_code}")
                with target.open("wb") as fh:
                    for block in response.iter_content(_DOWNLOAD_BLOCK):
                        fh.write(block)
        except (requests.RequestException, OSError) as exc:
            target.unlink(missing_ok=True)
            return BadRecord(label, None, f"download failed ({type(exc).__name__})")
        return None

    def export(self, folder: Path) -> Fetched:
        status_url = self.kick_off()
        self.note("export started; waiting for the server")
        manifest = self.wait_for_manifest(status_url)
        token = manifest.get("requiresAccessToken") is True
        fetched = Fetched()
        outputs = [o for o in manifest["output"] if isinstance(o, dict) and isinstance(o.get("url"), str)]
        export_label = public_url(self.base)
        for n, item in enumerate(outputs, 1):
            url = item["url"]
            rtype = item.get("type") if isinstance(item.get("type"), str) else None
            rtype = rtype or type_from_name(urlsplit(url).path.rsplit("/", 1)[-1])
            gz = ".gz" if urlsplit(url).path.endswith(".gz") else ""
            target = folder / f"{n:04d}.{rtype or 'mixed'}.ndjson{gz}"
            self.note(f"downloading {n}/{len(outputs)} ({rtype or 'mixed'})")
            bad = self.download(url, target, token=token)
            if bad:
                fetched.bad_records.append(bad)
            else:
                fetched.files.append(NdjsonFile(target, rtype, public_url(url), export_label))
        for n, item in enumerate(o for o in manifest.get("error") or () if isinstance(o, dict)):
            url = item.get("url")
            if not isinstance(url, str):
                continue
            target = folder / f"error.{n:04d}.ndjson"
            bad = self.download(url, target, token=token)
            if bad:
                fetched.bad_records.append(bad)
            else:
                fetched.export_errors.extend(export_errors(target, public_url(url)))
        if any(isinstance(link, dict) and link.get("relation") == "next" for link in manifest.get("link") or ()):
            fetched.warnings.append("the export manifest is paged (link next); only its first page was read")
        return fetched

    # --- per-patient searches ---------------------------------------------------------------------

    def patient_ids(self) -> list[str]:
        if self.options.patients:
            return list(dict.fromkeys(self.options.patients))
        url = f"{self.base}/Group/{quote(self.options.group or '', safe='')}"
        response = self._get(url, headers=self._headers(url))
        if response.status_code != 200:
            raise FhirSourceError(f"Group/{self.options.group} could not be read: HTTP {response.status_code}")
        try:
            group = response.json()
        except ValueError:
            raise FhirSourceError(f"Group/{self.options.group}: the answer is not JSON") from None
        ids = []
        for member in group.get("member") or () if isinstance(group, dict) else ():
            ref = ((member or {}).get("entity") or {}).get("reference") if isinstance(member, dict) else None
            if isinstance(ref, str) and ref.startswith("Patient/") and _ID.match(ref[8:]):
                ids.append(ref[8:])
        if not ids:
            raise FhirSourceError(f"Group/{self.options.group} has no Patient members")
        return list(dict.fromkeys(ids))

    def searches(self, pid: str) -> list[str]:
        loincs = ",".join(f"{LOINC}|{code}" for code in self.knowledge.lab_loincs)
        return [
            f"MedicationRequest?patient={pid}",
            f"MedicationStatement?patient={pid}",
            f"MedicationDispense?patient={pid}",
            f"Condition?patient={pid}",
            f"Observation?patient={pid}&code={quote(loincs, safe=',')}",
        ]

    def read_patient(self, pid: str) -> list[dict]:
        """The patient and what the rules read, with the service's FHIR client (token only to this server,
        `next` paging within the page limit, no redirects); Medications the orders reference are read too."""
        client = FhirClient(self.base, self.options.token,
                            ClientOptions(self.options.connect_timeout, self.options.read_timeout,
                                          self.options.max_pages), Budget(self.options.max_wait))
        try:
            resources = [r for r in client.fetch(f"Patient/{quote(pid, safe='')}")
                         if r.get("resourceType") == "Patient"]
            for query in self.searches(pid):
                for page in client.fetch(query):
                    resources += [e["resource"] for e in page.get("entry") or ()
                                  if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                                  and e["resource"].get("resourceType") != "OperationOutcome"]
        except FetchFailure as exc:
            raise FhirSourceError(exc.reason) from None
        for ref in missing_medication_references(resources):
            try:  # a failed read leaves a dangling reference, which the engine reports
                resources += [m for m in client.fetch(ref) if m.get("resourceType") == "Medication"]
            except FetchFailure:
                continue
        return resources

    def search_patients(self) -> Fetched:
        fetched = Fetched()
        ids = self.patient_ids()
        for n, pid in enumerate(ids, 1):
            self.note(f"searching patient {n}/{len(ids)}")
            try:
                fetched.patients.append((f"Patient/{pid}", self.read_patient(pid)))
            except FhirSourceError as exc:
                fetched.bad_records.append(BadRecord(f"Patient/{pid}", None, f"skipped: {exc}"))
        return fetched
