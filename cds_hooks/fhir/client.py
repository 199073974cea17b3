"""A small FHIR REST client for the prefetch fallback (checklist I2, P6, P7).

One :class:`FhirClient` per hook call: it presents the call's bearer token (I1: held in memory for this call
only, never logged), follows ``next`` links up to a page limit, and shares one total time budget (a monotonic
deadline) across every request of the call. The deadline covers connect, headers and body: the body is read
as a stream, one socket read at a time, each with the time that is left, so a server that drips its answer
cannot hold the call past it. Answers are capped in bytes (per response) and in resources (per call, counted
as pages arrive). Every failure becomes :class:`FetchFailure` with a reason safe to show the client and to
log: no token, no URL, no patient id.

requests (and urllib3 under it) are imported by the first request to a FHIR server, not with this module: a
hook call whose prefetch is complete never needs them, and they are ~40 ms of the service's start-up.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import orjson

from cds_hooks.observability import metrics

if TYPE_CHECKING:
    import requests


def _timed(get):
    """Each FHIR request's duration (headers and body, failures included) to the metrics."""
    @functools.wraps(get)
    def timed(self, session, url):
        started = time.monotonic()
        try:
            return get(self, session, url)
        finally:
            metrics.FHIR_SECONDS.observe(time.monotonic() - started)
    return timed


class FetchFailure(Exception):
    """Data could not be had from the FHIR server; ``reason`` is safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LimitExceeded(FetchFailure):
    """The FHIR server's answers are over a size limit (bytes of one response, or resources in the call)."""


