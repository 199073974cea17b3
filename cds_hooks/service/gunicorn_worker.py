"""The production worker: gunicorn's ``gthread`` worker, hardened against slow and hostile clients.

gunicorn's threaded worker gives a connection a thread as soon as one byte arrives, and the thread then
blocks until the whole request head is in: a few clients sending half a header line hold every thread.
This worker changes three things (configured by :mod:`cds_hooks.service.gunicorn_conf`):

1. **The request is gathered without holding a thread.** A pool thread takes what the socket holds without
   waiting; while the request is incomplete, the connection goes back to the worker's poller. "Complete" is
   the head (up to the blank line) plus, for a ``Content-Length`` body of at most :data:`PREREAD_BODY_BYTES`
   (hook calls are far smaller), the body. A head must be complete within :data:`HEAD_TIMEOUT` seconds of its
   first byte and stay under :data:`MAX_HEAD_BYTES` (else 408 / 431); a pre-read body within
   :data:`BODY_TIMEOUT` seconds of the head (else 408). A connection that stops sending waits in the poller
   and is closed after the keep-alive time (with a 408 when it had begun a request).
2. **A body read in a thread has one deadline** (a larger or chunked body, or one behind
   ``Expect: 100-continue``): it must arrive within :data:`BODY_TIMEOUT` seconds of the head, however it is
   trickled; past it, the app answers 408 and the connection is closed.
3. **The server's own errors are OperationOutcome JSON**, like the app's (400 bad HTTP, 408, 414, 431, 500),
   never gunicorn's HTML page.

The app keeps its own, lower limits on the URL and headers (414/431 in ``cds_hooks.service.app``); the
limits here only bound what a connection may cost the worker.
"""
from __future__ import annotations

import os
import re
import socket
import time

import orjson
from gunicorn import util
from gunicorn.workers.gthread import _DEFER, ThreadWorker

from cds_hooks.service.errors import HeadersTooLarge, Issue, RequestTimeout, ServiceError, operation_outcome
from cds_hooks.settings import _Reader

# Read when gunicorn imports the worker (the app's Settings come later, per worker); a bad value stops start-up
# with an error naming the variable, like every setting.
_ENV = _Reader(os.environ)
HEAD_TIMEOUT = _ENV.number("CRAMP_HEAD_TIMEOUT", 10.0)
BODY_TIMEOUT = _ENV.number("CRAMP_BODY_TIMEOUT", 20.0)
MAX_HEAD_BYTES = 64 * 1024
PREREAD_BODY_BYTES = 1024 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_BODY_READ_BY_APP = re.compile(rb"^(transfer-encoding|expect)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_MESSAGES = {
    400: "the request is not valid HTTP/1.1",
    408: "the request was not received in time",
    414: "the request line is too long",
    417: "expectation failed",
    431: "the request headers are too large or too many",
    500: "internal error",
    501: "unsupported transfer coding",
}
_CODES = {400: "invalid", 403: "forbidden", 408: "timeout", 414: "too-long", 417: "invalid", 431: "too-long",
          500: "exception", 501: "not-supported"}


