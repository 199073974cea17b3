"""Builders for CDS Hooks requests and FHIR resources used by the service tests, plus the app factory.

Everything is built from scratch here (small, readable); nothing of our own code is mocked. The FHIR
server is the network and is served by ``responses`` in the tests that need one.
"""
from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from cds_hooks.app import create_app
from cds_hooks.settings import Settings

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
FHIR = "https://fhir.example.org/r4"
TOKEN = "secret-access-token-abc123"
SECRET = "test-secret-key-0123456789abcdef"
PID = "p1"
HYDROCHLOROTHIAZIDE = ("310798", "hydrochlorothiazide 25 MG Oral Tablet")
FUROSEMIDE = ("313988", "Furosemide 40 MG Oral Tablet")
QUININE = ("997010", "quinine sulfate 324 MG Oral Capsule")
ACETAMINOPHEN = ("313782", "Acetaminophen 325 MG Oral Tablet")
KEYS = ("patient", "medications", "statements", "dispenses", "administrations", "conditions", "observations")
OPTIONAL = ("statements", "dispenses", "administrations")
SERVICE_FOR = {"patient-view": "leg-cramp-patient-view", "order-select": "leg-cramp-order-select",
               "order-sign": "leg-cramp-order-sign"}


def make_settings(tmp_path: Path, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Local-profile settings with an isolated database in ``tmp_path`` (auth off unless ``env`` says so)."""
    base = {"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path / "var"), "CRAMP_SECRET_KEY": SECRET}
    settings = Settings.from_env({**base, **(env or {})})
    return dataclasses.replace(settings, **overrides) if overrides else settings


def make_client(tmp_path: Path, env: dict[str, str] | None = None, **overrides: Any) -> FlaskClient:
    return create_app(make_settings(tmp_path, env, **overrides)).test_client()


# --- FHIR resources ------------------------------------------------------------------------------------------

def days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).date().isoformat()


def patient(pid: str = PID) -> dict:
    return {"resourceType": "Patient", "id": pid, "birthDate": "1950-02-03", "gender": "female"}


def med_request(mid: str, drug: tuple[str, str], *, status: str = "active", pid: str = PID,
                authored: str | None = None) -> dict:
    return {
        "resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": drug[0], "display": drug[1]}],
                                      "text": drug[1]},
        "subject": {"reference": f"Patient/{pid}"}, "authoredOn": authored or days_ago(400),
    }


def draft_order(mid: str, drug: tuple[str, str], pid: str = PID) -> dict:
    return med_request(mid, drug, status="draft", pid=pid, authored=days_ago(0))


def cramps(cid: str = "cramp1", pid: str = PID) -> dict:
    return {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "code": {"coding": [{"system": ICD10CM, "code": "G47.62", "display": "Sleep related leg cramps"}]},
        "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": days_ago(200),
    }


def potassium(oid: str, value: float, pid: str = PID, when_days_ago: int = 20) -> dict:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2823-3"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": days_ago(when_days_ago) + "T08:00:00Z",
        "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"},
    }


def searchset(*resources: dict, next_url: str | None = None, base: str = FHIR) -> dict:
    b: dict = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
               "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                          "search": {"mode": "match"}} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


def prefetch_from(resources: list[dict], patient_id: str, base: str = FHIR) -> dict:
    """What a FHIR server holding ``resources`` answers to each of our prefetch templates (status filters,
    the lab codes and the lab lookback applied), as a prefetch object."""
    import plugin

    by_type: dict[str, list[dict]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    lab_loincs = set(plugin.load_knowledge().lab_loincs)
    since = days_ago(365)

    def recent_lab(o: dict) -> bool:
        codes = {c.get("code") for c in o.get("code", {}).get("coding", []) if c.get("system") == LOINC}
        return bool(codes & lab_loincs) and str(o.get("effectiveDateTime", ""))[:10] >= since

    [pat] = [p for p in by_type["Patient"] if p["id"] == patient_id]
    return {
        "patient": pat,
        "medications": searchset(*[m for m in by_type.get("MedicationRequest", [])
                                   if m.get("status") in ("active", "on-hold", "draft")], base=base),
        "statements": searchset(*[m for m in by_type.get("MedicationStatement", [])
                                  if m.get("status") in ("active", "intended", "on-hold")], base=base),
        "dispenses": searchset(*[d for d in by_type.get("MedicationDispense", [])
                                 if str(d.get("whenHandedOver", ""))[:10] >= days_ago(365)], base=base),
        "administrations": searchset(*[a for a in by_type.get("MedicationAdministration", [])
                                       if str(a.get("effectiveDateTime", ""))[:10] >= days_ago(30)], base=base),
        "conditions": searchset(*by_type.get("Condition", []), base=base),
        "observations": searchset(*[o for o in by_type.get("Observation", []) if recent_lab(o)], base=base),
    }


def outcome(text: str = "upstream failure") -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception",
                                                            "diagnostics": text}]}


def full_prefetch(*, meds: list[dict] = (), statements: list[dict] = (), conditions: list[dict] = (),
                  observations: list[dict] = (), dispenses: list[dict] = (), administrations: list[dict] = (),
                  pid: str = PID) -> dict:
    return {
        "patient": patient(pid),
        "medications": searchset(*meds),
        "statements": searchset(*statements),
        "dispenses": searchset(*dispenses),
        "administrations": searchset(*administrations),
        "conditions": searchset(*conditions),
        "observations": searchset(*observations),
    }


def cramps_on_thiazide_prefetch() -> dict:
    """Documented cramps + an active thiazide and no recent labs: a contributors card with a lab suggestion."""
    return full_prefetch(meds=[med_request("hctz1", HYDROCHLOROTHIAZIDE)], conditions=[cramps()])


# --- CDS Hooks requests --------------------------------------------------------------------------------------

def hook_request(hook: str = "patient-view", *, prefetch: dict | None = None, pid: str = PID,
                 fhir_server: str | None = None, token: str | None = None,
                 drafts: list[dict] | None = None, selections: list[str] | None = None,
                 omit_prefetch: bool = False) -> dict:
    """A CDS Hooks 2.0 request body for ``hook``; by default a complete prefetch with no findings."""
    context: dict = {"patientId": pid, "userId": "Practitioner/doc-1"}
    if hook in ("order-select", "order-sign"):
        drafts = drafts if drafts is not None else [draft_order("draft-1", ACETAMINOPHEN, pid)]
        # the sandbox's draftOrders Bundle has no "type" (checklist §12): keep it that way
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}
        if hook == "order-select":
            context["selections"] = selections or [f"MedicationRequest/{drafts[0]['id']}"]
    body: dict = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cramp-cds", "patient": pid}
    if not omit_prefetch:
        body["prefetch"] = prefetch if prefetch is not None else full_prefetch(pid=pid)
    return body


def post_hook(client: FlaskClient, body: dict, service_id: str | None = None):
    return client.post(f"/cds-services/{service_id or SERVICE_FOR[body['hook']]}", json=body)


def feedback_entry(card_uuid: str, outcome_: str = "overridden", *, reason: str | None = "already-addressed",
                   system: str = "https://cramp-cds.org/fhir/CodeSystem/override-reason",
                   accepted: list[str] | None = None, timestamp: str | None = None) -> dict:
    entry: dict = {"card": card_uuid, "outcome": outcome_,
                   "outcomeTimestamp": timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if outcome_ == "accepted":
        entry["acceptedSuggestions"] = [{"id": s} for s in (accepted or [])]
    if reason:
        entry["overrideReason"] = {"reason": {"code": reason, "system": system}}
    return entry


def issue_diagnostics(response) -> str:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    return " | ".join(i.get("diagnostics", "") for i in body["issue"])


def strip_uuids(value):
    """A response with every uuid removed, to compare two calls' cards."""
    if isinstance(value, dict):
        return {k: strip_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [strip_uuids(v) for v in value]
    return value
