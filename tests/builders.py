"""Small builders for hand-written FHIR R4 test resources (the project's own, not copies)."""
from __future__ import annotations

from datetime import UTC, datetime

from plugin.codes import ATC, ICD10CM, LOINC, RXNORM, SNOMED, UCUM

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PATIENT = "Patient/p1"


def patient(pid: str = "p1", **extra) -> dict:
    return {"resourceType": "Patient", "id": pid, **extra}


def concept(system: str | None = None, code: str | None = None, display: str | None = None,
            text: str | None = None) -> dict:
    c: dict = {}
    if code:
        c["coding"] = [{"system": system, "code": code, **({"display": display} if display else {})}]
    if text:
        c["text"] = text
    return c


def rx(code: str, display: str | None = None) -> dict:
    return concept(RXNORM, code, display)


def med_request(mid: str, med: dict | None = None, *, status: str = "active", authored: str = "2026-01-10",
                subject: str = PATIENT, **extra) -> dict:
    r = {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "order",
         "subject": {"reference": subject}, "authoredOn": authored, **extra}
    if med is not None:
        r["medicationCodeableConcept"] = med
    return r


def condition(cid: str, code: dict, *, clinical: str | None = "active", verification: str | None = "confirmed",
              onset: str = "2025-05-01", subject: str = PATIENT, **extra) -> dict:
    r = {"resourceType": "Condition", "id": cid, "code": code, "subject": {"reference": subject},
         "onsetDateTime": onset, **extra}
    if clinical:
        r["clinicalStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification:
        r["verificationStatus"] = concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)
    return r


def icd(code: str, display: str | None = None) -> dict:
    return concept(ICD10CM, code, display)


def sct(code: str, display: str | None = None) -> dict:
    return concept(SNOMED, code, display)


def atc(code: str, display: str | None = None) -> dict:
    return concept(ATC, code, display)


def lab(oid: str, loinc: str, value: float, unit: str, *, when: str = "2026-10-01T08:00:00Z",
        low: float | None = None, high: float | None = None, status: str = "final", subject: str = PATIENT,
        **extra) -> dict:
    r = {"resourceType": "Observation", "id": oid, "status": status,
         "code": concept(LOINC, loinc), "subject": {"reference": subject}, "effectiveDateTime": when,
         "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}, **extra}
    if low is not None:
        rng: dict = {"low": {"value": low, "unit": unit, "system": UCUM, "code": unit}}
        if high is not None:
            rng["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
        r["referenceRange"] = [rng]
    return r


def cramps(cid: str = "cramp1", code: str = "G47.62") -> dict:
    return condition(cid, icd(code, "Sleep related leg cramps"))


def bundle(*resources: dict, btype: str = "collection") -> dict:
    return {"resourceType": "Bundle", "type": btype, "entry": [{"resource": r} for r in resources]}
