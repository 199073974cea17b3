"""Discovery (checklist D1-D3, G2): built from the one service registry, with the prefetch templates."""
from __future__ import annotations

import pytest

import plugin
from tests.card_checks import assert_no_empty_values
from tests.service_fixtures.support import hook_request, make_client, post_hook

IDS = {"leg-cramp-patient-view": "patient-view", "leg-cramp-order-select": "order-select",
       "leg-cramp-order-sign": "order-sign"}


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


def test_d1_discovery_always_at_cds_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert response.mimetype == "application/json"


def test_d2_body_is_object_with_non_empty_services_array(client):
    body = client.get("/cds-services").get_json()
    assert list(body) == ["services"]
    assert len(body["services"]) == 3, "the sandbox fails on an empty list (checklist §12)"


def test_d3_each_service_has_hook_title_description_id_and_prefetch(client):
    services = client.get("/cds-services").get_json()["services"]
    assert {s["id"]: s["hook"] for s in services} == IDS
    for s in services:
        assert isinstance(s["title"], str) and s["title"]
        assert isinstance(s["description"], str) and len(s["description"]) > 40
        prefetch = s["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert prefetch["medications"] == "MedicationRequest?patient={{context.patientId}}&status=active,on-hold,draft"
        assert prefetch["statements"] == (
            "MedicationStatement?patient={{context.patientId}}&status=active,intended,on-hold")
        assert prefetch["conditions"] == "Condition?patient={{context.patientId}}"
        codes = ",".join(f"http://loinc.org|{c}" for c in plugin.load_knowledge().lab_loincs)
        assert prefetch["observations"] == (
            f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date&_count=200")
        assert prefetch["dispenses"] == (
            "MedicationDispense?patient={{context.patientId}}&_sort=-whenhandedover&_count=100")
        assert prefetch["administrations"] == (
            "MedicationAdministration?patient={{context.patientId}}&_sort=-effective-time&_count=100")


def test_d3_p4_date_tokens_and_their_lookback_are_an_opt_in_setting(tmp_path):
    from cds_hooks.service.services import dispense_days

    client = make_client(tmp_path, {"CRAMP_LAB_LOOKBACK_DAYS": "90", "CRAMP_PREFETCH_DATE_TOKENS": "on"})
    for s in client.get("/cds-services").get_json()["services"]:
        assert "&date=ge{{today() - 90 days}}&_sort=-date&_count=200" in s["prefetch"]["observations"]
        assert f"&whenhandedover=ge{{{{today() - {dispense_days()} days}}}}&" in s["prefetch"]["dispenses"]
        assert "&effective-time=ge{{today() - 30 days}}&" in s["prefetch"]["administrations"]


def test_d3_p2_p3_default_templates_use_only_cds_hooks_2_0_tokens(client):
    """A 2.0 client must be able to fill every key: only root-level context fields (no today(), a 3.0 token)."""
    import re

    for s in client.get("/cds-services").get_json()["services"]:
        for template in s["prefetch"].values():
            for token in re.findall(r"\{\{(.*?)\}\}", template):
                assert token == "context.patientId"


def test_g2_discovery_has_no_null_or_empty_values(client):
    assert_no_empty_values(client.get("/cds-services").get_json(), "$")


def test_d1_each_service_is_at_discovery_url_plus_id(client):
    for s in client.get("/cds-services").get_json()["services"]:
        response = post_hook(client, hook_request(s["hook"]), s["id"])
        assert response.status_code == 200, s["id"]
