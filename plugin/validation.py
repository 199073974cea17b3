"""Strict FHIR R4 validation with fhir.resources (R4B models), used to report, never to reject."""
from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache

import orjson


@lru_cache(maxsize=64)
def _model(resource_type: str):
    # fhir.resources (and pydantic) load on first use: `import plugin` stays quick for the command-line tools,
    # and the service loads them at start (`preload`).
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        return None


READ_TYPES = ("Patient", "Medication", "MedicationRequest", "MedicationStatement", "MedicationDispense",
              "MedicationAdministration", "Condition", "Observation")


def preload() -> None:
    """Import the models the review validates, at start-up rather than on a clinician's first call."""
    for resource_type in READ_TYPES:
        _model(resource_type)


_RESULTS: OrderedDict[bytes, str | None] = OrderedDict()  # canonical JSON -> problem, most recent last
_RESULTS_LIMIT = 4096
_RESULTS_LOCK = threading.Lock()


def validation_problem(resource: dict) -> str | None:
    """None if `resource` is valid FHIR R4, else a short description of the first problems.

    Results are remembered by the resource's canonical JSON: an EHR sends the same chart again and again
    (order-select fires on every change of the order), and full model validation is the costly part.
    """
    try:
        key = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return _validate(resource)
    with _RESULTS_LOCK:
        if key in _RESULTS:
            _RESULTS.move_to_end(key)
            return _RESULTS[key]
    problem = _validate(resource)
    with _RESULTS_LOCK:
        _RESULTS[key] = problem
        if len(_RESULTS) > _RESULTS_LIMIT:
            _RESULTS.popitem(last=False)
    return problem


def _validate(resource: dict) -> str | None:
    from pydantic import ValidationError

    model = _model(str(resource.get("resourceType")))
    if model is None:
        return f"unknown resourceType {resource.get('resourceType')!r}"
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors()
        parts = []
        for err in errors[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__") or "resource"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return "; ".join(parts) + more
    except Exception as exc:  # noqa: BLE001 - a model bug must not stop the review
        return f"could not be validated ({type(exc).__name__})"
    return None
