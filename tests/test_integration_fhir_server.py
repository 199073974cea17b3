"""The service's FHIR fallback against a real FHIR R4 server on loopback (tests/fhir_server), with real data.

No mocks: the service fetches over HTTP from the running server, with the call's bearer token.
"""
from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import SAMPLES
from tests.service_fixtures.support import make_client, strip_uuids

pytestmark = pytest.mark.node
SERVICE = "/cds-services/leg-cramp-patient-view"


def hook_call(pid: str, fhir_base: str, *, token: str | None = "loopback-token", prefetch: dict | None = None):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": fhir_base,
            "context": {"userId": "Practitioner/example", "patientId": pid}}
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cramp-cds"}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def prefetch_from_server(server, pid: str) -> dict:
    """What an EHR would prefetch, read from the same server (so both paths see the same data)."""
    def bundle(path: str, **params) -> dict:
        return {"resourceType": "Bundle", "type": "searchset",
                "entry": [{"resource": r} for r in server.search_all(path, patient=pid, **params)]}
    return {"patient": server.get(f"/Patient/{pid}"), "medications": bundle("/MedicationRequest"),
            "statements": bundle("/MedicationStatement"), "conditions": bundle("/Condition"),
            "observations": bundle("/Observation")}


@pytest.mark.parametrize("sample", ["ckd-diuretics.json", "e1-drugs.json", "quinine-cramps.json"])
def test_fallback_fetches_from_a_real_fhir_server_and_matches_prefetch(fresh_fhir_server, tmp_path, sample):
    fresh_fhir_server.load(json.loads((SAMPLES / "patients" / sample).read_text()), preserve_ids=True)
    bundle = json.loads((SAMPLES / "patients" / sample).read_text())
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    client = make_client(tmp_path)

    fetched = client.post(SERVICE, json=hook_call(pid, fresh_fhir_server.base_url))
    prefetched = client.post(SERVICE, json=hook_call(pid, fresh_fhir_server.base_url,
                                                     prefetch=prefetch_from_server(fresh_fhir_server, pid)))
    assert fetched.status_code == prefetched.status_code == 200, fetched.get_json()
    (card,) = fetched.get_json()["cards"]
    assert strip_uuids(fetched.get_json()) == strip_uuids(prefetched.get_json())
    assert card["extension"]["org.cramp-cds.review"]["contributors"]


def test_bearer_token_is_required_and_forwarded(fhir_server_factory, tmp_path):
    server = fhir_server_factory(token="loopback-token")
    sample = json.loads((SAMPLES / "patients" / "hctz-no-labs.json").read_text())
    server.load(sample, preserve_ids=True)
    client = make_client(tmp_path)
    ok = client.post(SERVICE, json=hook_call("sample-hctz", server.base_url))
    assert ok.status_code == 200 and len(ok.get_json()["cards"]) == 1
    denied = client.post(SERVICE, json=hook_call("sample-hctz", server.base_url, token="wrong-token"))
    assert denied.status_code == 412
    assert "401" in denied.get_json()["issue"][0]["diagnostics"]
    assert "wrong-token" not in denied.get_data(as_text=True)


def test_unknown_patient_is_412(fresh_fhir_server, tmp_path):
    response = make_client(tmp_path).post(SERVICE, json=hook_call("nobody", fresh_fhir_server.base_url))
    assert response.status_code == 412
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "'patient'" in outcome["issue"][0]["diagnostics"] and "404" in outcome["issue"][0]["diagnostics"]


@pytest.mark.shared_data
def test_real_synthea_patient_through_the_fallback(fresh_fhir_server, tmp_path, shared_data):
    bundle = json.loads((shared_data / "bundles" / "bds__Dillon_Adams_b4405d0c-89e6-4788-b34a-f013480249c3.json")
                        .read_text())
    response = fresh_fhir_server.load(bundle)
    (ref,) = fresh_fhir_server.created_ids(response, "Patient")
    pid = ref.split("/")[-1]
    client = make_client(tmp_path, {"CRAMP_TRIGGER_POLICY": "any"})
    result = client.post(SERVICE, json=hook_call(pid, fresh_fhir_server.base_url))
    assert result.status_code == 200
    (card,) = result.get_json()["cards"]
    assert card["extension"]["org.cramp-cds.review"]["contributors"] == ["statin", "naproxen"]
