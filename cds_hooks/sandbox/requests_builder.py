"""Build a CDS Hooks request the way an EHR would, from a patient Bundle and a service's discovery entry.

Shared by ``cramp-cds sandbox`` and the ``/sandbox`` page. It mimics the reference CDS Hooks sandbox
(checklist §12): a fresh ``hookInstance``, a context per hook (§10), and ``prefetch`` resolved by the *client*
from the service's templates. Here the "FHIR server" is the patient Bundle itself: each template is evaluated
locally by a small FHIR search over the Bundle's resources (:func:`search`).

What the local search understands (the prefetch query subset, P5):

* reads ``Type/id``; searches ``Type?param=value&...``;
* ``patient`` / ``subject`` (reference to the Patient, ``Patient/id`` or ``id``), ``_id``;
* ``status`` and ``intent`` (comma lists of codes); ``code``, ``category``, ``clinical-status``,
  ``verification-status`` (comma lists of ``system|code``, ``|code``, ``code`` or ``system|``);
* ``date`` (and ``authoredon``, ``effective``, ``effective-time``, ``whenhandedover``, ``onset-date``,
  ``recorded-date``) with the prefixes
  ``eq ne gt lt ge le`` compared by day; resources without the date do not match a date filter;
* ``_sort`` (``date``/``-date``) is honoured, ``_maxresults`` truncates; ``_count`` is ignored: every match comes
  back in one page, so there is never a ``next`` link the service would try to follow. Other parameters and
  modifiers (``:in``) are ignored, as a lenient FHIR server does.

Like the reference sandbox: a template whose token cannot be resolved is skipped, a read that finds nothing is
left out (never ``null``), and a search that finds nothing is an empty searchset Bundle. A MedicationRequest,
MedicationStatement or MedicationDispense that points at a Medication in the Bundle brings that Medication along
as a ``search.mode: include`` entry (as ``_include=...:medication`` would), so products coded on a Medication
still reach the service.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HOOKS = ("patient-view", "order-select", "order-sign")
ORDER_HOOKS = ("order-select", "order-sign")
DEFAULT_USER = "Practitioner/sandbox"
STYLES = ("spec", "reference-sandbox")

#: Common drugs that contribute to nothing, so that a "negative" order can be tried too.
EXTRA_DRUGS: dict[str, str] = {
    "197361": "Amlodipine 5 MG Oral Tablet",
    "313782": "Acetaminophen 325 MG Oral Tablet",
    "314076": "lisinopril 10 MG Oral Tablet",
    "861007": "metformin hydrochloride 500 MG Oral Tablet",
}
#: A few brand names and abbreviations people type, mapped to the ingredient name looked up instead.
ALIASES: dict[str, str] = {
    "hctz": "hydrochlorothiazide", "lasix": "furosemide", "qualaquin": "quinine", "aldactone": "spironolactone",
    "lipitor": "atorvastatin", "zocor": "simvastatin", "crestor": "rosuvastatin", "naprosyn": "naproxen",
    "evista": "raloxifene", "serevent": "salmeterol", "norvasc": "amlodipine", "tylenol": "acetaminophen",
    "paracetamol": "acetaminophen",
}
EXAMPLE_DRUGS = ("quinine", "hydrochlorothiazide", "furosemide", "atorvastatin", "amlodipine", "9071",
                 "rxnorm:313988")


class SandboxError(ValueError):
    """A usage problem (unknown drug or sample, a Bundle without a Patient, a hook nobody serves)."""


# --- drugs ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drug:
    code: str
    display: str

    def coding(self) -> dict:
        return {"system": RXNORM, "code": self.code, "display": self.display}


@lru_cache(maxsize=1)
def drug_table() -> dict[str, str]:
    """RxNorm code → display: every ``match.rxnorm`` entry of the knowledge, plus :data:`EXTRA_DRUGS`."""
    from plugin import default_knowledge

    names = default_knowledge().rxnorm_names  # file order matters: lookup_drug takes the first product
    return names | {code: name for code, name in EXTRA_DRUGS.items() if code not in names}


def _is_product(display: str) -> bool:
    """A single-ingredient clinical drug ("furosemide 40 MG Oral Tablet"), not an ingredient or a combination."""
    return bool(re.search(r"\d", display)) and "/" not in display and "[" not in display


def lookup_drug(text: str) -> Drug:
    """``quinine`` / ``Furosemide`` / ``9071`` / ``rxnorm:313988`` → a :class:`Drug` with its RxNorm display.

    A name picks the first single-ingredient product whose display starts with it (in knowledge-file order),
    else the ingredient itself. Raises :class:`SandboxError` listing examples when nothing matches.
    """
    table = drug_table()
    raw = (text or "").strip()
    code = raw.split(":", 1)[1].strip() if raw.lower().startswith("rxnorm:") else raw
    if code.isdigit():
        if code in table:
            return Drug(code, table[code])
        raise SandboxError(f"unknown RxNorm code {code!r}: the sandbox knows {len(table)} codes "
                           f"(e.g. {', '.join(EXAMPLE_DRUGS)})")
    name = ALIASES.get(raw.lower(), raw.lower())
    if name:
        products = [(c, d) for c, d in table.items() if d.lower().startswith(name + " ") and _is_product(d)]
        if products:
            return Drug(*products[0])
        exact = [(c, d) for c, d in table.items() if d.lower() == name]
        if exact:
            return Drug(*exact[0])
        loose = [(c, d) for c, d in table.items() if d.lower().startswith(name) and _is_product(d)]
        if loose:
            return Drug(*loose[0])
    raise SandboxError(f"unknown drug {raw!r}: give a drug name or an RxNorm code, "
                       f"e.g. {', '.join(EXAMPLE_DRUGS)}")


def drug_choices() -> list[dict]:
    """Named drugs for a picker: one product per ingredient, contributors first (knowledge-file order)."""
    seen: set[str] = set()
    out = []
    for code, display in drug_table().items():
        if not _is_product(display):
            continue
        ingredient = display.split(" ", 1)[0].lower()
        if ingredient in seen:
            continue
        seen.add(ingredient)
        out.append({"name": ingredient, "code": code, "display": display})
    return out


# --- the Bundle as a tiny FHIR server --------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    resource: dict
    full_url: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.resource.get('resourceType')}/{self.resource.get('id')}"


def entries_of(data: Any) -> list[Entry]:
    """A Bundle (any type, nested Bundles flattened), a list of resources, or one resource → entries."""
    out: list[Entry] = []

    def add(item: Any, full_url: str | None = None) -> None:
        if isinstance(item, list):
            for x in item:
                add(x)
        elif isinstance(item, dict) and item.get("resourceType") == "Bundle":
            for e in item.get("entry") or []:
                if isinstance(e, dict) and isinstance(e.get("resource"), dict):
                    add(e["resource"], e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None)
        elif isinstance(item, dict) and isinstance(item.get("resourceType"), str):
            out.append(Entry(item, full_url))

    add(data)
    return out


def find_patient(entries: Iterable[Entry]) -> dict:
    for e in entries:
        if e.resource.get("resourceType") == "Patient" and isinstance(e.resource.get("id"), str):
            return e.resource
    raise SandboxError("the bundle holds no Patient resource with an id: the sandbox needs one patient")


_TOKEN = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_TODAY = re.compile(r"^today\(\)\s*(?:([+-])\s*(\d+)\s*days?)?$")
_USER_TOKENS = {"userPractitionerId": "Practitioner", "userPractitionerRoleId": "PractitionerRole",
                "userPatientId": "Patient", "userRelatedPersonId": "RelatedPerson"}


def resolve_tokens(template: str, context: Mapping[str, Any], today: date) -> str | None:
    """Fill the template's tokens (P2/P3 and the sandbox's ``today()`` arithmetic); ``None`` if one is unresolvable."""
    unresolved = False

    def token(match: re.Match) -> str:
        nonlocal unresolved
        expr = match.group(1)
        value: Any = None
        if expr.startswith("context."):
            value = context.get(expr[len("context."):])
        elif expr == "user":
            value = context.get("userId")
        elif expr in _USER_TOKENS:
            user = str(context.get("userId") or "")
            kind, _, ident = user.partition("/")
            value = ident if kind == _USER_TOKENS[expr] and ident else None
        elif m := _TODAY.match(expr):
            sign, days = m.group(1), int(m.group(2) or 0)
            value = (today - timedelta(days=days) if sign == "-" else today + timedelta(days=days)).isoformat()
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            unresolved = True
            return ""
        return str(value)

    filled = _TOKEN.sub(token, template)
    return None if unresolved else filled


def _codings(value: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a CodeableConcept, a list of them, a Coding or a plain code."""
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, list):
        return [pair for v in value for pair in _codings(v)]
    if isinstance(value, dict):
        if "coding" in value:
            return _codings(value["coding"])
        if isinstance(value.get("code"), str):
            return [(value.get("system"), value["code"])]
    return []


