"""A real FHIR-ish HTTP server on 127.0.0.1 that misbehaves on purpose (issue 13, item 5).

The base URL's first path segment names the misbehaviour and the second the resource type it hits:
``http://127.0.0.1:PORT/<mode>/<Type>/`` answers every other resource type well (the patient, empty
searchsets) and, for ``<Type>``:

- ``drip``: a 200 with a large Content-Length, then one byte every 0.2 s, forever;
- ``drip-headers``: the status line and then one header byte every 0.2 s, forever;
- ``hung``: reads the request and never answers;
- ``huge``: a 200 without Content-Length, then 1 MiB chunks until the client goes away;
- ``huge-declared``: a 200 announcing 300 MB (and sending little of it);
- ``pages``: searchset pages of 50 resources with a ``next`` link, forever (counts the pages it served).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.service_fixtures.support import PID, patient, searchset

DRIP_INTERVAL = 0.2


class MisbehavingFhir(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.pages_served = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def base(self, mode: str, resource_type: str) -> str:
        return f"{self.url}/{mode}/{resource_type}"


class _Handler(BaseHTTPRequestHandler):
    server: MisbehavingFhir
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        _, mode, bad_type, *rest = urlsplit(self.path).path.split("/")
        resource_type = rest[0] if rest else ""
        if resource_type != bad_type:
            return self._json(patient(PID) if resource_type == "Patient" else searchset())
        getattr(self, "_" + mode.replace("-", "_"))()

    def _json(self, payload: dict, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, data: bytes) -> None:
        """Send ``data`` one byte at a time until the client hangs up or the server stops."""
        for i in range(len(data)):
            if self.server.stopping.wait(DRIP_INTERVAL):
                return
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:
                return

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        self.wfile.flush()
        self._trickle(b'{"resourceType": "Bundle", "type": "searchset", "entry": [' + b" " * 999_900)

    def _drip_headers(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self._trickle(b"X-Slow: " + b"a" * 10_000 + b"\r\n\r\n")

    def _hung(self) -> None:
        self.server.stopping.wait(60)

    def _huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b" " * (1024 * 1024)
        try:
            self.wfile.write(b'{"resourceType": "Bundle", "type": "searchset", "entry": [')
            for _ in range(2000):  # at most ~2 GB, far beyond any limit
                if self.server.stopping.is_set():
                    return
                self.wfile.write(chunk)
        except OSError:
            return

    def _huge_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(300 * 1000 * 1000))
        self.end_headers()
        self.wfile.write(b'{"resourceType": "Bundle"')

    def _pages(self) -> None:
        self.server.pages_served += 1
        n = self.server.pages_served
        resources = [{"resourceType": "Condition", "id": f"c{n}-{i}", "subject": {"reference": f"Patient/{PID}"},
                      "code": {"text": "hypertension"}} for i in range(50)]
        base = self.server.base("pages", "Condition")
        self._json(searchset(*resources, next_url=f"{base}/Condition?page={n + 1}", base=base))


@contextmanager
def misbehaving_fhir() -> Iterator[MisbehavingFhir]:
    server = MisbehavingFhir()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        time.sleep(0)  # let handler threads see the stop event
