"""gunicorn configuration of the production command (README "Running the service"; docs/security.md):

    gunicorn -c python:cds_hooks.service.gunicorn_conf 'cds_hooks.app:create_app()'

Worker model: processes × threads, with :class:`cds_hooks.service.gunicorn_worker.GuardedThreadWorker`
(gunicorn's ``gthread`` whose request heads are gathered in the poller, not in a thread, with a head and a
body deadline and OperationOutcome errors). A slow or silent client costs a connection slot, not a thread;
a hook call is bounded by the app itself (the FHIR deadline), so no request needs a worker timeout.

Environment: ``CRAMP_HOST``/``CRAMP_PORT`` (bind, as ``cramp-cds serve``), ``WEB_CONCURRENCY`` (processes,
default 2), ``CRAMP_THREADS`` (threads per process, default 8). Command-line options override this file.
Each process builds its own app; shared state between them (feedback, replay memory) lives in the database.
"""
from __future__ import annotations

import os

# Multi-worker metrics and gunicorn's own lines in the service's log format (issue 14): every production config
# takes these hooks.
from cds_hooks.observability.gunicorn_hooks import child_exit, logger_class, on_exit, on_starting

__all__ = ["child_exit", "logger_class", "on_exit", "on_starting"]

bind = f"{os.environ.get('CRAMP_HOST', '127.0.0.1')}:{os.environ.get('CRAMP_PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("CRAMP_THREADS", "8"))
worker_class = "cds_hooks.service.gunicorn_worker.GuardedThreadWorker"
# Connections a process holds at once, slow ones included (each costs at most its 64 KiB head and 1 MiB body
# buffers while it is gathered).
worker_connections = 200
keepalive = 5            # idle kept-alive or silent new connections are closed after this many seconds
timeout = 30             # heartbeat only: a gthread worker's main loop never blocks on a request
graceful_timeout = 10
# The app's own limits answer first, in JSON (URL 8 KiB → 414, headers 32 KiB → 431, JWT 16 KB → 401): the
# server's are set above them (the worker also caps a whole head at 64 KiB). Its request-line cap is off.
limit_request_line = 0
limit_request_field_size = 64 * 1024
limit_request_fields = 200
control_socket_disable = True  # no runtime admin socket (worker counts, reloads) on the host
accesslog = None         # the app writes one access line per request (no patient data in it)
