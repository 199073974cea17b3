"""Errors and edges mapped to OperationOutcome (R3/R4), request validation (§3, §10), CORS (X8), the health
endpoint and the authentication hook (X2, X7)."""
from __future__ import annotations

import io
import json
import logging
import time
import uuid

import pytest

from cds_hooks.app import create_app
from tests.service_fixtures.support import (
    TOKEN,
    hook_request,
    issue_diagnostics,
    make_client,
    make_settings,
    post_hook,
)

SERVICE = "/cds-services/leg-cramp-patient-view"


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


def assert_outcome(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json", "never an HTML error page"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i["severity"] == "error" and i["code"] for i in body["issue"])
    if code:
        assert body["issue"][0]["code"] == code
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "<html" not in text.lower()
    return body


# --- malformed requests --------------------------------------------------------------------------------------

def test_malformed_json_is_400(client):
    response = client.post(SERVICE, data="{not json", content_type="application/json")
    assert_outcome(response, 400, "invalid")
    assert "malformed JSON" in issue_diagnostics(response)


def test_empty_body_is_400(client):
    assert_outcome(client.post(SERVICE, data="", content_type="application/json"), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post(SERVICE, data=json.dumps(hook_request()), **kwargs)
    assert_outcome(response, 415, "not-supported")


def test_json_with_charset_and_fhir_json_content_types_accepted(client):
    for ct in ("application/json; charset=utf-8", "application/fhir+json"):
        assert client.post(SERVICE, data=json.dumps(hook_request()), content_type=ct).status_code == 200


def test_unknown_service_id_is_404(client):
    body = assert_outcome(client.post("/cds-services/no-such-service", json=hook_request()), 404, "not-found")
    assert "no-such-service" in body["issue"][0]["diagnostics"]


def test_unknown_path_is_404_outcome_not_html(client):
    assert_outcome(client.get("/nowhere"), 404, "not-found")


def test_wrong_hook_for_service_is_400(client):
    body = hook_request("order-sign")
    response = post_hook(client, body, "leg-cramp-patient-view")
    assert_outcome(response, 400, "invalid")
    assert response.get_json()["issue"][0]["expression"] == ["hook"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", SERVICE), ("PUT", SERVICE), ("DELETE", "/cds-services"), ("POST", "/cds-services"),
    ("GET", SERVICE + "/feedback"), ("POST", "/healthz"),
])
def test_wrong_method_is_405_with_allow_header(client, method, path):
    response = client.open(path, method=method, json={})
    assert_outcome(response, 405, "not-supported")
    assert "OPTIONS" in response.headers["Allow"]


def test_body_over_the_size_limit_is_413_from_content_length(tmp_path):
    client = make_client(tmp_path, {"CRAMP_MAX_BODY_BYTES": "2048"})
    body = hook_request()
    body["extension"] = {"org.example.padding": "x" * 4000}
    response = client.post(SERVICE, json=body)
    assert_outcome(response, 413, "too-long")
    assert "2048" in issue_diagnostics(response)


def test_chunked_body_over_the_size_limit_is_413(tmp_path):
    client = make_client(tmp_path, {"CRAMP_MAX_BODY_BYTES": "2048"})
    payload = json.dumps({**hook_request(), "extension": {"org.example.padding": "x" * 4000}}).encode()
    response = client.post(SERVICE, input_stream=io.BytesIO(payload), content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})  # as gunicorn sets it for chunked
    assert_outcome(response, 413, "too-long")


def test_unexpected_exception_is_500_outcome_without_stack_trace_and_logged(tmp_path, caplog):
    app = create_app(make_settings(tmp_path))

    def explode():
        raise RuntimeError("boom-detail-that-must-not-leak")

    app.add_url_rule("/cds-services/_explode", view_func=explode, methods=["POST"])
    response = app.test_client().post("/cds-services/_explode", json={"secret": "body"})
    body = assert_outcome(response, 500, "exception")
    assert "boom" not in json.dumps(body)
    assert "RuntimeError" in caplog.text and "boom-detail-that-must-not-leak" in caplog.text
    assert '"secret"' not in caplog.text, "the request body is never logged"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_error_outcomes_are_valid_fhir_r4_operation_outcomes(client):
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    for response in (client.get("/nowhere"), post_hook(client, hook_request(omit_prefetch=True)),
                     client.post(SERVICE, data="{", content_type="application/json")):
        OperationOutcome.model_validate(response.get_json())