_TOKEN_PATHS = {
    "code": ("code", "medicationCodeableConcept"),
    "category": ("category",),
    "clinical-status": ("clinicalStatus",),
    "verification-status": ("verificationStatus",),
    "status": ("status",),
    "intent": ("intent",),
}
_DATE_PATHS = {
    "date": ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued", "authoredOn",
             "recordedDate", "onsetDateTime", "date", "whenHandedOver"),
    "authoredon": ("authoredOn",),
    "effective": ("effectiveDateTime", "effectivePeriod.start"),
    "effective-time": ("effectiveDateTime", "effectivePeriod.start"),   # MedicationAdministration
    "whenhandedover": ("whenHandedOver",),                               # MedicationDispense
    "onset-date": ("onsetDateTime", "onsetPeriod.start"),
    "recorded-date": ("recordedDate",),
}
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")


def _path(resource: dict, path: str) -> Any:
    value: Any = resource
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value[:10]
    parts = (text + "-01-01")[:10] if len(text) == 4 else (text + "-01")[:10] if len(text) == 7 else text
    try:
        return date.fromisoformat(parts)
    except ValueError:
        return None


def _token_matches(resource: dict, param: str, values: list[str]) -> bool:
    have = [pair for p in _TOKEN_PATHS[param] for pair in _codings(resource.get(p))]
    for wanted in values:
        system, bar, code = wanted.rpartition("|")
        for have_system, have_code in have:
            if not bar:  # "code": any system
                if have_code == code:
                    return True
            elif not code:  # "system|": any code in that system
                if have_system == system:
                    return True
            elif have_code == code and (have_system or "") == system:
                return True
    return False


