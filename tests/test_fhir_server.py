"""Integration tests of the loopback FHIR R4 test server (tests/fhir_server: Node + @medplum/fhir-router)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.fhir_server import FhirServer, FhirServerError, to_transaction

pytestmark = pytest.mark.node

SHARED_BUNDLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bundles"
LOINC = "http://loinc.org"
K, MG = "2823-3", "19123-9"  # potassium, magnesium (serum/plasma)
CDS_OBS_QUERY = {
    "code": f"{LOINC}|{K},{LOINC}|{MG}",
    "date": "ge2025-01-01",
    "_sort": "-date",
    "_count": "100",
}


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _patient_bundle() -> tuple[dict, dict]:
    """A transaction for one patient: 3 MedicationRequests, 2 Conditions, 6 Observations."""
    pat = _urn()
    subject = {"reference": pat}
    entries: list[tuple[str, dict]] = [
        (
            pat,
            {
                "resourceType": "Patient",
                "name": [{"family": "Crampton", "given": ["Nora"]}],
                "gender": "female",
                "birthDate": "1948-02-03",
            },
        ),
    ]

    def med(status: str, text: str) -> dict:
        return {
            "resourceType": "MedicationRequest",
            "status": status,
            "intent": "order",
            "subject": subject,
            "medicationCodeableConcept": {"text": text},
            "authoredOn": "2025-02-01",
        }

    entries += [
        (_urn(), med("active", "hydrochlorothiazide 25 mg")),
        (_urn(), med("on-hold", "quinine 300 mg")),
        (_urn(), med("stopped", "atorvastatin 40 mg")),
    ]
    for code, text in [("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertension")]:
        entries.append(
            (
                _urn(),
                {
                    "resourceType": "Condition",
                    "subject": subject,
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": text}]},
                },
            )
        )

    def obs(code: str, when: str, value: float) -> dict:
        return {
            "resourceType": "Observation",
            "status": "final",
            "subject": subject,
            "effectiveDateTime": when,
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmol/L"},
        }

    observations = [
        (K, "2025-03-01T08:00:00Z", 3.9),
        (K, "2025-06-15T08:00:00Z", 3.2),
        (MG, "2025-05-02T08:00:00Z", 0.7),
        (MG, "2024-11-20T08:00:00Z", 0.8),
        (K, "2024-06-01T08:00:00Z", 4.1),
        ("2345-7", "2025-04-01T08:00:00Z", 5.5),
    ]
    entries += [(_urn(), obs(*o)) for o in observations]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": full, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}
            for full, res in entries
        ],
    }
    expected = {
        "active_meds": 2,
        "conditions": 2,
        "cds_obs_dates": ["2025-06-15T08:00:00Z", "2025-05-02T08:00:00Z", "2025-03-01T08:00:00Z"],
        "observations": 6,
    }
    return bundle, expected


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirServer) -> dict:
    bundle, expected = _patient_bundle()
    resp = fhir_server.load(bundle)
    assert resp["type"] == "transaction-response"
    assert all(e["response"]["status"].startswith("201") for e in resp["entry"])
    (patient_ref,) = fhir_server.created_ids(resp, "Patient")
    return {"patient_id": patient_ref.split("/")[1], "response": resp, **expected}


def _get(server: FhirServer, path: str, **params) -> requests.Response:
    return server.request("GET", path, params=params or None)


def test_metadata_is_r4_capability_statement(fhir_server: FhirServer) -> None:
    resp = requests.get(f"{fhir_server.base_url}/metadata", timeout=30)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    cap = resp.json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert {"Patient", "MedicationRequest", "MedicationStatement", "Condition", "Observation"} <= set(types)
    assert {"patient", "status"} <= {p["name"] for p in types["MedicationRequest"]["searchParam"]}
    assert {"transaction", "batch"} <= {i["code"] for i in cap["rest"][0]["interaction"]}


def test_transaction_resolves_urn_uuid_references(fhir_server: FhirServer, loaded: dict) -> None:
    pid = loaded["patient_id"]
    for entry in loaded["response"]["entry"][1:]:
        assert entry["resource"]["subject"]["reference"] == f"Patient/{pid}"
        assert entry["fullUrl"].startswith(fhir_server.base_url + "/")
    assert "urn:uuid" not in json.dumps(fhir_server.search_all("Observation", patient=pid))


def test_read_and_not_found(fhir_server: FhirServer, loaded: dict) -> None:
    pid = loaded["patient_id"]
    resp = _get(fhir_server, f"Patient/{pid}")
    assert resp.status_code == 200 and resp.json()["name"][0]["family"] == "Crampton"
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    assert resp.headers["ETag"].startswith('W/"')
    missing = _get(fhir_server, "Patient/does-not-exist")
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    unknown = _get(fhir_server, "NotAType/1")
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"


def test_cds_searches_with_bare_patient_id(fhir_server: FhirServer, loaded: dict) -> None:
    pid = loaded["patient_id"]
    meds = fhir_server.get("MedicationRequest", patient=pid, status="active,on-hold,draft")
    assert meds["type"] == "searchset" and meds["total"] == loaded["active_meds"]
    assert {e["resource"]["status"] for e in meds["entry"]} == {"active", "on-hold"}
    assert all(
        e["search"]["mode"] == "match" and e["fullUrl"].startswith("http://127.0.0.1:") for e in meds["entry"]
    )
    # bare id, Patient/id and subject:Patient agree
    assert (
        fhir_server.get("MedicationRequest", patient=f"Patient/{pid}", status="active,on-hold,draft")["total"]
        == 2
    )
    assert fhir_server.get("Condition", patient=pid)["total"] == loaded["conditions"]
    assert fhir_server.get("Observation", **{"subject:Patient": pid})["total"] == loaded["observations"]
    obs = fhir_server.get("Observation", patient=pid, **CDS_OBS_QUERY)
    assert [e["resource"]["effectiveDateTime"] for e in obs["entry"]] == loaded["cds_obs_dates"]
    assert fhir_server.get("MedicationStatement", patient=pid)["total"] == 0
    assert fhir_server.get("Observation", patient="someone-else")["total"] == 0


def test_post_search_form_encoded(fhir_server: FhirServer, loaded: dict) -> None:
    resp = fhir_server.request(
        "POST", "Observation/_search", data={"patient": loaded["patient_id"], **CDS_OBS_QUERY}
    )
    assert resp.status_code == 200
    bundle = resp.json()
    assert [e["resource"]["effectiveDateTime"] for e in bundle["entry"]] == loaded["cds_obs_dates"]


def test_paging_follows_next_links(fhir_server: FhirServer, loaded: dict) -> None:
    pid = loaded["patient_id"]
    bundle = fhir_server.get("Observation", patient=pid, _count=2, _sort="date")
    assert bundle["total"] == loaded["observations"] and len(bundle["entry"]) == 2
    seen, pages = [], 0
    while True:
        pages += 1
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        nxt = [lk["url"] for lk in bundle["link"] if lk["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith(fhir_server.base_url + "/Observation?")
        resp = requests.get(nxt[0], timeout=30)
        assert resp.status_code == 200
        bundle = resp.json()
    assert pages == 3 and len(seen) == len(set(seen)) == loaded["observations"]
    assert seen == [
        r["id"] for r in fhir_server.search_all("Observation", patient=pid, _sort="date", _count=100)
    ]


def test_unsupported_search_is_rejected_not_silently_empty(fhir_server: FhirServer) -> None:
    for params in (
        {"not-a-param": "1"},
        {"value-quantity": "5"},
        {"code:text": "potassium"},
        {"_count": "x"},
    ):
        resp = _get(fhir_server, "Observation", **params)
        assert resp.status_code == 400, params
        assert resp.json()["resourceType"] == "OperationOutcome"
    lenient = fhir_server.request(
        "GET", "Observation", params={"not-a-param": "1", "_count": 0}, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200


def test_put_create_update_and_bad_bodies(fresh_fhir_server: FhirServer) -> None:
    srv = fresh_fhir_server
    body = {"resourceType": "Patient", "id": "p-1", "name": [{"family": "One"}]}
    created = srv.request("PUT", "Patient/p-1", json=body)
    assert created.status_code == 201 and created.headers["Location"].startswith(
        srv.base_url + "/Patient/p-1/_history/"
    )
    body["name"][0]["family"] = "Uno"
    updated = srv.request("PUT", "Patient/p-1", json=body)
    assert (
        updated.status_code == 200
        and updated.json()["meta"]["versionId"] != created.json()["meta"]["versionId"]
    )
    assert srv.get("Patient/p-1")["name"][0]["family"] == "Uno"
    assert srv.request("PUT", "Patient/other-id", json=body).status_code == 400
    bad_json = srv.request(
        "POST", "Patient", data=b"{nope", headers={"Content-Type": "application/fhir+json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["resourceType"] == "OperationOutcome"
    assert (
        srv.request(
            "POST", "", json={"resourceType": "Bundle", "type": "collection", "entry": []}
        ).status_code
        == 400
    )


def test_failed_transaction_rolls_back(fresh_fhir_server: FhirServer) -> None:
    srv = fresh_fhir_server
    bundle = to_transaction([{"resourceType": "Patient", "name": [{"family": "Ghost"}]}])
    bundle["entry"].append(
        {
            "resource": {"resourceType": "Observation", "id": "x"},
            "request": {"method": "PUT", "url": "Observation/not-x"},
        }
    )
    with pytest.raises(FhirServerError) as err:
        srv.load(bundle)
    assert err.value.status == 400
    assert srv.stats() == {}


def test_load_converts_collections_and_preserves_ids(fresh_fhir_server: FhirServer) -> None:
    srv = fresh_fhir_server
    pat = _urn()
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": pat, "resource": {"resourceType": "Patient", "id": "pat-c"}},
            {"fullUrl": _urn(), "resource": {"resourceType": "Condition", "subject": {"reference": pat}}},
        ],
    }
    srv.load(collection)
    assert srv.get("Condition", patient="pat-c")["total"] == 1
    tx, _ = _patient_bundle()
    tx["entry"][0]["resource"]["id"] = "kept-id"
    srv.load(tx, preserve_ids=True)
    assert srv.get("MedicationRequest", patient="kept-id", status="active")["total"] == 1


def test_bearer_token_enforced(fhir_server_factory: Callable[..., FhirServer]) -> None:
    srv = fhir_server_factory(token="s3cret")
    url = f"{srv.base_url}/Patient"
    missing = requests.get(url, timeout=30)
    assert missing.status_code == 401 and missing.json()["resourceType"] == "OperationOutcome"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=30).status_code == 200
    assert requests.get(f"{srv.base_url}/metadata", timeout=30).status_code == 200  # public, as in SMART
    srv.load([{"resourceType": "Patient", "id": "t1"}])  # the controller forwards its token
    assert srv.get("Patient/t1")["id"] == "t1"


def test_cors_preflight_and_headers(fhir_server: FhirServer) -> None:
    pre = requests.options(
        f"{fhir_server.base_url}/Patient",
        timeout=30,
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
    assert "GET" in pre.headers["Access-Control-Allow-Methods"]
    got = requests.get(
        f"{fhir_server.base_url}/metadata", headers={"Origin": "http://localhost:3000"}, timeout=30
    )
    assert got.headers["Access-Control-Allow-Origin"] == "*"


def _shared_bundle(prefix: str) -> Path:
    if not SHARED_BUNDLES.is_dir():
        pytest.skip(f"shared data not found at {SHARED_BUNDLES} (only present inside the workplace)")
    files = sorted(SHARED_BUNDLES.glob(f"{prefix}*.json"), key=lambda p: p.stat().st_size)
    if not files:
        pytest.skip(f"no {prefix}* bundle in {SHARED_BUNDLES}")
    return files[0]


@pytest.mark.shared_data
def test_load_real_synthea_bundle(fhir_server: FhirServer) -> None:
    path = _shared_bundle("gsd__")  # POST entries with urn:uuid fullUrls
    bundle = json.loads(path.read_text())
    resp = fhir_server.load(bundle)
    assert len(resp["entry"]) == len(bundle["entry"])
    (patient_ref,) = fhir_server.created_ids(resp, "Patient")
    pid = patient_ref.split("/")[1]
    for rtype in ("MedicationRequest", "Condition", "Observation"):
        expected = sum(e["resource"]["resourceType"] == rtype for e in bundle["entry"])
        found = fhir_server.search_all(rtype, patient=pid)
        assert len(found) == expected, rtype
        assert all(r["subject"]["reference"] == patient_ref for r in found)


@pytest.mark.shared_data
def test_load_real_inferno_bundle_keeps_put_ids(fhir_server: FhirServer) -> None:
    path = _shared_bundle("inferno__")  # PUT entries, ids kept
    bundle = json.loads(path.read_text())
    resp = fhir_server.load(bundle)
    assert all(e["response"]["status"][:3] in ("200", "201") for e in resp["entry"])
    put_ids = [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "PUT"]
    patient_url = next(u for u in put_ids if u.startswith("Patient/"))
    assert fhir_server.get(patient_url)["resourceType"] == "Patient"
    obs = sum(e["resource"]["resourceType"] == "Observation" for e in bundle["entry"])
    assert fhir_server.get("Observation", patient=patient_url.split("/")[1], _count=0)["total"] == obs