# --- request validation (checklist §3, §10) ------------------------------------------------------------------

def _mutate(hook: str, change) -> dict:
    body = hook_request(hook)
    change(body)
    return body


@pytest.mark.parametrize(("hook", "change", "where"), [
    ("patient-view", lambda b: b.pop("hookInstance"), "hookInstance"),
    ("patient-view", lambda b: b.update(hookInstance="not-a-uuid"), "hookInstance"),
    ("patient-view", lambda b: b.pop("context"), "context"),
    ("patient-view", lambda b: b["context"].pop("patientId"), "context.patientId"),
    ("patient-view", lambda b: b["context"].update(patientId="Patient/p1"), "context.patientId"),
    ("patient-view", lambda b: b["context"].pop("userId"), "context.userId"),
    ("patient-view", lambda b: b["context"].update(userId="doc-1"), "context.userId"),
    ("order-sign", lambda b: b["context"].update(userId="Patient/p1"), "context.userId"),
    ("order-select", lambda b: b["context"].pop("selections"), "context.selections"),
    ("order-select", lambda b: b["context"].update(selections="MedicationRequest/draft-1"), "context.selections"),
    ("order-select", lambda b: b["context"].update(selections=["draft-1"]), "context.selections[0]"),
    ("order-select", lambda b: b["context"].pop("draftOrders"), "context.draftOrders"),
    ("order-sign", lambda b: b["context"].pop("draftOrders"), "context.draftOrders"),
    ("order-sign", lambda b: b["context"].update(draftOrders=[{"resourceType": "MedicationRequest"}]),
     "context.draftOrders"),
    ("order-sign", lambda b: b["context"]["draftOrders"].update(entry=[1]), "context.draftOrders.entry[0]"),
    ("patient-view", lambda b: b.update(fhirServer="ftp://fhir.example.org"), "fhirServer"),
    ("patient-view", lambda b: b.update(fhirServer="fhir.example.org/r4"), "fhirServer"),
    ("patient-view", lambda b: b.update(prefetch=["x"]), "prefetch"),
    ("patient-view", lambda b: b.update(extension="x"), "extension"),
])
def test_invalid_hook_request_is_400_naming_the_field(client, hook, change, where):
    response = post_hook(client, _mutate(hook, change))
    assert_outcome(response, 400, "invalid")
    assert where in [i["expression"][0] for i in response.get_json()["issue"]]


def _auth(**changes) -> dict:
    auth = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
            "subject": "cramp-cds"}
    for k, v in changes.items():
        if v is ...:
            auth.pop(k)
        else:
            auth[k] = v
    return auth


@pytest.mark.parametrize(("auth", "where"), [
    (_auth(access_token=...), "fhirAuthorization.access_token"),
    (_auth(token_type="MAC"), "fhirAuthorization.token_type"),
    (_auth(expires_in="300"), "fhirAuthorization.expires_in"),
    (_auth(expires_in=True), "fhirAuthorization.expires_in"),
    (_auth(scope=...), "fhirAuthorization.scope"),
    (_auth(subject=...), "fhirAuthorization.subject"),
    ("Bearer abc", "fhirAuthorization"),
])
def test_invalid_fhir_authorization_is_400_and_never_echoes_the_token(client, auth, where):
    body = hook_request(fhir_server="https://fhir.example.org/r4")
    body["fhirAuthorization"] = auth
    response = post_hook(client, body)
    assert_outcome(response, 400)
    assert where in [i["expression"][0] for i in response.get_json()["issue"]]
    assert TOKEN not in response.get_data(as_text=True)


def test_fhir_authorization_requires_fhir_server(client):
    body = hook_request()
    body["fhirAuthorization"] = _auth()
    response = post_hook(client, body)
    assert_outcome(response, 400)
    assert ["fhirServer"] in [i["expression"] for i in response.get_json()["issue"]]