def _date_matches(resource: dict, param: str, values: list[str]) -> bool:
    found = next((d for p in _DATE_PATHS[param] if (d := _day(_path(resource, p))) is not None), None)
    if found is None:
        return False
    for raw in values:
        prefix, rest = (raw[:2], raw[2:]) if raw[:2] in _PREFIXES else ("eq", raw)
        wanted = _day(rest)
        if wanted is None:
            continue
        ok = {"eq": found == wanted, "ne": found != wanted, "gt": found > wanted, "lt": found < wanted,
              "ge": found >= wanted, "le": found <= wanted}[prefix]
        if not ok:
            return False
    return True


def _reference_matches(resource: dict, target: str, patient_urls: set[str]) -> bool:
    wanted = target if "/" in target else f"Patient/{target}"
    for field in ("subject", "patient"):
        ref = resource.get(field)
        ref = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(ref, str) and (ref == wanted or ref.endswith("/" + wanted) or ref in patient_urls):
            return True
    return False


def _medication_refs(resource: dict) -> list[str]:
    ref = resource.get("medicationReference")
    ref = ref.get("reference") if isinstance(ref, dict) else None
    return [ref] if isinstance(ref, str) and not ref.startswith("#") else []


def search(entries: list[Entry], query: str) -> dict | None:
    """Evaluate one resolved relative FHIR query against the entries: a resource (read), ``None`` (read of
    nothing) or a searchset Bundle."""
    path, _, qs = query.strip().lstrip("/").partition("?")
    if not qs and path.count("/") == 1:
        kind, ident = path.split("/")
        return next((e.resource for e in entries if e.resource.get("resourceType") == kind
                     and e.resource.get("id") == ident), None)
    kind = path.strip("/")
    params: list[tuple[str, list[str]]] = []
    for part in qs.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params.append((unquote(name), [unquote(v) for v in value.split(",") if v != ""]))

    patient_urls = {e.full_url for e in entries if e.resource.get("resourceType") == "Patient" and e.full_url}
    matches = []
    for e in entries:
        r = e.resource
        if r.get("resourceType") != kind:
            continue
        ok = True
        for name, values in params:
            if not values or ":" in name:
                continue  # modifiers (":in", ":missing") are not supported: ignored, as a lenient server does
            if name in ("patient", "subject"):
                ok = any(_reference_matches(r, v, patient_urls) for v in values)
            elif name == "_id":
                ok = r.get("id") in values
            elif name in _TOKEN_PATHS:
                ok = _token_matches(r, name, values)
            elif name in _DATE_PATHS:
                ok = _date_matches(r, name, values)
            if not ok:
                break
        if ok:
            matches.append(e)

    options = {n: v for n, v in params if n.startswith("_") and v}
    sort = (options.get("_sort") or [""])[0]
    if sort.lstrip("-") in _DATE_PATHS:
        key = sort.lstrip("-")

        def when(e: Entry) -> date:
            return next((d for p in _DATE_PATHS[key] if (d := _day(_path(e.resource, p))) is not None), date.min)

        matches.sort(key=when, reverse=sort.startswith("-"))
    if (limit := (options.get("_maxresults") or [""])[0]).isdigit():
        matches = matches[: int(limit)]

    bundle_entries = [_search_entry(e, "match") for e in matches]
    included: set[str] = set()
    for e in matches:
        for ref in _medication_refs(e.resource):
            med = next((m for m in entries if m.resource.get("resourceType") == "Medication"
                        and (m.ref == ref or ref.endswith("/" + m.ref) or m.full_url == ref)), None)
            if med is not None and (med.full_url or med.ref) not in included:
                included.add(med.full_url or med.ref)
                bundle_entries.append(_search_entry(med, "include"))
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "total": len(matches)}
    if bundle_entries:
        bundle["entry"] = bundle_entries
    return bundle


