"""Schema-driven fuzzing: schemathesis generates requests from ``GET /openapi.json`` and sends them to the Flask
app in process (no server, no network). Every response must be no 5xx, have a documented status, content type
and headers, and conform to the documented schema (cards per checklist §6, OperationOutcome for errors).

Also checks the OpenAPI document itself: schemathesis loads every operation, every schema is valid JSON Schema
(2020-12, the OpenAPI 3.1 dialect), its enums and prefetch keys match the service registry, its examples and the
shipped sample requests validate and get documented answers, and with authentication on the documented security
holds (401 everywhere but the public operations).

Bounded and reproducible: ``derandomize=True`` and a small ``max_examples`` per operation, so the file runs in
well under a minute on two cores. The fuzz run has authentication off (the ``local`` profile). The FHIR server
fallback never reaches the network: ``responses`` refuses every outgoing request (the service answers 412).
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest
import responses
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_hooks.app import create_app
from cds_hooks.service.openapi import openapi_document
from cds_hooks.service.services import HOOKS, build_registry
from tests.service_fixtures.support import make_settings

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hooks"

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(make_settings(tmp_path_factory.mktemp("fuzz-schemathesis")))


@pytest.fixture(scope="module")
def no_network():
    """Every outgoing HTTP request (the FHIR fallback to a generated ``fhirServer``) fails to connect."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# The packaged document, which is exactly what GET /openapi.json serves (asserted below). Loaded at import, without
# an app: `schemathesis.pytest.from_fixture` (lazy loading from a fixture) fails under pytest 9 in schemathesis
# 4.32 ('Function' object has no attribute '_nodeid'), so the app comes from a fixture and is passed per call.
schema = schemathesis.openapi.from_dict(openapi_document())
SERVICE_FOR = {s.hook: s.id for s in build_registry([], 365).values()}


def _call_the_service_of_the_hook(case) -> None:
    """Positive cases only: send the body to the service of the hook it names. Random pairs of `{id}` and body
    mostly stop at the hook check (400); aligned ones reach context, prefetch and FHIR-fallback handling."""
    body = case.body
    if (case.operation.path == "/cds-services/{id}" and isinstance(body, dict)
            and isinstance(body.get("hook"), str) and body["hook"] in SERVICE_FOR
            and case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE):
        case.path_parameters["id"] = SERVICE_FOR[body["hook"]]


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_operation_conforms_to_the_openapi_description(case, app, no_network):
    _call_the_service_of_the_hook(case)
    case.call_and_validate(checks=CHECKS, app=app)


# --- the document itself -------------------------------------------------------------------------------------

def _schemas(document: dict):
    """Every JSON Schema in the document (components, path parameters, request bodies) with its location."""
    components = document["components"]
    for name, sub in components["schemas"].items():
        yield f"components.schemas.{name}", sub
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                for p in op:
                    yield f"{path} parameter {p['name']}", p["schema"]
                continue
            for media in (op.get("requestBody") or {}).get("content", {}).values():
                yield f"{method.upper()} {path} requestBody", media["schema"]


def _validator(document: dict, schema_: dict) -> jsonschema_rs.Draft202012Validator:
    """A validator for one schema of the document (formats such as uuid and uri asserted)."""
    standalone = _rewrite_refs({**schema_, "$defs": document["components"]["schemas"]})
    return jsonschema_rs.Draft202012Validator(standalone, validate_formats=True)


