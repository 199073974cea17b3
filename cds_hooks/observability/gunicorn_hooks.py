"""gunicorn server hooks: metrics that are multi-worker safe (prometheus_client multiprocess mode) and gunicorn's
own log lines in the service's format (``CRAMP_LOG_FORMAT``), so that a JSON log is JSON on every line.

Any production gunicorn config must take these hooks (``logger_class``, ``on_starting``, ``child_exit``,
``on_exit``): ``from cds_hooks.observability.gunicorn_hooks import child_exit, logger_class, on_exit, on_starting``.
This module is a gunicorn config by itself too (``-c python:cds_hooks.observability.gunicorn_hooks``), binding
``CRAMP_HOST``:``CRAMP_PORT`` with ``WEB_CONCURRENCY`` workers (2); command-line options override it. ``on_starting`` runs in the
master before any worker exists: it points ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder (the operator's,
emptied, or a new temporary one), which every worker inherits, so each worker's values go to files there and
``/metrics`` sums them. ``child_exit`` tells prometheus_client a worker is gone (its live gauges are dropped;
its counters stay counted).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from gunicorn import glogging

from cds_hooks.observability import logs

bind = f"{os.environ.get('CRAMP_HOST', '127.0.0.1')}:{os.environ.get('CRAMP_PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Not imported from .metrics: prometheus_client must not be imported in the master before the variable is set
# (it chooses single- or multi-process values once, at import, and the workers inherit that choice).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> str:
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # values of an earlier run would be summed in
            stale.unlink()
    else:
        folder = tempfile.mkdtemp(prefix="cramp-metrics-")
        os.environ[MULTIPROC_ENV] = folder
    return folder


def on_starting(server) -> None:
    folder = prepare_multiprocess_dir()
    server.log.info("metrics: multiprocess mode in %s", folder)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    folder = os.environ.get(MULTIPROC_ENV, "")
    if Path(folder).name.startswith("cramp-metrics-"):  # only the folder we made
        shutil.rmtree(folder, ignore_errors=True)


class GunicornLogger(glogging.Logger):
    """gunicorn's logger with the service's formatter and request-id filter on its handlers."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        fmt = os.environ.get("CRAMP_LOG_FORMAT", "").strip().lower() or (
            "text" if os.environ.get("CRAMP_PROFILE", "").strip().lower() == "local" else "json")
        if fmt != "json":
            return
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            handler.setFormatter(logs.formatter("json"))
            handler.addFilter(logs.RequestIdFilter())


logger_class = GunicornLogger