def _search_entry(e: Entry, mode: str) -> dict:
    out: dict = {}
    if e.full_url:
        out["fullUrl"] = e.full_url
    out["resource"] = e.resource
    out["search"] = {"mode": mode}
    return out


def resolve_prefetch(templates: Mapping[str, str], context: Mapping[str, Any], entries: list[Entry],
                     today: date) -> dict[str, Any]:
    """Every template the client can satisfy from the entries; skipped keys are left out (never ``null``)."""
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        query = resolve_tokens(template, context, today)
        if query is None:
            continue
        result = search(entries, query)
        if result is not None:
            prefetch[key] = result
    return prefetch


# --- the request -----------------------------------------------------------------------------------------------

def service_for_hook(discovery: Mapping[str, Any], hook: str, service_id: str | None = None) -> dict:
    """The discovery entry to call: by ``service_id`` if given, else the first service for ``hook``."""
    services = [s for s in discovery.get("services") or [] if isinstance(s, dict)]
    if service_id:
        for s in services:
            if s.get("id") == service_id:
                return s
        raise SandboxError(f"no service {service_id!r} in discovery (have: "
                           f"{', '.join(str(s.get('id')) for s in services) or 'none'})")
    for s in services:
        if s.get("hook") == hook:
            return s
    raise SandboxError(f"no service for hook {hook!r} in discovery (hooks served: "
                       f"{', '.join(sorted({str(s.get('hook')) for s in services})) or 'none'})")


