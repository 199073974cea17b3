"""Logging set-up: ``CRAMP_LOG_FORMAT=json`` (one JSON object per line, python-json-logger) or ``text``.

Every record carries the current request id (a ``contextvars`` value set by the service for the duration of
a request). What goes into a record is decided where it is logged, never here: the service logs ids,
statuses, durations and counts, never bodies, tokens or patient identifiers.
"""
from __future__ import annotations

import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("cramp_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(request_id)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s %(request_id)s"
JSON_RENAME = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (or ``-`` outside a request) to every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        return True


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAME, timestamp=False,
                             datefmt="%Y-%m-%dT%H:%M:%S%z")
    return logging.Formatter(TEXT_FORMAT)


class _CrampHandler(logging.StreamHandler):
    """Marks the handler this module installed, so that configuring again replaces rather than duplicates."""


def configure(level: str, fmt: str, stream=None) -> None:
    """Install (once) a handler on the root logger in ``fmt``; set the ``cramp_cds`` loggers' ``level``.

    A root logger that already has someone else's handlers (pytest, an embedding application) is left alone
    apart from the request-id filter, so their records still carry ``request_id``.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _CrampHandler)]
    if ours or not root.handlers:
        handler = ours[0] if ours else _CrampHandler(stream or sys.stderr)
        handler.setFormatter(formatter(fmt))
        if not ours:
            root.addHandler(handler)
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    logging.getLogger("cramp_cds").setLevel(level)
