"""The production server under slow and hostile clients (issue 13, items 2 and 3): the README's own command,
gunicorn on 127.0.0.1, raw sockets for the clients.

Many connections that send half a header line, or a header and a trickle of body, must not starve the
workers: ``/healthz`` still answers within a second (the request's own timeout; no time is asserted). Every
error the server itself gives is OperationOutcome JSON.
"""
from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack

import pytest
import requests

from tests.service_fixtures.gunicorn import Gunicorn, production_command, readme_command
from tests.service_fixtures.support import SECRET, cramps_on_thiazide_prefetch, hook_request

pytestmark = pytest.mark.slow

WORKERS, THREADS = 2, 8  # the configuration's defaults: more slow clients than threads are opened below


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gunicorn")
    env = {"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp / "var"), "CRAMP_SECRET_KEY": SECRET,
           "CRAMP_HEAD_TIMEOUT": "3", "CRAMP_BODY_TIMEOUT": "3"}
    with Gunicorn(env, tmp / "gunicorn.log", workers=WORKERS) as running:
        yield running


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def raw_exchange(server, data: bytes) -> tuple[int, dict, bytes]:
    """Send ``data`` on a fresh connection and read the answer until the server closes it."""
    with connect(server) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_outcome(status: int, headers: dict, body: bytes, expected: int) -> dict:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert payload["resourceType"] == "OperationOutcome"
    return payload


def test_the_tested_command_is_the_readmes_production_command():
    assert readme_command()[1:] == ["-c", "python:cds_hooks.service.gunicorn_conf", "cds_hooks.app:create_app()"]
    assert production_command(8080)[:3] == readme_command()[:3]


def test_slow_header_and_slow_body_clients_do_not_starve_the_workers(server):
    slow = 3 * WORKERS * THREADS
    with ExitStack() as stack:
        for i in range(slow):  # half a header line each, then nothing
            s = stack.enter_context(connect(server))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-" + str(i).encode())
        for _ in range(slow):  # a whole head announcing a body, then one byte of it
            s = stack.enter_context(connect(server))
            s.sendall(b"POST /cds-services/leg-cramp-patient-view HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{")
        for _ in range(3):
            response = requests.get(server.base + "/healthz", timeout=1)
            assert response.status_code == 200 and response.json()["status"] == "ok"
        body = hook_request(prefetch=cramps_on_thiazide_prefetch())
        hook = requests.post(server.base + "/cds-services/leg-cramp-patient-view", json=body, timeout=5)
        assert hook.status_code == 200 and len(hook.json()["cards"]) == 1


def test_a_head_that_never_ends_is_408_outcome(server):
    with connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = b""
        for _ in range(8):  # one more header byte a second: never idle, never complete
            time.sleep(1)
            try:
                s.sendall(b"X")
            except OSError:
                break
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["issue"][0]["code"] == "timeout"


def test_a_body_that_never_ends_is_408_outcome(server):
    status, headers, body = raw_exchange(server, b"POST /cds-services/leg-cramp-patient-view HTTP/1.1\r\n"
                                                 b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                                 b"Content-Length: 100\r\n\r\n{")
    assert assert_outcome(status, headers, body, 408)["issue"][0]["code"] == "timeout"


def test_a_trickled_large_body_read_in_a_thread_is_cut_at_its_deadline(server):
    """Over the pre-read size the parser reads the body in a thread: the deadline still holds, the app says 408."""
    status, headers, body = raw_exchange(server, b"POST /cds-services/leg-cramp-patient-view HTTP/1.1\r\n"
                                                 b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                                 b"Content-Length: 2000000\r\n\r\n{")
    assert_outcome(status, headers, body, 408)


@pytest.mark.parametrize(("request_bytes", "expected"), [
    (b"GET /cds-services?x=" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),        # the app's
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n", 431),     # the app's
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"c" * 70000 + b"\r\n\r\n", 431),    # the worker's
    (b"HELLO THERE\r\n\r\n", 400),                                                                   # gunicorn's
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400),                        # gunicorn's
    (b"DELETE /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"POST /cds-services//leg-cramp-patient-view/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
     + b"Content-Type: application/json\r\nConnection: close\r\n\r\n{}", 400),  # served (no redirect); invalid body
])
def test_r4_every_error_the_server_gives_is_an_operation_outcome(server, request_bytes, expected):
    assert_outcome(*raw_exchange(server, request_bytes), expected)


def test_a_16_kb_bearer_token_reaches_the_app(server):
    """The verifier's 16 KB token limit is the one that applies, not a server header limit."""
    response = requests.get(server.base + "/cds-services", headers={"Authorization": "Bearer " + "x" * 16000},
                            timeout=5)
    assert response.status_code == 200  # the local profile has authentication off: the header is accepted


def test_kept_alive_connections_serve_several_requests(server):
    with requests.Session() as session:
        for _ in range(5):
            assert session.get(server.base + "/healthz", timeout=5).status_code == 200
