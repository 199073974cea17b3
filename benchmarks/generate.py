"""Synthetic benchmark data of the project's own (nothing here is copied into the repository).

(a) :func:`large_patient` — one patient with about 2,000 resources: medications (contributors and bystanders,
    active and historic, coded, contained and text-only), conditions (active and resolved) and ten years of
    lab panels and vitals every five weeks, electrolyte LOINCs included. Built in memory, deterministically, in ~0.1 s.
(b) :func:`bulk_export` — a Bulk Data ndjson export of N patients (one file per type: Patient, Condition,
    MedicationRequest, Observation) made by copying real-shaped patients with fresh ids and rewritten references.
    Templates: the real Synthea patients of ``../shared/data/ndjson/bulk-data-server-100-patients``, else the
    project's ``samples/patients/*.json``. Written streaming into ``.bench/bulk-<N>-<fingerprint>/`` (git-ignored)
    and reused while the templates and this generator are unchanged.

``python -m benchmarks.generate [--patients 10000 50000] [--force]`` builds the exports ahead of time.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from benchmarks.common import BENCH_DIR, SAMPLES, SHARED_DATA, server_shaped

GENERATOR_VERSION = "2"  # bump when the output of bulk_export changes, to invalidate the cache
BULK_TYPES = ("Patient", "Condition", "MedicationRequest", "Observation")
SHARED_BULK = SHARED_DATA / "ndjson" / "bulk-data-server-100-patients"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# --- (a) one large patient ------------------------------------------------------------------------------------

# (rxnorm, display, contributor?) — contributors per plugin/knowledge/contributors.json, bystanders match nothing.
CHRONIC_MEDS = [
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet", True),
    ("617312", "atorvastatin 10 MG Oral Tablet", True),
    ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet", False),
    ("314076", "lisinopril 10 MG Oral Tablet", False),
    ("197361", "amlodipine 5 MG Oral Tablet", False),
    ("966222", "levothyroxine sodium 0.05 MG Oral Tablet", False),
    ("312938", "sertraline 50 MG Oral Tablet", False),
]
COURSE_MEDS = [
    ("313988", "furosemide 40 MG Oral Tablet", True),
    ("105899", "naproxen 500 MG Oral Tablet [Naprosyn]", True),
    ("308182", "amoxicillin 250 MG Oral Capsule", False),
    ("313782", "acetaminophen 325 MG Oral Tablet", False),
    ("197806", "ibuprofen 600 MG Oral Tablet", False),
    ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", False),
    ("198053", "diclofenac sodium 75 MG Delayed Release Oral Tablet", False),
]
# (code system, code, display, contributor?, active?)
CONDITIONS = [
    (ICD10, "R25.2", "Cramp and spasm", True, True),
    (SNOMED, "433144002", "Chronic kidney disease stage 3", True, True),
    (ICD10, "E11.9", "Type 2 diabetes mellitus without complications", True, True),
    (SNOMED, "38341003", "Hypertensive disorder, systemic arterial", False, True),
    (SNOMED, "55822004", "Hyperlipidemia", False, True),
    (SNOMED, "40930008", "Hypothyroidism", True, True),
    (SNOMED, "35489007", "Depressive disorder", False, True),
    (SNOMED, "239873007", "Osteoarthritis of knee", False, True),
]
ACUTE_CONDITIONS = [
    (SNOMED, "444814009", "Viral sinusitis (disorder)"),
    (SNOMED, "10509002", "Acute bronchitis (disorder)"),
    (SNOMED, "195662009", "Acute viral pharyngitis (disorder)"),
    (SNOMED, "68566005", "Urinary tract infectious disease (disorder)"),
    (SNOMED, "34095006", "Dehydration"),  # a contributor, but resolved: must not count
    (SNOMED, "283371005", "Laceration of forearm"),
]
# (loinc, display, unit, low, high, mean, sd) per lab in each monthly panel
PANEL = [
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 4.1, 0.35),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145, 140, 2.0),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 98, 107, 103, 2.0),
    ("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", 22, 29, 25, 1.5),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7, 20, 16, 3.0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.7, 1.3, 1.6, 0.2),
    ("33914-3", ("Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by "
                 "Creatinine-based formula (MDRD)"), "mL/min/{1.73_m2}", 60, 120, 48, 5.0),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99, 128, 18),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.6, 10.2, 9.3, 0.4),
    ("19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "mg/dL", 1.7, 2.2, 1.95, 0.15),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12, 16, 13.5, 0.8),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11, 7.0, 1.4),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400, 250, 40),
]
VITALS = [
    ("29463-7", "Body Weight", "kg", 84.0, 2.5),
    ("8867-4", "Heart rate", "/min", 72, 8),
    ("8310-5", "Body temperature", "Cel", 36.8, 0.3),
]


def _concept(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _ts(day: date, hour: int = 9) -> str:
    return f"{day.isoformat()}T{hour:02d}:15:00-05:00"


def _quantity(value: float, unit: str) -> dict:
    return {"value": round(value, 2), "unit": unit, "system": UCUM, "code": unit}


def large_patient(*, anchor: date | None = None, patient_id: str = "bench-large", years: int = 10,
                  seed: int = 7) -> list[dict]:
    """About 2,000 resources of one patient; the newest data lies just before `anchor` (default today, UTC)."""
    rng = random.Random(seed)
    anchor = anchor or datetime.now(UTC).date()
    subject = {"reference": f"Patient/{patient_id}"}
    out: list[dict] = [{
        "resourceType": "Patient", "id": patient_id,
        "identifier": [{"system": "http://example.org/fhir/sid/bench-mrn", "value": "BENCH-LARGE"}],
        "name": [{"family": "Benchmark", "given": ["Large"]}], "gender": "female", "birthDate": "1951-03-14",
    }]
    counter = iter(range(1, 1_000_000))

    def rid(prefix: str) -> str:
        return f"{patient_id}-{prefix}-{next(counter)}"

    start = anchor - timedelta(days=365 * years)
    # Chronic medications: a new order every 3 months (the newest active, older ones completed).
    for code, display, _ in CHRONIC_MEDS:
        day = start + timedelta(days=rng.randrange(0, 400))
        while day < anchor:
            newest = day + timedelta(days=91) >= anchor
            out.append({
                "resourceType": "MedicationRequest", "id": rid("medrx"), "status": "active" if newest else "completed",
                "intent": "order", "medicationCodeableConcept": _concept(RXNORM, code, display), "subject": subject,
                "authoredOn": _ts(day), "requester": {"reference": "Practitioner/bench-pcp", "display": "Dr. Bench"},
                "dosageInstruction": [{"text": "1 tablet by mouth daily", "timing": {"repeat": {
                    "frequency": 1, "period": 1, "periodUnit": "d"}}}],
                "dispenseRequest": {"numberOfRepeatsAllowed": 3, "quantity": {"value": 90, "unit": "tablet"}},
            })
            day += timedelta(days=91)
    # Courses: short, stopped or completed, spread over the years.
    for n in range(40):
        code, display, _ = COURSE_MEDS[n % len(COURSE_MEDS)]
        day = start + timedelta(days=rng.randrange(0, 365 * years))
        out.append({
            "resourceType": "MedicationRequest", "id": rid("medrx"), "status": rng.choice(["stopped", "completed"]),
            "intent": "order", "medicationCodeableConcept": _concept(RXNORM, code, display), "subject": subject,
            "authoredOn": _ts(day), "dosageInstruction": [{"text": "as directed for 10 days"}],
        })
    # A spironolactone order through a contained Medication, and a text-only salmeterol order.
    out.append({
        "resourceType": "MedicationRequest", "id": rid("medrx"), "status": "active", "intent": "order",
        "contained": [{"resourceType": "Medication", "id": "med1",
                       "code": _concept(RXNORM, "313096", "spironolactone 25 MG Oral Tablet")}],
        "medicationReference": {"reference": "#med1"}, "subject": subject,
        "authoredOn": _ts(anchor - timedelta(days=120)),
    })
    out.append({
        "resourceType": "MedicationRequest", "id": rid("medrx"), "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "salmeterol 50 mcg inhalation powder, 1 puff twice daily"},
        "subject": subject, "authoredOn": _ts(anchor - timedelta(days=700)),
    })
    # Statements the patient reported: supplements and OTC drugs.
    for n in range(20):
        day = start + timedelta(days=rng.randrange(0, 365 * years))
        text = ["magnesium oxide 400 mg", "vitamin D3 1000 IU", "fish oil 1 g", "naproxen 220 mg (Aleve) as needed",
                "melatonin 3 mg", "glucosamine 500 mg"][n % 6]
        out.append({
            "resourceType": "MedicationStatement", "id": rid("stmt"),
            "status": "active" if n % 3 == 0 else "completed", "medicationCodeableConcept": {"text": text},
            "subject": subject, "effectivePeriod": {"start": _ts(day)}, "dateAsserted": _ts(day + timedelta(days=3)),
        })
    # Conditions: chronic (active) and acute (resolved, some years ago).
    for system, code, display, _, active in CONDITIONS:
        day = start + timedelta(days=rng.randrange(0, 365 * (years - 1)))
        out.append(_condition(rid("cond"), subject, system, code, display, day, active=active))
    for n in range(52):
        system, code, display = ACUTE_CONDITIONS[n % len(ACUTE_CONDITIONS)]
        day = start + timedelta(days=rng.randrange(0, 365 * years - 30))
        out.append(_condition(rid("cond"), subject, system, code, display, day, active=False,
                              abated=day + timedelta(days=rng.randrange(5, 20))))
    # Lab panels and vitals every ~5 weeks for ten years; potassium drifts low over the last year (a finding).
    visit = start + timedelta(days=15)
    while visit < anchor - timedelta(days=2):
        recent = (anchor - visit).days < 365
        for loinc, display, unit, low, high, mean, sd in PANEL:
            if loinc == "19123-9" and visit.month % 3:
                continue  # magnesium quarterly
            value = rng.gauss(mean - (0.7 if recent and loinc == "2823-3" else 0.0), sd)
            out.append(_lab(rid("obs"), subject, loinc, display, unit, value, low, high, visit))
        for loinc, display, unit, mean, sd in VITALS:
            out.append(_vital(rid("obs"), subject, loinc, display, _quantity(rng.gauss(mean, sd), unit), visit))
        out.append(_blood_pressure(rid("obs"), subject, rng.gauss(134, 9), rng.gauss(82, 6), visit))
        visit += timedelta(days=36)
    return out


def _condition(cid: str, subject: dict, system: str, code: str, display: str, day: date, *, active: bool,
               abated: date | None = None) -> dict:
    cond = {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active" if active else "resolved"}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "problem-list-item"}]}],
        "code": _concept(system, code, display), "subject": subject,
        "onsetDateTime": _ts(day), "recordedDate": _ts(day),
    }
    if abated:
        cond["abatementDateTime"] = _ts(abated)
    return cond


def _lab(oid: str, subject: dict, loinc: str, display: str, unit: str, value: float, low: float, high: float,
         day: date) -> dict:
    obs = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory", "display": "laboratory"}]}],
        "code": _concept(LOINC, loinc, display), "subject": subject,
        "effectiveDateTime": _ts(day, 8), "issued": _ts(day, 14).replace(":00-", ":00.000-"),
        "valueQuantity": _quantity(value, unit),
        "referenceRange": [{"low": _quantity(low, unit), "high": _quantity(high, unit)}],
    }
    if value < low or value > high:
        code = "L" if value < low else "H"
        obs["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": code}]}]
    return obs


def _vital(oid: str, subject: dict, loinc: str, display: str, quantity: dict, day: date) -> dict:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "vital-signs"}]}],
        "code": _concept(LOINC, loinc, display), "subject": subject, "effectiveDateTime": _ts(day, 9),
        "valueQuantity": quantity,
    }


def _blood_pressure(oid: str, subject: dict, systolic: float, diastolic: float, day: date) -> dict:
    obs = _vital(oid, subject, "85354-9", "Blood pressure panel with all children optional", {}, day)
    del obs["valueQuantity"]
    obs["component"] = [
        {"code": _concept(LOINC, "8480-6", "Systolic blood pressure"), "valueQuantity": _quantity(systolic, "mm[Hg]")},
        {"code": _concept(LOINC, "8462-4", "Diastolic blood pressure"),
         "valueQuantity": _quantity(diastolic, "mm[Hg]")},
    ]
    return obs


RESOURCES_PER_YEAR = 204  # what large_patient makes per year of history (2,045 for ten years)


def sized_patient(n: int, *, patient_id: str = "bench-large") -> list[dict]:
    """The large patient with exactly `n` resources (n >= 2): enough years of history, thinned evenly.

    The mix of medications, conditions and labs stays that of :func:`large_patient`, so the cost per resource is
    comparable from 500 to 20,000 resources (the cost-growth curve of benchmarks.cost_curve).
    """
    years = max(1, -(-n // RESOURCES_PER_YEAR))
    resources = large_patient(patient_id=patient_id, years=years)
    while len(resources) < n:  # conditions and statements do not grow with the years: add years until enough
        years += max(1, (n - len(resources)) // RESOURCES_PER_YEAR)
        resources = large_patient(patient_id=patient_id, years=years)
    patient, others = resources[0], resources[1:]
    if len(others) > n - 1:
        others = [others[i * len(others) // (n - 1)] for i in range(n - 1)]
    return [patient, *others]


# --- (b) a Bulk Data export of N patients -----------------------------------------------------------------------

# A token that may be a resource id: after `"`, `/` or `:` (a value, a Type/id reference, urn:uuid:) up to a quote.
_TOKEN = re.compile(rb'(?<=["/:])([A-Za-z0-9.\-]{1,64})(?=")')


@dataclass
class Templates:
    source: str                               # where the template patients came from
    fingerprint: str                          # changes when the templates or the generator change
    types: tuple[str, ...]
    parts: list[dict[str, list[bytes]]]       # per template patient, per type: its ndjson split after each id

    @property
    def patients(self) -> int:
        return len(self.parts)


def _patient_of(resource: dict) -> str | None:
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str) and "Patient/" in ref["reference"]:
            return ref["reference"].rsplit("Patient/", 1)[1]
    return None


def _shared_template_lines() -> tuple[dict[str, dict[str, list[bytes]]], list[Path]] | None:
    if not SHARED_BULK.is_dir():
        return None
    files: list[Path] = []
    per_patient: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
    for rtype in BULK_TYPES:
        for path in sorted(SHARED_BULK.glob(f"*{rtype}*.ndjson")):
            if not re.fullmatch(rf"(?:\d+\.)?{rtype}(?:\.\d+)?\.ndjson", path.name):
                continue
            files.append(path)
            for line in path.read_bytes().splitlines():
                if not line.strip():
                    continue
                resource = orjson.loads(line)
                pid = _patient_of(resource)
                if pid and resource.get("resourceType") == rtype:
                    per_patient[pid][rtype].append(orjson.dumps(resource) + b"\n")
    return (per_patient, files) if per_patient else None


def _sample_template_lines() -> tuple[dict[str, dict[str, list[bytes]]], list[Path]]:
    files = sorted((SAMPLES / "patients").glob("*.json"))
    per_patient: dict[str, dict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
    for path in files:
        for resource in server_shaped(json.loads(path.read_bytes())):
            pid = _patient_of(resource)
            if pid and resource["resourceType"] in BULK_TYPES:
                per_patient[pid][resource["resourceType"]].append(orjson.dumps(resource) + b"\n")
    return per_patient, files


def load_templates() -> Templates:
    """The template patients, each type's ndjson pre-split after every resource id it holds."""
    shared = _shared_template_lines()
    if shared is not None:
        (per_patient, files), source = shared, f"{SHARED_BULK} (real Synthea patients)"
    else:
        (per_patient, files), source = _sample_template_lines(), f"{SAMPLES / 'patients'} (shared data absent)"
    # Fresh ids for every exported resource and every Encounter they point at (per-patient data); Practitioner
    # and Organization references stay shared, as in a real export.
    ids: set[bytes] = set()
    for types in per_patient.values():
        for lines in types.values():
            for line in lines:
                resource = orjson.loads(line)
                ids.add(resource["id"].encode())
                encounter = (resource.get("encounter") or {}).get("reference") or ""
                if encounter.startswith("Encounter/"):
                    ids.add(encounter.split("/", 1)[1].encode())
    parts: list[dict[str, list[bytes]]] = []
    for pid in sorted(per_patient):
        split: dict[str, list[bytes]] = {}
        for rtype in BULK_TYPES:
            blob = b"".join(per_patient[pid].get(rtype, ()))
            cuts = [m.end() for m in _TOKEN.finditer(blob) if m.group(1) in ids]
            bounds = [0, *cuts, len(blob)]
            split[rtype] = [blob[a:b] for a, b in itertools.pairwise(bounds)]
        parts.append(split)
    digest = hashlib.sha256(GENERATOR_VERSION.encode())
    for path in files:
        st = path.stat()
        digest.update(f"{path}:{st.st_size}:{int(st.st_mtime)}".encode())
    return Templates(source, digest.hexdigest()[:10], BULK_TYPES, parts)


