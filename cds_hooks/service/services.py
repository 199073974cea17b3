"""The service registry: the one list discovery (checklist D1-D3) and invocation are built from."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from plugin import ReviewOptions

LOINC = "http://loinc.org"
HOOKS = ("patient-view", "order-select", "order-sign")
# Supplementary keys: fetched from fhirServer when missing, but their absence is not a 412 (many EHRs do not
# record statements or dispenses; the orders, conditions and labs are what a review cannot do without).
OPTIONAL_KEYS = frozenset({"statements", "dispenses", "administrations"})
# What a card says it was reviewed without, when a supplementary key could not be had.
SUPPLEMENTARY_LABELS = {"statements": "medication statements", "dispenses": "dispensing records",
                        "administrations": "medication administrations"}
# Count-bounded searches (CDS Hooks 2.0 templates): the newest page is the whole answer; no next links followed.
COUNT_BOUNDS = {"observations": 200, "dispenses": 100, "administrations": 100}
DEFAULTS = ReviewOptions()


def dispense_days(options: ReviewOptions = DEFAULTS) -> int:
    """How far back dispenses matter: a current dispense, or activity that keeps an order from being stale."""
    return max(options.dispense_window_days, options.stale_order_days)


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str]

    def discovery(self) -> dict:
        """This service's discovery entry (D3): no empty or null members (G2)."""
        entry = {"hook": self.hook, "title": self.title, "description": self.description, "id": self.id}
        if self.prefetch:
            entry["prefetch"] = dict(self.prefetch)
        return entry


def prefetch_templates(lab_loincs: Iterable[str], lab_lookback_days: int,
                       options: ReviewOptions = DEFAULTS, *, date_tokens: bool = False) -> dict[str, str]:
    """The prefetch templates every service declares (P1, P5 query subset).

    By default only CDS Hooks 2.0 tokens (P2/P3: root-level context fields): the labs, dispenses and
    administrations are bounded by ``_sort`` (newest first) and ``_count`` instead of a date, so a 2.0 client
    can fill every key. ``date_tokens`` (CRAMP_PREFETCH_DATE_TOKENS=on, for 3.0 clients) bounds them by
    ``{{today() - N days}}`` (P4) as well, with the rules' own windows (`options`).
    """
    codes = ",".join(f"{LOINC}|{code}" for code in lab_loincs)
    observations = "Observation?patient={{context.patientId}}" + (f"&code={codes}" if codes else "")
    dispenses = "MedicationDispense?patient={{context.patientId}}"
    administrations = "MedicationAdministration?patient={{context.patientId}}"
    if date_tokens:
        observations += f"&date=ge{{{{today() - {lab_lookback_days} days}}}}"
        dispenses += f"&whenhandedover=ge{{{{today() - {dispense_days(options)} days}}}}"
        administrations += f"&effective-time=ge{{{{today() - {options.administration_window_days} days}}}}"
    observations += f"&_sort=-date&_count={COUNT_BOUNDS['observations']}"
    dispenses += f"&_sort=-whenhandedover&_count={COUNT_BOUNDS['dispenses']}"
    administrations += f"&_sort=-effective-time&_count={COUNT_BOUNDS['administrations']}"
    return {
        "patient": "Patient/{{context.patientId}}",
        "medications": "MedicationRequest?patient={{context.patientId}}&status=active,on-hold,draft",
        "statements": "MedicationStatement?patient={{context.patientId}}&status=active,intended,on-hold",
        "dispenses": dispenses,
        "administrations": administrations,
        "conditions": "Condition?patient={{context.patientId}}",
        "observations": observations,
    }


_COMMON = (
    "Looks for what plausibly contributes to nocturnal leg cramps — medications (diuretics, statins and "
    "other evidence-backed classes), associated conditions and low potassium, magnesium or calcium — "
    "and answers with at most one evidence-graded advisory card."
)


def build_registry(lab_loincs: Iterable[str], lab_lookback_days: int,
                   options: ReviewOptions = DEFAULTS, *, date_tokens: bool = False) -> dict[str, Service]:
    templates = prefetch_templates(tuple(lab_loincs), lab_lookback_days, options, date_tokens=date_tokens)
    services = [
        Service(
            id="leg-cramp-patient-view",
            hook="patient-view",
            title="Leg cramp medication review",
            description="When a chart is opened for a patient with documented leg cramps (or on quinine): "
            + _COMMON,
            prefetch=templates,
        ),
        Service(
            id="leg-cramp-order-select",
            hook="order-select",
            title="Leg cramp check of selected orders",
            description="When orders are selected: flags a selected contributor drug for a patient with "
            "documented leg cramps, or quinine ordered for anyone. " + _COMMON,
            prefetch=templates,
        ),
        Service(
            id="leg-cramp-order-sign",
            hook="order-sign",
            title="Leg cramp check before signing",
            description="Before orders are signed: flags a drafted contributor drug for a patient with "
            "documented leg cramps, or quinine ordered for anyone. " + _COMMON,
            prefetch=templates,
        ),
    ]
    return {s.id: s for s in services}


def discovery_document(registry: dict[str, Service]) -> dict:
    return {"services": [s.discovery() for s in registry.values()]}