class _BodyDeadline:
    """The socket as the request parser reads it: every read waits only for what is left of one deadline.

    The first read past the deadline raises :class:`RequestTimeout`, which the app answers as a 408;
    later ones raise :class:`TimeoutError`, which makes gunicorn close the connection instead of draining it.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self.deadline = deadline
        self.expired = False

    def __getattr__(self, name: str):
        return getattr(self._sock, name)

    def recv(self, size: int, *flags: int) -> bytes:
        left = self.deadline - time.monotonic()
        if left > 0 and not self.expired:
            prior = self._sock.gettimeout()
            self._sock.settimeout(left if prior is None else min(prior, left))
            try:
                return self._sock.recv(size, *flags)
            except TimeoutError:
                pass
            finally:
                self._sock.settimeout(prior)
        if self.expired:
            raise TimeoutError("request body deadline passed")
        self.expired = True
        raise RequestTimeout(f"the request body was not received within {BODY_TIMEOUT:g} s")


class GuardedThreadWorker(ThreadWorker):
    """``gthread`` with the head gathered in the poller, a body deadline and JSON errors (module docstring)."""

    def handle(self, conn):
        gathered = self._gather(conn)
        if gathered is not True:
            return gathered
        return super().handle(conn)

    def _gather(self, conn):
        """True when the request is complete (and handed to the parser); else _DEFER (poller) or False (close)."""
        buf: bytearray | None = getattr(conn, "cramp_buf", None)
        if buf is None:
            buf = bytearray()
            parser = getattr(conn, "parser", None)
            if parser is not None:  # bytes a kept-alive client pipelined behind its previous request
                buf += parser.unreader.take_buffered()
            conn.cramp_buf, conn.cramp_started, conn.cramp_head_done = buf, None, None
        try:
            while not self._complete(conn, buf):
                try:
                    data = conn.sock.recv(65536, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return _DEFER  # wait in the poller, not in a thread
                if not data:
                    return False  # the client went away
                if conn.cramp_started is None:
                    conn.cramp_started = time.monotonic()
                buf += data
        except ServiceError as exc:
            self._write_outcome(conn.sock, exc.status, exc.issues[0].diagnostics)
            return False
        except OSError:
            return False
        conn.cramp_buf = None
        conn.init()
        conn.parser.unreader.unread(bytes(buf))
        conn.parser.unreader.sock = _BodyDeadline(conn.sock, (conn.cramp_head_done or time.monotonic()) + BODY_TIMEOUT)
        return True

    @staticmethod
    def _complete(conn, buf: bytearray) -> bool:
        """Whether ``buf`` holds the whole request this worker gathers; raises 408/431 past the limits."""
        now = time.monotonic()
        end = _HEAD_END.search(buf)
        if end is None:
            if len(buf) > MAX_HEAD_BYTES:
                raise HeadersTooLarge(f"the request head is over the server's limit of {MAX_HEAD_BYTES} bytes")
            if conn.cramp_started is not None and now - conn.cramp_started > HEAD_TIMEOUT:
                raise RequestTimeout(f"the request head was not received within {HEAD_TIMEOUT:g} s")
            return False
        if conn.cramp_head_done is None:
            conn.cramp_head_done = now
        head = bytes(buf[:end.end()])
        lengths = _CONTENT_LENGTH.findall(head)
        if len(lengths) != 1 or _BODY_READ_BY_APP.search(head) or int(lengths[0]) > PREREAD_BODY_BYTES:
            return True  # no body, or one the parser reads in the thread (under the body deadline)
        if len(buf) - end.end() >= int(lengths[0]):
            return True
        if now - conn.cramp_head_done > BODY_TIMEOUT:
            raise RequestTimeout(f"the request body was not received within {BODY_TIMEOUT:g} s")
        return False

    def murder_pending(self):
        """Connections that stopped sending for the keep-alive time are closed: with a 408 when mid-request."""
        now = time.monotonic()
        for conn in self.pending_conns:
            if conn.timeout > now:
                break
            if getattr(conn, "cramp_buf", None):
                conn.cramp_buf = None
                self._write_outcome(conn.sock, 408, "the client stopped sending its request")
        super().murder_pending()

    def handle_error(self, req, client, addr, exc):
        """gunicorn's own error answers, as OperationOutcome JSON (its logging and access log are kept)."""
        if isinstance(exc, ServiceError):
            self._write_outcome(client, exc.status, exc.issues[0].diagnostics)
            return
        captured = _CapturedAnswer()
        super().handle_error(req, captured, addr, exc)
        status = captured.status() or 500
        self._write_outcome(client, status, _MESSAGES.get(status, "the request could not be handled"))

    @staticmethod
    def _write_outcome(sock, status: int, diagnostics: str) -> None:
        body = orjson.dumps(operation_outcome([Issue(diagnostics, _CODES.get(status, "processing"))]))
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            util.write_nonblock(sock, head + body)
        except OSError:
            pass


_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 414: "URI Too Long",
            417: "Expectation Failed", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented"}


class _CapturedAnswer:
    """Stands in for the client socket while gunicorn writes its HTML error page, to learn its status."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self) -> int | None:
        parts = self.data.split(b"\r\n", 1)[0].split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
