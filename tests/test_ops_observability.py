"""What operators watch (issue 14): Prometheus metrics parsed by prometheus_client's own parser, JSON log
lines parsed and checked for request ids and for the absence of PHI and tokens, the request-id round trip,
versions, liveness and readiness (readiness failing when PostgreSQL is down)."""
from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families

from cds_hooks.app import create_app
from cds_hooks.observability import logs
from cds_hooks.version import __version__
from tests.service_fixtures.postgres import started_server
from tests.service_fixtures.support import (
    FHIR,
    TOKEN,
    cramps_on_thiazide_prefetch,
    feedback_entry,
    hook_request,
    make_client,
    make_settings,
    post_hook,
)

SERVICE = "leg-cramp-patient-view"
METRICS_TOKEN = "metrics-token-0123456789"


def samples(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# --- metrics --------------------------------------------------------------------------------------------------

def test_metrics_count_requests_cards_feedback_and_suppressions(tmp_path):
    client = make_client(tmp_path)  # the local profile: metrics on
    before = samples(client)
    card = post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json()["cards"][0]
    client.post(f"/cds-services/{SERVICE}/feedback",
                json={"feedback": [feedback_entry(card["uuid"], reason="already-addressed")]})
    assert post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json() == {"cards": []}
    after = samples(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cramp_http_requests_total", endpoint="invoke", service=SERVICE, status="200") == 2
    assert delta("cramp_http_requests_total", endpoint="feedback", service=SERVICE, status="200") == 1
    assert delta("cramp_http_request_duration_seconds_count", endpoint="invoke", service=SERVICE) == 2
    assert delta("cramp_cards_total", indicator="info", contributor="thiazide-diuretic") == 1
    assert delta("cramp_feedback_total", outcome="overridden", reason="already-addressed") == 1
    assert delta("cramp_suppressed_cards_total", card="contributors") == 1


def test_metrics_count_412s_fallbacks_by_prefetch_key_and_fhir_request_durations(tmp_path):
    client = make_client(tmp_path)
    before = samples(client)
    missing = hook_request(prefetch=cramps_on_thiazide_prefetch())
    del missing["prefetch"]["medications"]
    assert post_hook(client, missing).status_code == 412  # no fhirServer to fetch it from
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, f"{FHIR}/MedicationRequest", json={"resourceType": "Bundle", "type": "searchset"})
        fetched = hook_request(prefetch=cramps_on_thiazide_prefetch(), fhir_server=FHIR, token=TOKEN)
        del fetched["prefetch"]["medications"]
        assert post_hook(client, fetched).status_code == 200
    after = samples(client)
    assert value(after, "cramp_prefetch_unavailable_total", key="medications") - value(
        before, "cramp_prefetch_unavailable_total", key="medications") == 1
    assert value(after, "cramp_prefetch_fallbacks_total", key="medications") - value(
        before, "cramp_prefetch_fallbacks_total", key="medications") == 1
    assert value(after, "cramp_fhir_request_duration_seconds_count") - value(
        before, "cramp_fhir_request_duration_seconds_count") == 1


def test_metrics_off_by_default_in_production_and_token_protected_when_set(tmp_path):
    assert make_settings(tmp_path, {"CRAMP_PROFILE": "production", "CRAMP_AUTH": "off"}).metrics is False
    off = make_client(tmp_path, {"CRAMP_METRICS": "off"})
    assert off.get("/metrics").status_code == 404
    guarded = make_client(tmp_path, {"CRAMP_METRICS_TOKEN": METRICS_TOKEN})
    refused = guarded.get("/metrics")
    assert refused.status_code == 401 and refused.get_json()["resourceType"] == "OperationOutcome"
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert samples(guarded, Authorization=f"Bearer {METRICS_TOKEN}")


# --- request ids and logs -------------------------------------------------------------------------------------

@pytest.fixture
def json_log():
    """A JSON handler on the service's loggers, as CRAMP_LOG_FORMAT=json installs on the root logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.RequestIdFilter())
    logger = logging.getLogger("cramp_cds")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_well_formed_caller_request_id_is_kept_echoed_and_logged(tmp_path, json_log):
    client = make_client(tmp_path)
    response = client.post(f"/cds-services/{SERVICE}", json=hook_request(),
                           headers={"X-Request-ID": "EHR-call:2026.11.01-0042"})
    assert response.headers["X-Request-ID"] == "EHR-call:2026.11.01-0042"
    [access] = [line for line in json_log() if line["logger"] == "cramp_cds.access"]
    assert access["request_id"] == "EHR-call:2026.11.01-0042"
    assert (access["status"], access["service"], access["endpoint"], access["cards"]) == (200, SERVICE, "invoke", 0)
    assert access["duration_ms"] >= 0 and access["level"] == "INFO" and isinstance(access["pid"], int)


@pytest.mark.parametrize("offered", ["has space", "x" * 129, "tab\tin", "<script>", "-leading-dash", ""])
def test_a_malformed_request_id_is_replaced_by_a_new_uuid(tmp_path, offered):
    response = make_client(tmp_path).get("/healthz", headers={"X-Request-ID": offered})
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}",
                        response.headers["X-Request-ID"])


def test_json_log_lines_carry_no_phi_and_no_tokens(tmp_path, json_log):
    client = make_client(tmp_path)
    pid, name = "mrn-55501234", "Zebedee Quixotic"
    prefetch = cramps_on_thiazide_prefetch()
    prefetch["patient"].update(id=pid, name=[{"family": "Quixotic", "given": ["Zebedee"]}])
    for key in ("medications", "conditions"):
        prefetch[key]["entry"][0]["resource"]["subject"]["reference"] = f"Patient/{pid}"
    body = hook_request(prefetch=prefetch, pid=pid, fhir_server=FHIR, token=TOKEN)
    card = post_hook(client, body).get_json()["cards"][0]
    client.post(f"/cds-services/{SERVICE}/feedback", json={"feedback": [
        {**feedback_entry(card["uuid"]), "overrideReason": {
            "reason": {"code": "already-addressed", "system": "https://cramp-cds.org/fhir/CodeSystem/override-reason"},
            "userComment": f"spoke with {name}"}}]})
    bad = hook_request(prefetch=prefetch, pid=pid)
    bad["prefetch"]["medications"] = {"resourceType": "Bundle", "entry": "not a list"}
    post_hook(client, bad)
    lines = json_log()
    assert len(lines) >= 3 and all(line["request_id"] != "-" for line in lines
                                   if line["logger"] == "cramp_cds.access")
    text = json.dumps(lines)
    for secret in (pid, "Zebedee", "Quixotic", TOKEN, "Practitioner/doc-1"):
        assert secret not in text, f"{secret!r} reached the log"


# --- versions, liveness, readiness ----------------------------------------------------------------------------

def test_versions_in_cli_healthz_and_discovery(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cds_hooks.cli", "--version"], capture_output=True, text=True,
                         check=True).stdout
    app = create_app(make_settings(tmp_path))
    knowledge = app.extensions["cramp_cds"].knowledge_version
    assert out.strip() == f"cramp-cds {__version__} (knowledge {knowledge})"
    client = app.test_client()
    health = client.get("/healthz").get_json()
    assert (health["status"], health["version"], health["knowledge_version"]) == ("ok", __version__, knowledge)
    for service in client.get("/cds-services").get_json()["services"]:
        assert service["extension"]["org.cramp-cds.version"] == {"service": __version__, "knowledge": knowledge}


def test_readyz_ready_when_knowledge_is_loaded_and_the_database_writable(tmp_path):
    response = make_client(tmp_path).get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready" and body["checks"] == {"knowledge": "ok", "database": "ok"}


def test_readyz_fails_while_postgresql_is_down_and_recovers_when_it_is_back(tmp_path):
    server = started_server()
    try:
        client = make_client(tmp_path, {"CRAMP_DATABASE": server.new_database().replace("+psycopg", "")})
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
        server.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        body = down.get_json()
        assert body["status"] == "not ready" and body["checks"]["knowledge"] == "ok"
        assert body["checks"]["database"].startswith("unavailable: ")
        assert client.get("/healthz").status_code == 200, "liveness does not depend on the database"
        server.start()
        assert client.get("/readyz").status_code == 200
    finally:
        server.remove()


# --- settings -------------------------------------------------------------------------------------------------

OPS_SETTINGS = ("CRAMP_LOG_FORMAT", "CRAMP_METRICS", "CRAMP_METRICS_TOKEN", "CRAMP_ADMIN", "CRAMP_ADMIN_TOKEN",
                "CRAMP_DATABASE")


def test_ops_settings_are_documented_where_operators_look():
    import cds_hooks.settings as module
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for name in OPS_SETTINGS:
        assert f"`{name}`" in module.__doc__ and f"`{name}" in readme and name in guide, name


@pytest.mark.parametrize(("name", "value"), [("CRAMP_LOG_FORMAT", "xml"), ("CRAMP_METRICS", "maybe"),
                                             ("CRAMP_METRICS_TOKEN", "short"), ("CRAMP_ADMIN", "yes"),
                                             ("CRAMP_ADMIN_TOKEN", "short")])
def test_a_bad_ops_setting_is_a_startup_error_naming_it(tmp_path, name, value):
    from cds_hooks.settings import SettingsError

    with pytest.raises(SettingsError, match=name):
        make_settings(tmp_path, {name: value})


def test_log_format_defaults_text_locally_json_in_production(tmp_path):
    assert make_settings(tmp_path).log_format == "text"
    assert make_settings(tmp_path, {"CRAMP_PROFILE": "production", "CRAMP_AUTH": "off"}).log_format == "json"
