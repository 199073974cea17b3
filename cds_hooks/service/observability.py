"""The service's side of observability: request ids, the access log line, request metrics, ``/metrics``,
``/readyz`` and the version extension of discovery.

Request id (checklist G-ops): the caller's ``X-Request-ID`` is kept when it is well-formed (letters, digits
and ``._:-``, at most 128 characters, so an EHR's own ids match up in both logs) and echoed on the response;
otherwise a new UUID is made. It is set in a context variable for the request, so every log record made
while answering carries it.

The access log line holds the request id, method, path (ids in service paths are service ids, never patient
ids), endpoint, CDS service, status, duration and the number of cards: never bodies, tokens or patient data.
"""
from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from cds_hooks.observability import metrics
from cds_hooks.observability.logs import request_id_var
from cds_hooks.service.errors import Issue, outcome_response
from cds_hooks.version import __version__

access_log = logging.getLogger("cramp_cds.access")

REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
VERSION_EXTENSION = "org.cramp-cds.version"


def begin_request() -> None:
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if REQUEST_ID.fullmatch(offered) else str(uuid.uuid4())
    g.request_id_token = request_id_var.set(g.request_id)
    g.started = time.perf_counter()


def end_request(response: Response, known_services: Any) -> Response:
    """Echo the request id, count the request and write its one access line."""
    request_id = getattr(g, "request_id", None) or str(uuid.uuid4())
    response.headers["X-Request-ID"] = request_id
    started = getattr(g, "started", None)
    seconds = time.perf_counter() - started if started else 0.0
    endpoint = (request.endpoint or "unrouted").rsplit(".", 1)[-1]
    service = (request.view_args or {}).get("service_id", "")
    service = service if service in known_services else ""
    status = response.status_code
    metrics.REQUESTS.labels(endpoint, service, str(status)).inc()
    metrics.REQUEST_SECONDS.labels(endpoint, service).observe(seconds)
    cards = getattr(g, "cards", None)
    fields = {"method": request.method, "path": request.path[:200], "endpoint": endpoint, "service": service,
              "status": status, "duration_ms": round(seconds * 1000, 1)}
    if cards is not None:
        fields["cards"] = cards
    access_log.info(" ".join(f"{k}={v}" for k, v in {"request_id": request_id, **fields}.items()), extra=fields)
    return response


def reset_request(_exc: BaseException | None = None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        request_id_var.reset(token)


def cards_returned(cards: list[dict]) -> None:
    """Count the cards of a hook answer (per contributor listed) for the metrics and the access line."""
    g.cards = len(cards)
    for card in cards:
        review = (card.get("extension") or {}).get("org.cramp-cds.review") or {}
        for contributor in review.get("contributors") or ["none"]:
            metrics.CARDS.labels(card.get("indicator", ""), contributor).inc()


def feedback_stored(entries: list[Any]) -> None:
    for entry in entries:
        metrics.FEEDBACK.labels(entry.outcome, entry.reason_code or "").inc()


def version_extension(knowledge_version: str | None) -> dict:
    return {VERSION_EXTENSION: {"service": __version__, "knowledge": knowledge_version or "unversioned"}}


# --- /metrics and /readyz -----------------------------------------------------------------------------------

metrics_bp = Blueprint("metrics", __name__)
readiness_bp = Blueprint("readiness", __name__)


@metrics_bp.get("/metrics", endpoint="metrics")
def metrics_endpoint() -> Response:
    """Prometheus text format; with ``CRAMP_METRICS_TOKEN`` set, only for ``Authorization: Bearer <token>``."""
    expected = current_app.extensions["cramp_cds"].settings.metrics_token
    if expected and not bearer_matches(expected):
        return outcome_response(401, [Issue("the metrics need Authorization: Bearer <CRAMP_METRICS_TOKEN>", "login")],
                                headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition()
    return Response(body, mimetype=None, content_type=content_type)


def bearer_matches(expected: str) -> bool:
    """True when the request carries ``Authorization: Bearer <expected>`` (constant-time comparison)."""
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), expected.encode())


@readiness_bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the knowledge is loaded and the database answers and accepts a write. 503 when not."""
    import orjson

    st = current_app.extensions["cramp_cds"]
    knowledge = st.runtime.knowledge
    checks = {"knowledge": "ok" if knowledge is not None and getattr(knowledge, "contributors", None)
              else "not loaded"}
    problem = st.database.check_writable()
    checks["database"] = "ok" if problem is None else f"unavailable: {problem}"
    if problem is not None:
        logging.getLogger("cramp_cds.app").warning("readiness: database %s", checks["database"])
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks, "version": __version__,
            "knowledge_version": st.knowledge_version}
    return Response(orjson.dumps(body), status=200 if ready else 503, mimetype="application/json")