class Budget:
    """A deadline shared by every FHIR request of one hook call."""

    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.deadline = clock() + seconds

    def remaining(self) -> float:
        return self.deadline - self._clock()

    def check(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise FetchFailure(f"the FHIR time budget of {self.seconds:g} s was exhausted")
        return left


@dataclass(frozen=True)
class ClientOptions:
    connect_timeout: float
    read_timeout: float  # the longest wait for any one socket read (the budget bounds the whole call)
    max_pages: int
    max_response_bytes: int = 64 * 1024 * 1024
    max_resources: int | None = None  # resources over every page of the call; None = no limit


class ResourceCount:
    """Resources received so far in one call (pages of every key, fetched concurrently)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.total = 0
        self._lock = threading.Lock()

    def add(self, page: dict) -> None:
        n = len(page.get("entry") or ()) if page.get("resourceType") == "Bundle" else 1
        with self._lock:
            self.total += n
            over = self.limit is not None and self.total > self.limit
        if over:
            raise LimitExceeded(f"the FHIR server's answers hold more than {self.limit} resources (the limit)")


READ_CHUNK = 64 * 1024


class FhirClient:
    def __init__(self, base_url: str, access_token: str | None, options: ClientOptions, budget: Budget) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._token = access_token
        self.options = options
        self.budget = budget
        self.resources = ResourceCount(options.max_resources)
        origin = urlsplit(self.base_url)
        self._origin = (origin.scheme, origin.netloc.lower())
        self._base_path = origin.path

    def __repr__(self) -> str:  # never show the token
        return f"FhirClient(base_url={self.base_url!r})"

    def _session(self) -> requests.Session:
        import requests

        session = requests.Session()
        session.headers["Accept"] = "application/fhir+json, application/json;q=0.9"
        if self._token:
            session.headers["Authorization"] = f"Bearer {self._token}"
        session.trust_env = False  # no proxy/netrc surprises carrying the token elsewhere
        return session

    def is_own_url(self, url: str) -> bool:
        """True when ``url`` is under this FHIR server's base: the token is never sent anywhere else."""
        parts = urlsplit(url)
        # HAPI pages as "{base}?_getpages=…": the base itself, without its trailing slash, is the server too.
        on_base = parts.path.startswith(self._base_path) or parts.path == self._base_path.rstrip("/")
        return (parts.scheme, parts.netloc.lower()) == self._origin and on_base

    def fetch(self, relative: str, *, follow_next: bool = True) -> list[dict]:
        """GET ``relative`` (a read or search) and every ``next`` page; return the pages (resources/Bundles).

        ``follow_next=False`` for a count-bounded search (``_sort`` + ``_count``): its first page is the answer.
        """
        with self._session() as session:
            first = self._get(session, urljoin(self.base_url, relative))
            return [first, *self._follow(session, first, pages_so_far=1)] if follow_next else [first]

    def complete(self, first_page: dict) -> list[dict]:
        """The pages after an already-held Bundle page (a paginated prefetch), by its ``next`` links."""
        with self._session() as session:
            return self._follow(session, first_page, pages_so_far=1)

    def _follow(self, session: requests.Session, page: dict, *, pages_so_far: int) -> list[dict]:
        pages: list[dict] = []
        seen: set[str] = set()
        while (url := next_link(page)) is not None:
            try:
                absolute = urljoin(self.base_url, url)
                own = self.is_own_url(absolute)
            except ValueError:  # e.g. "http://[" (an unclosed IPv6 bracket)
                raise FetchFailure("a next link is not a valid URL") from None
            if not own:
                raise FetchFailure("a next link leaves the FHIR server (outside fhirServer); it was not followed")
            if absolute in seen:
                raise FetchFailure("the FHIR server's next links loop")
            seen.add(absolute)
            if pages_so_far >= self.options.max_pages:
                raise FetchFailure(f"more than {self.options.max_pages} pages (the page limit)")
            page = self._get(session, absolute)
            if page.get("resourceType") != "Bundle":
                raise FetchFailure("a next page is not a Bundle")
            pages.append(page)
            pages_so_far += 1
        return pages

    @_timed
    def _get(self, session: requests.Session, url: str) -> dict:
        import requests

        left = self.budget.check()
        timeout = (min(self.options.connect_timeout, left), min(self.options.read_timeout, left))
        try:
            with session.get(url, timeout=timeout, allow_redirects=False, stream=True) as response:
                self.budget.check()
                status = response.status_code
                if status in (401, 403):
                    raise FetchFailure(f"the FHIR server refused the access token (HTTP {status})")
                if status == 404:
                    raise FetchFailure("the FHIR server answered 404 Not Found")
                if status != 200:
                    raise FetchFailure(f"the FHIR server answered HTTP {status}")
                content = self._read_body(response)
        except requests.Timeout:
            raise FetchFailure("the FHIR server timed out") from None
        except requests.ConnectionError:
            raise FetchFailure("the FHIR server could not be reached") from None
        except requests.exceptions.InvalidURL:  # a host or port requests cannot use, e.g. "http://a b/"
            raise FetchFailure("fhirServer is not a URL that can be requested") from None
        except requests.RequestException:  # a cut-off or undecodable answer, a bad header (no class names shown)
            raise FetchFailure("the FHIR request failed") from None
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise FetchFailure("the FHIR server returned invalid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise FetchFailure("the FHIR server returned something that is not a FHIR resource")
        if data["resourceType"] == "OperationOutcome":
            raise FetchFailure("the FHIR server returned an OperationOutcome instead of data")
        self.resources.add(data)
        return data

    def _read_body(self, response: requests.Response) -> bytes:
        """The body, streamed: each socket read waits at most the time left and the size is capped as it grows."""
        import urllib3

        limit = self.options.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise LimitExceeded(f"the FHIR server's answer is {int(declared)} bytes, over the limit of {limit}")
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            left = self.budget.check()
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:  # this read may wait only as long as the call has left
                sock.settimeout(min(self.options.read_timeout, left))
            try:
                chunk = raw.read1(READ_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise FetchFailure(self._timeout_reason()) from None
            except (urllib3.exceptions.HTTPError, OSError):
                raise FetchFailure("the FHIR server's answer was cut off or could not be decoded") from None
            if not chunk:  # the end of the body
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise LimitExceeded(f"the FHIR server's answer is over the limit of {limit} bytes")
            chunks.append(chunk)

    def _timeout_reason(self) -> str:
        if self.budget.remaining() <= 0:
            return f"the FHIR time budget of {self.budget.seconds:g} s was exhausted"
        return "the FHIR server timed out"


def next_link(page: dict) -> str | None:
    links = page.get("link")
    if page.get("resourceType") != "Bundle" or not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"] or None
    return None