@dataclass(frozen=True)
class BulkExport:
    folder: Path
    patients: int
    counts: dict[str, int]
    bytes: int
    source: str
    generated_s: float | None      # None: reused from the cache

    @property
    def files(self) -> list[Path]:
        return [self.folder / f"{t}.ndjson" for t in BULK_TYPES if (self.folder / f"{t}.ndjson").exists()]

    @property
    def resources(self) -> int:
        return sum(self.counts.values())


INFO_FILE = "bench-export.json"  # not named manifest.json: it is no Bulk Data manifest


def bulk_export(n_patients: int, *, force: bool = False, templates: Templates | None = None,
                cache: Path = BENCH_DIR) -> BulkExport:
    """The N-patient export in the cache, generated (streaming) when missing or stale."""
    templates = templates or load_templates()
    folder = cache / f"bulk-{n_patients}-{templates.fingerprint}"
    info_path = folder / INFO_FILE
    if info_path.exists() and not force:
        info = json.loads(info_path.read_text())
        return BulkExport(folder, n_patients, info["counts"], info["bytes"], info["source"], None)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"bulk-{n_patients}-*"):  # older generations of the same size, and crashed runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = cache / f".bulk-{n_patients}-{templates.fingerprint}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    counts: dict[str, int] = {}
    total_bytes = 0
    n_templates = templates.patients
    suffixes = [f"-{c:x}".encode() for c in range((n_patients + n_templates - 1) // n_templates)]
    for rtype in templates.types:
        lines = 0
        with open(tmp / f"{rtype}.ndjson", "wb", buffering=1 << 20) as out:
            for i in range(n_patients):
                chunk = suffixes[i // n_templates].join(templates.parts[i % n_templates][rtype])
                out.write(chunk)
                lines += chunk.count(b"\n")
            total_bytes += out.tell()
        counts[rtype] = lines
    info = {"patients": n_patients, "counts": counts, "bytes": total_bytes, "source": templates.source,
            "generator": GENERATOR_VERSION, "generated": datetime.now(UTC).isoformat(timespec="seconds")}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    tmp.rename(folder)
    return BulkExport(folder, n_patients, counts, total_bytes, templates.source, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="*", default=[10_000, 50_000])
    parser.add_argument("--force", action="store_true", help="regenerate even when cached")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    resources = large_patient()
    print(f"large patient: {len(resources)} resources "
          f"({len(orjson.dumps(resources)) / 1e6:.1f} MB JSON) in {time.perf_counter() - started:.2f} s")
    templates = load_templates()
    print(f"templates: {templates.patients} patients from {templates.source}")
    for n in args.patients:
        export = bulk_export(n, force=args.force, templates=templates)
        how = "reused" if export.generated_s is None else f"generated in {export.generated_s:.1f} s"
        print(f"bulk {n:>6} patients: {export.resources:,} resources, {export.bytes / 1e9:.2f} GB, {how}: "
              f"{export.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