# --- CORS (X8) -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/cds-services", SERVICE, SERVICE + "/feedback", "/cds-services/unknown"])
def test_x8_preflight_answered_204_with_cors_headers(client, path):
    response = client.options(path, headers={"Origin": "https://sandbox.cds-hooks.org",
                                             "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type, X-Request-ID"


def test_x8_cors_headers_on_real_and_error_responses(client):
    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    for response in (client.get("/cds-services", headers=origin),
                     client.post(SERVICE, json=hook_request(), headers=origin),
                     client.post(SERVICE, data="{", content_type="application/json", headers=origin),
                     client.post("/cds-services/unknown", json={}, headers=origin),
                     client.post(SERVICE, json=hook_request(omit_prefetch=True), headers=origin)):
        assert response.headers["Access-Control-Allow-Origin"] == "*", response.status_code


def test_x8_allowed_origins_setting_echoes_only_listed_origins(tmp_path):
    client = make_client(tmp_path, {"CRAMP_ALLOWED_ORIGINS": "https://ehr.example.org, https://sandbox.cds-hooks.org"})
    ok = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "Origin" in ok.headers["Vary"]
    other = client.get("/cds-services", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert client.options("/cds-services", headers={"Origin": "https://evil.example.net"}).status_code == 204


# --- health and the authentication hook ----------------------------------------------------------------------

def test_healthz_in_local_profile_says_auth_is_off_loudly(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    client = make_client(tmp_path)
    assert any(r.levelno == logging.WARNING and "authentication is OFF" in r.getMessage() for r in caplog.records)
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["auth"] == "off" and "OFF" in body["warning"]
    assert body["knowledge_version"]


ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
jwt = pytest.importorskip("jwt")

ISS = "https://ehr.example.org"
KEY = ec.generate_private_key(ec.SECP384R1())


def _signed(aud: str, **extra) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **extra}
    return jwt.encode(claims, KEY, algorithm="ES384", headers={"typ": "JWT", "kid": "k1"})


@pytest.fixture
def secured(tmp_path):
    pytest.importorskip("cds_hooks.auth")
    from jwt.algorithms import ECAlgorithm

    jwk = {**ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1", "alg": "ES384", "use": "sig"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "clients.json").write_text(json.dumps({"clients": [{"iss": ISS, "jwks_file": "jwks.json"}]}))
    env = {"CRAMP_AUTH": "on", "CRAMP_TRUSTED_CLIENTS": str(tmp_path / "clients.json")}
    return make_client(tmp_path, env)


@pytest.mark.date_sensitive  # tokens are minted with the wall clock the verifier reads
def test_x2_x7_auth_on_valid_jwt_for_the_called_url_accepted_else_bare_401(secured, caplog):
    token = _signed("http://localhost/cds-services")
    assert secured.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    for headers in ({}, {"Authorization": f"Bearer {token}"},  # replayed jti
                    {"Authorization": f"Bearer {_signed('http://localhost' + SERVICE)}"}):  # wrong aud
        response = secured.get("/cds-services", headers=headers)
        assert response.status_code == 401
        assert response.get_json() == {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "login", "diagnostics": "authentication required"}]}
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "authentication failed" in caplog.text and token not in caplog.text


@pytest.mark.date_sensitive  # tokens are minted with the wall clock the verifier reads
def test_x7_auth_covers_service_and_feedback_calls_with_their_own_audience(secured):
    response = secured.post(SERVICE, json=hook_request(), headers={
        "Authorization": f"Bearer {_signed('http://localhost' + SERVICE)}"})
    assert response.status_code == 200
    assert secured.post(SERVICE, json=hook_request()).status_code == 401
    feedback = SERVICE + "/feedback"
    assert secured.post(feedback, json={"feedback": []}, headers={
        "Authorization": f"Bearer {_signed('http://localhost' + feedback)}"}).status_code == 200


def test_x8_preflight_and_healthz_need_no_jwt_when_auth_is_on(secured):
    assert secured.options(SERVICE, headers={"Origin": "https://x.example"}).status_code == 204
    assert secured.get("/healthz").get_json()["auth"] == "on"


def test_public_base_url_is_the_jwt_audience_behind_a_proxy(tmp_path):
    pytest.importorskip("cds_hooks.auth")
    from jwt.algorithms import ECAlgorithm

    jwk = {**ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1", "alg": "ES384"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "clients.json").write_text(json.dumps({"clients": [{"iss": ISS, "jwks_file": "jwks.json"}]}))
    client = make_client(tmp_path, {"CRAMP_AUTH": "on", "CRAMP_TRUSTED_CLIENTS": str(tmp_path / "clients.json"),
                                    "CRAMP_PUBLIC_BASE_URL": "https://cds.example.org/cramp/"})
    public = _signed("https://cds.example.org/cramp/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {public}"}).status_code == 200
    internal = _signed("http://localhost/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {internal}"}).status_code == 401