def _rewrite_refs(value):
    """``#/components/schemas/X`` -> ``#/$defs/X`` so that a component validates outside the document."""
    if isinstance(value, dict):
        return {k: (v.replace("#/components/schemas/", "#/$defs/") if k == "$ref" else _rewrite_refs(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_refs(v) for v in value]
    return value


def test_openapi_document_is_served_public_and_loads_in_schemathesis(app):
    client = app.test_client()
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    assert document == openapi_document()
    loaded = schemathesis.openapi.from_wsgi("/openapi.json", app)
    labels = set()
    for result in loaded.get_all_operations():
        labels.add(result.ok().label)  # .ok() raises on an operation schemathesis cannot use
    assert {"GET /cds-services", "POST /cds-services/{id}", "POST /cds-services/{id}/feedback",
            "GET /healthz"} <= labels


def test_every_schema_in_the_document_is_valid_json_schema_2020_12():
    document = openapi_document()
    for where, sub in _schemas(document):
        assert jsonschema_rs.meta.is_valid(sub), where
        _validator(document, sub)  # compiles, $refs resolve


def test_enums_match_the_service_registry_and_hooks():
    document = openapi_document()
    components = document["components"]["schemas"]
    registry = build_registry([], 365)
    assert components["ServiceId"]["enum"] == list(registry)
    assert components["Hook"]["enum"] == list(HOOKS)
    assert {s.hook for s in registry.values()} == set(HOOKS)
    prefetch_keys = set(components["Prefetch"]["properties"])
    assert all(set(s.prefetch) == prefetch_keys for s in registry.values())


def test_request_examples_validate_and_each_is_answered_as_documented(app, no_network):
    document = openapi_document()
    body = document["paths"]["/cds-services/{id}"]["post"]["requestBody"]["content"]["application/json"]
    validator = _validator(document, body["schema"])
    cards = _validator(document, {"$ref": "#/components/schemas/CdsResponse"})
    client = app.test_client()
    for name, example in body["examples"].items():
        validator.validate(example["value"])
        response = client.post(f"/cds-services/{SERVICE_FOR[name]}", json=example["value"])
        assert response.status_code in (200, 412), (name, response.get_data(as_text=True))
        if response.status_code == 200:
            cards.validate(response.get_json())
    feedback = document["paths"]["/cds-services/{id}/feedback"]["post"]["requestBody"]["content"]
    _validator(document, feedback["application/json"]["schema"]).validate(feedback["application/json"]["example"])


def test_public_base_url_becomes_the_servers_entry(tmp_path):
    app = create_app(make_settings(tmp_path, {"CRAMP_PUBLIC_BASE_URL": "https://cds.example.org/cramp"}))
    document = app.test_client().get("/openapi.json").get_json()
    assert document["servers"] == [{"url": "https://cds.example.org/cramp",
                                     "description": "this deployment (CRAMP_PUBLIC_BASE_URL)"}]
    assert "servers" not in openapi_document(), "the cached document is not modified"


def test_with_authentication_on_the_documented_security_holds(tmp_path):
    """The bearer-JWT scheme guards every operation but the public ones (`security: []`): without a token each
    guarded operation answers the documented 401 OperationOutcome; /healthz and /openapi.json answer 200."""
    pytest.importorskip("cds_hooks.auth")
    ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "ES384"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "clients.json").write_text(json.dumps({"clients": [{"iss": "https://ehr.example.org",
                                                                    "jwks_file": "jwks.json"}]}))
    app = create_app(make_settings(tmp_path, {"CRAMP_AUTH": "on",
                                              "CRAMP_TRUSTED_CLIENTS": str(tmp_path / "clients.json")}))
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    assert document == openapi_document(), "the description is public even with authentication on"
    outcome = _validator(document, {"$ref": "#/components/schemas/OperationOutcome"})
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in ("parameters", "options"):
                continue
            url = path.replace("{id}", "leg-cramp-patient-view")
            response = client.open(url, method=method.upper(), json={} if method == "post" else None)
            if op.get("security") == []:
                assert response.status_code == 200, url
            else:
                assert response.status_code == 401 and "401" in op["responses"], url
                assert response.headers["WWW-Authenticate"] == "Bearer"
                outcome.validate(response.get_json())


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_sample_requests_fit_the_request_schema_and_answers_fit_the_response_schemas(app, no_network, sample):
    """The documented request schema is not stricter than real requests (the samples shipped with the project)."""
    document = openapi_document()
    body = json.loads(sample.read_text(encoding="utf-8"))
    _validator(document, {"$ref": "#/components/schemas/HookRequest"}).validate(body)
    response = app.test_client().post(f"/cds-services/{SERVICE_FOR[body['hook']]}", json=body)
    name = "CdsResponse" if response.status_code == 200 else "OperationOutcome"
    assert str(response.status_code) in document["paths"]["/cds-services/{id}"]["post"]["responses"]
    _validator(document, {"$ref": f"#/components/schemas/{name}"}).validate(response.get_json())
