"""The CDS Hooks service's Flask application factory: ``create_app(settings=None, blueprints=())``.

The deployable app (service plus the tools that plug into it) is built by :mod:`cds_hooks.app`;
this factory knows nothing of those tools: it registers whatever extra blueprints it is given.

Request pipeline (``before_request`` in this order): request id → CORS preflight (OPTIONS answered 204
without authentication, X8) → authentication (all but OPTIONS and :data:`PUBLIC_PATHS`) → body size on
Content-Length (413, before the body is read). ``after_request`` adds CORS and ``X-Request-ID`` headers to
every response (errors too) and writes one access-log line: request id, method, path, status, duration.
"""
from __future__ import annotations

import gc
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request

from cds_hooks.gc_policy import PausedCollectorMiddleware
from cds_hooks.observability import logs
from cds_hooks.service import observability
from cds_hooks.service.errors import (
    BadRequest,
    HeadersTooLarge,
    Issue,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    UriTooLong,
    outcome_response,
    register_error_handlers,
)
from cds_hooks.service.hooks import HookRuntime, handle_hook
from cds_hooks.service.openapi import openapi_document
from cds_hooks.service.services import Service, build_registry, discovery_document
from cds_hooks.service.validation import parse_feedback
from cds_hooks.settings import OVERRIDE_REASON_SYSTEM, Settings
from cds_hooks.storage.database import Database
from cds_hooks.storage.feedback import FeedbackStore
from cds_hooks.storage.replay import DatabaseReplayStore

log = logging.getLogger("cramp_cds.app")

CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, X-Request-ID"  # a browser EHR may send its own request id
CORS_EXPOSE = "X-Request-ID"
AUTH_OFF_WARNING = "authentication is OFF (CRAMP_PROFILE=local): never expose this server to a network"
# Answered without authentication: they hold no patient or service data (health, and the API's own description).
# /metrics and /admin/feedback have their own tokens (CRAMP_METRICS_TOKEN, CRAMP_ADMIN_TOKEN); /readyz says only
# whether the service can work.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/admin/feedback", "/openapi.json"})
# The app's own limits on the request head (docs/api.md): the production server lets these through to here
# (cds_hooks/service/gunicorn_conf.py) so that the client gets an OperationOutcome, not the server's HTML page.
MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024  # room for a 16 KB JWT (the verifier's limit) and an EHR's other headers
CALLED_PATH = "cramp_cds.called_path"  # environ key: the path as the client sent it, before slashes were merged


@dataclass(frozen=True)
class State:
    settings: Settings
    registry: dict[str, Service]
    runtime: HookRuntime
    verifier: Any  # cds_hooks.auth.ClientVerifier or None when authentication is off
    knowledge_version: str | None
    database: Database


def state() -> State:
    return current_app.extensions["cramp_cds"]


