"""Typed errors and the ONE place they become HTTP status + OperationOutcome JSON.

Every non-2xx answer carries an OperationOutcome (checklist R4), including Flask/Werkzeug's own
HTTPExceptions (404, 405, 413, ...): the client never sees an HTML error page or a stack trace.
Diagnostics never contain tokens, JWTs or request bodies.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

log = logging.getLogger("cramp_cds.errors")


@dataclass(frozen=True)
class Issue:
    diagnostics: str
    code: str = "invalid"
    expression: str | None = None  # where in the request, e.g. "prefetch.medications" or "feedback[2].outcome"

    def to_json(self) -> dict:
        issue = {"severity": "error", "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


class ServiceError(Exception):
    """Base of every error the service answers with; subclasses fix the status and issue code."""

    status = 500
    code = "exception"

    def __init__(self, diagnostics: str, *, expression: str | None = None,
                 issues: Sequence[Issue] | None = None) -> None:
        super().__init__(diagnostics)
        self.issues: list[Issue] = list(issues) if issues else [Issue(diagnostics, self.code, expression)]

    @property
    def diagnostics(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)


class BadRequest(ServiceError):
    """The request is malformed or violates CDS Hooks (400)."""
    status, code = 400, "invalid"


class InvalidPrefetch(BadRequest):
    """A prefetch value is not usable FHIR (400), naming the key."""


class NotFound(ServiceError):
    status, code = 404, "not-found"


class MethodNotAllowed(ServiceError):
    status, code = 405, "not-supported"


class PreconditionFailed(ServiceError):
    """Required FHIR data could not be had from prefetch or the FHIR server (412, checklist R2/P7)."""
    status, code = 412, "incomplete"


class PayloadTooLarge(ServiceError):
    status, code = 413, "too-long"


class UriTooLong(ServiceError):
    status, code = 414, "too-long"


class HeadersTooLarge(ServiceError):
    status, code = 431, "too-long"


class RequestTimeout(ServiceError):
    """The client did not send its request in time (408), raised while reading it (the production worker)."""
    status, code = 408, "timeout"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "not-supported"


class Unauthorized(ServiceError):
    """Authentication failed: answered as a bare 401 with code "login" and no detail (checklist X7)."""
    status, code = 401, "login"

    def __init__(self, reason: str = "") -> None:
        super().__init__("authentication required")
        self.reason = reason  # logged by the caller, never sent


class InternalError(ServiceError):
    status, code = 500, "exception"


_HTTP_CODES = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    406: "not-supported", 408: "timeout", 412: "incomplete", 413: "too-long", 414: "too-long", 415: "not-supported",
    429: "throttled", 431: "too-long", 500: "exception", 501: "not-supported", 503: "transient",
}


def operation_outcome(issues: Sequence[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def outcome_response(status: int, issues: Sequence[Issue], headers: dict | None = None) -> Response:
    body = orjson.dumps(operation_outcome(issues))
    return Response(body, status=status, mimetype="application/json", headers=headers)


def error_response(exc: ServiceError) -> Response:
    return outcome_response(exc.status, exc.issues)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        messages = {
            404: "no such endpoint",
            405: "method not allowed here",
            413: "request body too large",
        }
        text = messages.get(status) or (exc.name or "HTTP error")
        return outcome_response(status, [Issue(text, _HTTP_CODES.get(status, "processing"))], headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The traceback goes to the log (never the request body); the client gets no detail.
        log.error("unhandled %s while serving the request", type(exc).__name__, exc_info=exc)
        return outcome_response(500, [Issue("internal error", "exception")])


def dumps(payload: object) -> bytes:
    return orjson.dumps(payload)