def draft_medication_request(drug: Drug, *, patient_id: str, user_id: str, today: date, order_id: str,
                             style: str = "spec") -> dict:
    """A draft MedicationRequest as an order-entry screen holds it (checklist §10; §12 for the sandbox style)."""
    med: dict = {
        "resourceType": "MedicationRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [drug.coding()], "text": drug.display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": today.isoformat(),
        "requester": {"reference": user_id},
    }
    if style == "reference-sandbox":  # what sandbox.cds-hooks.org sends after a drug is picked
        med["category"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "outpatient",
            "display": "Outpatient"}]}
        med["dosageInstruction"] = [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                     "doseAndRate": [{"doseQuantity": {"value": 1}}]}]
        med["dispenseRequest"] = {"numberOfRepeatsAllowed": 1, "quantity": {"value": 1},
                                  "expectedSupplyDuration": {"value": 30, "unit": "days"}}
    return med


def build_request(data: Any, hook: str, service: Mapping[str, Any], drug: Drug | str | None = None, *,
                  user_id: str = DEFAULT_USER, today: date | None = None, hook_instance: str | None = None,
                  order_id: str | None = None, style: str = "spec") -> dict:
    """The request body an EHR would POST to ``/cds-services/{service['id']}``.

    ``data``: a patient Bundle, a list of resources or one resource (one Patient among them).
    ``service``: the service's discovery entry (its ``prefetch`` templates are resolved against ``data``).
    ``drug``: for order hooks, a :class:`Drug` or anything :func:`lookup_drug` takes.
    ``style``: ``spec`` (``draftOrders`` of type collection) or ``reference-sandbox`` (no ``Bundle.type``,
    ``category`` as one object, dosage and dispense filled in: the loose shape sandbox.cds-hooks.org sends).
    """
    if hook not in HOOKS:
        raise SandboxError(f"unknown hook {hook!r} (one of {', '.join(HOOKS)})")
    if style not in STYLES:
        raise SandboxError(f"unknown style {style!r} (one of {', '.join(STYLES)})")
    if service.get("hook") not in (None, hook):
        raise SandboxError(f"service {service.get('id')!r} is for {service.get('hook')!r}, not {hook!r}")
    entries = entries_of(data)
    patient = find_patient(entries)
    today = today or datetime.now(UTC).date()
    context: dict[str, Any] = {"userId": user_id, "patientId": patient["id"]}
    if hook in ORDER_HOOKS:
        if drug is None or drug == "":
            raise SandboxError(f"{hook} needs a drug to order (--order), e.g. {', '.join(EXAMPLE_DRUGS[:4])}")
        drug = drug if isinstance(drug, Drug) else lookup_drug(str(drug))
        order_id = order_id or f"sandbox-draft-{uuid.uuid4().hex[:12]}"
        order = draft_medication_request(drug, patient_id=patient["id"], user_id=user_id, today=today,
                                         order_id=order_id, style=style)
        draft_orders: dict = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}
        if style == "reference-sandbox":
            del draft_orders["type"]
        if hook == "order-select":
            context["selections"] = [f"MedicationRequest/{order_id}"]
        context["draftOrders"] = draft_orders
    body: dict[str, Any] = {"hookInstance": hook_instance or str(uuid.uuid4()), "hook": hook, "context": context}
    templates = service.get("prefetch") or {}
    if isinstance(templates, Mapping) and templates:
        prefetch = resolve_prefetch(templates, context, entries, today)
        if prefetch:  # the sandbox sends prefetch only if at least one key was fetched
            body["prefetch"] = prefetch
    return body