def json_response(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def read_json() -> Any:
    """The request's JSON body: 415 unless JSON, 400 unless it parses."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise UnsupportedMediaType("the request body must be application/json")
    data = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit and len(data) >= limit:
        # A streamed (chunked) body is cut at the limit by Werkzeug without an error: refuse it here.
        raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
    if not data.strip():
        raise BadRequest("the request body is empty; a JSON object is required")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {str(exc).split(':')[0]}") from None


def _service(service_id: str) -> Service:
    service = state().registry.get(service_id)
    if service is None:
        raise NotFound(f"no CDS service with id {service_id[:80]!r}; see GET /cds-services")
    return service


bp = Blueprint("cds_hooks", __name__)


@bp.get("/cds-services", strict_slashes=False)  # "/cds-services/" too, answered without a redirect
def discovery() -> Response:
    """Discovery (D1-D3); each service says the service and knowledge versions in an extension (D3 allows it)."""
    st = state()
    document = discovery_document(st.registry)
    for entry in document["services"]:
        entry.setdefault("extension", {}).update(observability.version_extension(st.knowledge_version))
    return json_response(document)


@bp.post("/cds-services/<service_id>", strict_slashes=False)
def invoke(service_id: str) -> Response:
    service = _service(service_id)
    body = read_json()
    result = handle_hook(state().runtime, service, body)
    observability.cards_returned(result["cards"])
    return json_response(result)


@bp.post("/cds-services/<service_id>/feedback", strict_slashes=False)
def feedback(service_id: str) -> Response:
    """Feedback (F2): validate every entry first, then store them all in one transaction."""
    _service(service_id)
    st = state()
    entries = parse_feedback(read_json(), st.settings.max_feedback_entries)
    st.runtime.store.add_feedback(service_id, entries, datetime.now(UTC))
    observability.feedback_stored(entries)
    log.info("stored %d feedback entr%s", len(entries), "y" if len(entries) == 1 else "ies")
    return json_response({})


@bp.get("/healthz")
def healthz() -> Response:
    st = state()
    body: dict[str, Any] = {"status": "ok", "version": observability.__version__,
                            "auth": "on" if st.verifier else "off"}
    if st.knowledge_version:
        body["knowledge_version"] = st.knowledge_version
    if not st.verifier:
        body["warning"] = AUTH_OFF_WARNING
    return json_response(body)


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI description (docs/api.md). Public like /healthz: it describes the API and holds no data."""
    return json_response(openapi_document(state().settings.public_base_url))


# --- request pipeline ---------------------------------------------------------------------------------------

def _start() -> Response | None:
    observability.begin_request()
    _check_head()
    if request.method == "OPTIONS":  # CORS preflight: browsers never send Authorization on it (X8)
        preflight = Response(status=204)
        preflight.headers.pop("Content-Type", None)
        return preflight
    st = state()
    if st.verifier is not None and request.path not in PUBLIC_PATHS:
        denied = _authenticate(st)
        if denied is not None:
            return denied
    length = request.content_length
    if length is not None and length > st.settings.max_body_bytes:
        raise PayloadTooLarge(f"the request body is {length} bytes, over the limit of "
                              f"{st.settings.max_body_bytes} bytes")
    return None


def _check_head() -> None:
    """414 / 431 as OperationOutcome: the URL and the headers against the app's own limits."""
    url_bytes = len(request.environ.get("RAW_URI") or request.full_path)
    if url_bytes > MAX_URL_BYTES:
        raise UriTooLong(f"the request URL is {url_bytes} bytes, over the limit of {MAX_URL_BYTES} bytes")
    header_bytes = sum(len(name) + len(value) + 4 for name, value in request.headers.items())
    if header_bytes > MAX_HEADER_BYTES:
        raise HeadersTooLarge(f"the request headers are {header_bytes} bytes, over the limit of "
                              f"{MAX_HEADER_BYTES} bytes")


def _authenticate(st: State) -> Response | None:
    from cds_hooks.auth import AuthenticationError

    base = st.settings.public_base_url
    called = request.environ.get(CALLED_PATH)  # the JWT's aud names the URL as the client called it
    if base:
        audience = base + (called or request.path)
    else:
        audience = request.host_url.rstrip("/") + called if called else request.base_url
    try:
        st.verifier.verify(request.headers.get("Authorization"), audience)
    except AuthenticationError as exc:
        log.warning("authentication failed: %s (iss %s)", exc.reason, getattr(exc, "iss", None) or "unknown")
        return outcome_response(401, [Issue("authentication required", "login")],
                                headers={"WWW-Authenticate": "Bearer"})
    return None


def _finish(response: Response) -> Response:
    st = state()
    origins = st.settings.allowed_origins
    origin = request.headers.get("Origin")
    allow = "*" if "*" in origins else (origin if origin and origin in origins else None)
    if allow:
        response.headers["Access-Control-Allow-Origin"] = allow
        if allow != "*":
            response.vary.add("Origin")
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
        if request.method == "OPTIONS":
            response.headers["Access-Control-Max-Age"] = "600"
    return observability.end_request(response, st.registry)


class ServicePathSlashes:
    """WSGI middleware: ``POST /cds-services//id`` (a client joining ".../cds-services/" and "/id") is served as
    ``/cds-services/id`` instead of Werkzeug's 308 redirect, which clients do not follow for a POST."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            merged = re.sub("/{2,}", "/", path)
            if merged.startswith("/cds-services"):
                environ[CALLED_PATH], environ["PATH_INFO"] = path, merged
        return self.app(environ, start_response)


def create_app(settings: Settings | None = None, blueprints: Iterable[Blueprint] = ()) -> Flask:
    """Build the service. ``settings=None`` reads the environment; ``blueprints`` are extra pages to serve."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)

    import plugin
    from plugin.validation import preload as preload_models

    knowledge = plugin.default_knowledge()
    registry = build_registry(knowledge.lab_loincs, settings.lab_lookback_days, settings.review_options,
                              date_tokens=settings.prefetch_date_tokens)
    database = Database(settings.database_url)
    database.migrate()
    store = FeedbackStore(database, suppression_days=settings.suppression_days,
                          suppression_reasons=settings.suppression_reasons, reason_system=OVERRIDE_REASON_SYSTEM)
    verifier = None
    if settings.auth_enabled:
        from cds_hooks.auth import ClientVerifier

        # the jti memory is the database: a token is accepted once across workers, hosts and restarts (X7)
        verifier = ClientVerifier(settings.auth, replay_store=DatabaseReplayStore(database))
    else:
        log.warning(AUTH_OFF_WARNING if settings.profile == "local"
                    else "authentication is OFF (CRAMP_AUTH=off): every caller is trusted")

    app = Flask(__name__)
    app.url_map.merge_slashes = False  # never a redirect: service paths are merged above, others are a 404
    app.wsgi_app = ServicePathSlashes(app.wsgi_app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["cramp_cds"] = State(
        settings=settings,
        registry=registry,
        runtime=HookRuntime(settings=settings, store=store, knowledge=knowledge),
        verifier=verifier,
        knowledge_version=getattr(knowledge, "version", None),
        database=database,
    )
    register_error_handlers(app)
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(observability.reset_request)
    app.register_blueprint(bp)
    app.register_blueprint(observability.readiness_bp)
    if settings.metrics:
        app.register_blueprint(observability.metrics_bp)
    for extra in blueprints:
        app.register_blueprint(extra)
    # Load what the first call would otherwise load, then take the long-lived objects (models, knowledge)
    # out of the garbage collector's view: full collections walking them were the latency tail. No full
    # collection first: it would walk all of them (~70 ms) to find ~1,500 unreachable objects (0.3 MB, measured
    # after a start with the collector paused, as cds_hooks.app starts), which are frozen with the rest, once.
    preload_models()
    gc.freeze()
    # No cyclic collection while a request's parsed body is alive (cds_hooks/gc_policy.py): the cost per
    # resource of a large prefetch stays flat instead of growing with the chart.
    app.wsgi_app = PausedCollectorMiddleware(app.wsgi_app)
    log.info("cramp-cds ready: profile=%s services=%d database=%s auth=%s", settings.profile, len(registry),
             database.describe(), "on" if verifier else "off")
    return app
