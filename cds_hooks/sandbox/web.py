"""The ``/sandbox`` page: an EHR simulator in the browser, served by the service itself.

Register it in ``create_app`` when the sandbox setting is on (local profile only: the page sends no JWT)::

    if settings.sandbox:
        from cds_hooks.sandbox.web import sandbox_blueprint
        app.register_blueprint(sandbox_blueprint)

| route | what |
|---|---|
| ``GET /sandbox/`` | the page (``static/index.html`` + ``sandbox.js`` + ``sandbox.css``; no CDN, no build step) |
| ``GET /sandbox/api/samples`` | ``{"samples": [{name, patientId, patientName, description}]}`` |
| ``GET /sandbox/api/samples/<name>`` | the sample's Bundle |
| ``GET /sandbox/api/drugs`` | ``{"drugs": [{name, code, display}]}`` for the order picker |
| ``POST /sandbox/api/build-request`` | ``{"sample": name}`` or ``{"bundle": {...}}``, ``"hook"``, ``"drug"`` (order hooks), optional ``"serviceId"``, ``"style"`` → ``{"serviceId", "serviceUrl", "request"}`` |

The page then POSTs the request to ``/cds-services/{id}`` itself, exactly as an EHR would, and sends feedback
to ``/cds-services/{id}/feedback``. ``build-request`` reads this app's own discovery document (the same JSON
``GET /cds-services`` returns), so the prefetch templates used are the ones the service publishes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, json, redirect, request, send_from_directory

from cds_hooks.sandbox.requests_builder import (
    HOOKS,
    STYLES,
    SandboxError,
    build_request,
    drug_choices,
    service_for_hook,
)
from cds_hooks.sandbox.samples import find_sample, list_samples
from cds_hooks.service.errors import BadRequest, NotFound

STATIC = Path(__file__).resolve().parent / "static"

sandbox_blueprint = Blueprint("sandbox", __name__, url_prefix="/sandbox", static_folder="static",
                              static_url_path="/static")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


@sandbox_blueprint.get("")
def bare() -> Response:
    return redirect(request.script_root + "/sandbox/", code=308)


@sandbox_blueprint.get("/")
def page() -> Response:
    response = send_from_directory(STATIC, "index.html", max_age=0)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@sandbox_blueprint.get("/api/samples")
def samples() -> Response:
    return _json({"samples": [s.to_dict() for s in list_samples()]})


@sandbox_blueprint.get("/api/samples/<name>")
def sample(name: str) -> Response:
    try:
        path = find_sample(name).path
    except SandboxError as exc:
        raise NotFound(str(exc)) from None
    return _json(json.loads(path.read_text(encoding="utf-8")))


@sandbox_blueprint.get("/api/drugs")
def drugs() -> Response:
    return _json({"drugs": drug_choices()})


def _discovery() -> dict:
    """This app's own discovery JSON, from its discovery view (no reach into the registry)."""
    view = current_app.view_functions.get("cds_hooks.discovery")
    if view is None:
        raise NotFound("this app has no CDS Hooks discovery endpoint")
    response = current_app.make_response(view())
    return json.loads(response.get_data(as_text=True))


@sandbox_blueprint.post("/api/build-request")
def build() -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object: {\"sample\" or \"bundle\", \"hook\", \"drug\"}")
    hook = body.get("hook") or "patient-view"
    if hook not in HOOKS:
        raise BadRequest(f"hook must be one of {', '.join(HOOKS)}", expression="hook")
    style = body.get("style") or "spec"
    if style not in STYLES:
        raise BadRequest(f"style must be one of {', '.join(STYLES)}", expression="style")
    if isinstance(body.get("sample"), str) and body["sample"]:
        try:
            data = json.loads(find_sample(body["sample"]).path.read_text(encoding="utf-8"))
        except SandboxError as exc:
            raise NotFound(str(exc), expression="sample") from None
    elif isinstance(body.get("bundle"), dict | list):
        data = body["bundle"]
    else:
        raise BadRequest("give \"sample\" (a name from /sandbox/api/samples) or \"bundle\" (a FHIR Bundle)")
    drug = body.get("drug") if hook != "patient-view" else None
    service_id = body.get("serviceId") if isinstance(body.get("serviceId"), str) else None
    try:
        service = service_for_hook(_discovery(), hook, service_id)
        hook_request = build_request(data, hook, service, drug, style=style)
    except SandboxError as exc:
        raise BadRequest(str(exc)) from None
    return _json({"serviceId": service["id"], "serviceUrl": f"{request.script_root}/cds-services/{service['id']}",
                  "request": hook_request})
