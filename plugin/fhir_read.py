"""FHIR R4 JSON -> facts. Reads resources the way real EHR data arrives, and never fails on one.

Every reader takes a plain dict and returns facts (or nothing); a resource it cannot use is
reported as a warning, not an exception. References are resolved through `contained`,
`Type/id` and Bundle `fullUrl`s (including `urn:uuid:`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from plugin.codes import (
    ATC,
    ICD10CM,
    LOINC,
    NDC,
    RXNORM,
    SNOMED,
    UCUM,
    array,
    canonical_system,
    codings,
    concept_label,
    concept_texts,
    local_codings,
    ndc_product,
    normalise_atc,
    normalise_icd10,
    normalise_ndc,
)
from plugin.context import FAMILY, HISTORICAL, HYPOTHETICAL, NEGATED, POSSIBLE, modifiers
from plugin.dates import parse_when
from plugin.knowledge import ELEMENT_OF, Knowledge, normalise_words
from plugin.record import ConditionFact, LabFact, MedicationFact
from plugin.units import canonical_unit, convert

MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration")
COUNTING_STATUS = {
    "MedicationRequest": {"active", "on-hold", "draft"},
    "MedicationStatement": {"active", "intended", "on-hold"},
    # A dispense counts while recent (the rules check the date); these statuses mean it was or is being handed over.
    "MedicationDispense": {"completed", "in-progress", "preparation", "on-hold"},
    "MedicationAdministration": {"in-progress", "on-hold", "completed"},
}
ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
VOID_VERIFICATION = {"refuted", "entered-in-error"}
# Results policy: final, amended and corrected results count (a corrected or amended result outranks a final one
# at the same time); a preliminary result counts and says so; registered, cancelled, entered-in-error and unknown
# results are not read.
USABLE_OBSERVATION = {"final", "amended", "corrected", "preliminary", None}
LOW_INTERPRETATIONS = {"L", "LL", "LU"}
EXCLUDING = frozenset({NEGATED, POSSIBLE, FAMILY, HYPOTHETICAL})  # context that means "not this patient's, now"
_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def flatten(items: Iterable[object]) -> Iterator[tuple[object, str | None]]:
    """(resource, fullUrl) for loose resources and every Bundle entry (nested Bundles included)."""
    for item in items:
        if isinstance(item, dict) and item.get("resourceType") == "Bundle":
            yield from _entries(item)
        else:
            yield item, None


def _entries(bundle: dict) -> Iterator[tuple[object, str | None]]:
    # A plain loop per entry (no generator per entry: this runs for every resource of every call).
    for entry in array(bundle.get("entry")):
        if isinstance(entry, dict) and "resource" in entry:
            full_url = entry.get("fullUrl")
            full_url = full_url if isinstance(full_url, str) else None
            resource = entry["resource"]
            if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
                yield from ((r, full_url) for r, _ in _entries(resource))  # a nested Bundle: the outer fullUrl
            else:
                yield resource, full_url
        elif entry is not None:
            yield entry, None


def first_date(resource: dict, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` that holds a date-time; a Period (key ending in "Period") gives its start."""
    for key in keys:
        value = resource.get(key)
        if key.endswith("Period"):
            value = value.get("start") if isinstance(value, dict) else None
        if isinstance(value, str):
            return value
    return None


def local_reference(resource: dict) -> str | None:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return None


class Resolver:
    """Finds referenced resources by `Type/id`, absolute URL or `urn:uuid:` fullUrl.

    Only the types a reference is ever followed to are kept: the Patient (subjects) and Medications.
    """

    RESOLVABLE = frozenset({"Patient", "Medication"})

    def __init__(self) -> None:
        self._by_key: dict[str, dict] = {}
        self._references: dict[str, str | None] = {}  # reference -> Type/id: most resources share a subject

    def add(self, resource: dict, full_url: str | None = None) -> None:
        if resource.get("resourceType") not in self.RESOLVABLE:
            return
        self._references.clear()
        ref = local_reference(resource)
        if ref:
            self._by_key.setdefault(ref, resource)
        if full_url:
            self._by_key.setdefault(full_url, resource)
            norm = normalise_reference(full_url)
            if norm:
                self._by_key.setdefault(norm, resource)

    def get(self, reference: str | None) -> dict | None:
        if not reference:
            return None
        return self._by_key.get(reference) or self._by_key.get(normalise_reference(reference) or "")

    def reference_of(self, reference: str | None) -> str | None:
        """A reference as `Type/id`, resolving `urn:uuid:` through the Bundle's fullUrls."""
        if not isinstance(reference, str):
            return None
        if reference not in self._references:
            target = self._by_key.get(reference)
            found = local_reference(target) if target is not None else None
            self._references[reference] = found or normalise_reference(reference)
        return self._references[reference]


def normalise_reference(reference: str) -> str | None:
    """`Patient/1`, `https://x/fhir/Patient/1/_history/2` -> `Patient/1`; others (urn:uuid, #id) -> None."""
    m = _REF.search(reference)
    return f"{m.group(1)}/{m.group(2)}" if m else None


def subject_of(resource: dict, resolver: Resolver) -> str | None:
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return resolver.reference_of(ref["reference"])
    return None


# --- medications -------------------------------------------------------------------------------

_MEDICATION_REF = re.compile(r"^Medication/[A-Za-z0-9\-.]{1,64}$")


def missing_medication_references(items: Iterable[object]) -> list[str]:
    """`Medication/id` references that medication resources make but `items` (resources or Bundles) lack.

    A client reads these one by one: CDS Hooks 2.0 prefetch has no `_include`, and bulk searches often omit them.
    """
    present, wanted = set(), []
    for resource, _ in flatten(items):
        if not isinstance(resource, dict):
            continue
        if ref := local_reference(resource):
            present.add(ref)
        target = resource.get("medicationReference")
        target = target.get("reference") if isinstance(target, dict) else None
        if isinstance(target, str) and _MEDICATION_REF.match(target) and target not in wanted:
            wanted.append(target)
    return [ref for ref in wanted if ref not in present]


def _medication_concepts(resource: dict, resolver: Resolver) -> tuple[list[dict], str | None, str | None]:
    """The concepts that name the drug, a display fallback, and a warning if a reference dangles."""
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        return [concept], None, None
    ref = resource.get("medicationReference")
    if not isinstance(ref, dict):
        return [], None, None
    target_ref = ref.get("reference")
    display = ref.get("display") if isinstance(ref.get("display"), str) else None
    medication = None
    if isinstance(target_ref, str) and target_ref.startswith("#"):
        for contained in array(resource.get("contained")):
            if isinstance(contained, dict) and contained.get("id") == target_ref[1:]:
                medication = contained
    elif isinstance(target_ref, str):
        medication = resolver.get(target_ref)
    if not isinstance(medication, dict) or medication.get("resourceType") != "Medication":
        warning = f"medication reference {target_ref!r} could not be resolved" if target_ref else None
        return [], display, warning
    concepts = [medication["code"]] if isinstance(medication.get("code"), dict) else []
    for ingredient in array(medication.get("ingredient")):
        if isinstance(ingredient, dict) and isinstance(ingredient.get("itemCodeableConcept"), dict):
            concepts.append(ingredient["itemCodeableConcept"])
    return concepts, display, None


def match_drug(concepts: list[dict], extra_texts: Iterable[str], knowledge: Knowledge) -> tuple[tuple[str, ...], str]:
    """Contributor ids for a drug from RxNorm, ATC and names; the first path that matched, for people."""
    found: list[str] = []
    how = ""
    for concept in concepts:
        for system, code, _ in codings(concept):
            ids: tuple[str, ...] = ()
            if system == RXNORM:
                ids = knowledge.rxnorm.get(code, ())
                label = f"RxNorm {code}"
            elif system == NDC:
                ndc = normalise_ndc(code)
                ids = knowledge.ndc.get(ndc) or knowledge.ndc.get(ndc_product(ndc) or "", ())
                label = f"NDC {code}"
            elif system == ATC:
                atc = normalise_atc(code)
                label = f"ATC {atc}"
                for n in knowledge.atc_lengths:
                    ids = ids + knowledge.atc.get(atc[:n], ()) if len(atc) >= n else ids
            for cid in ids:
                if cid not in found:
                    found.append(cid)
                    how = how or label
        if knowledge.local_drug:  # a site's own drug ids (CRAMP_SITE_KNOWLEDGE)
            for key in local_codings(concept):
                for cid in knowledge.local_drug.get(key, ()):
                    if cid not in found:
                        found.append(cid)
                        how = how or f"site code {key[0]}|{key[1]}"
    texts = [t for c in concepts for t in concept_texts(c)] + [t for t in extra_texts if t]
    for cid, word in _word_matches(texts, knowledge.drug_names, knowledge.drug_name_ids, knowledge.word_cache):
        if cid not in found:
            found.append(cid)
            how = how or f"name '{word}'"
    return tuple(found), how


WORD_CACHE_LIMIT = 50_000


def _word_matches(texts: Iterable[str], pattern: re.Pattern | None, ids_by_word: dict[str, tuple[str, ...]],
                  cache: dict, *, knowledge: Knowledge | None = None) -> Iterator[tuple[str, str]]:
    """(contributor id, word) for every knowledge word found, as a whole word, in `texts`.

    With `knowledge`, a word counts only where its context affirms it (`plugin.context`): not negated,
    uncertain, hypothetical or about the family, and not historical for an episodic contributor.
    """
    if pattern is None:
        return
    for text in texts:
        key = (id(pattern), knowledge is not None, text)
        found = cache.get(key)
        if found is None:
            found = tuple(
                (cid, m.group(0).lower()) for m in pattern.finditer(text)
                for cid in ids_by_word.get(normalise_words(m.group(0)), ())
                if knowledge is None or affirmed(text, m.start(), m.end(), knowledge.contributors[cid].episodic))
            if len(cache) >= WORD_CACHE_LIMIT:
                cache.clear()
            cache[key] = found
        yield from found


def affirmed(text: str, start: int, end: int, episodic: bool) -> bool:
    """Whether text[start:end] asserts the patient's own, current condition."""
    found = modifiers(text, start, end)
    return not (found & EXCLUDING or (episodic and HISTORICAL in found))


def _known_name(concepts: list[dict], knowledge: Knowledge) -> str | None:
    """A code-only drug described by the knowledge base's name for its RxNorm code."""
    for concept in concepts:
        for system, code, _ in codings(concept):
            if system == RXNORM and code in knowledge.rxnorm_names:
                return f"{knowledge.rxnorm_names[code]} (RxNorm {code})"
    return None


def _medication_start(resource: dict) -> str | None:
    rtype = resource.get("resourceType")
    if rtype == "MedicationRequest":
        if isinstance(resource.get("authoredOn"), str):
            return resource["authoredOn"]
        request = resource.get("dispenseRequest")
        period = request.get("validityPeriod") if isinstance(request, dict) else None
        return period["start"] if isinstance(period, dict) and isinstance(period.get("start"), str) else None
    if rtype == "MedicationDispense":
        return first_date(resource, ("whenHandedOver", "whenPrepared"))
    # When it was asserted is not when it started; only a last resort.
    return first_date(resource, ("effectiveDateTime", "effectivePeriod", "dateAsserted"))


def _last_activity(resource: dict) -> str | None:
    """The newest date a medication resource shows: written, valid from/until, asserted, effective, handed over."""
    dates = [resource.get(k) for k in ("authoredOn", "dateAsserted", "effectiveDateTime", "whenHandedOver",
                                       "whenPrepared")]
    request = resource.get("dispenseRequest")
    for period in (request.get("validityPeriod") if isinstance(request, dict) else None,
                   resource.get("effectivePeriod")):
        if isinstance(period, dict):
            dates += [period.get("start"), period.get("end")]
    found = [(when, d) for d in dates if isinstance(d, str) and (when := parse_when(d)) is not None]
    return max(found)[1] if found else None


def medication_fact(resource: dict, knowledge: Knowledge, resolver: Resolver, *, ordered: bool = False,
                    warnings: list[str] | None = None, current_only: bool = False) -> MedicationFact | None:
    """The fact of one medication resource, or None when it names no contributor.

    `current_only`: None as well when its status does not count (checked first: most orders in a long
    record are stopped or completed, and matching them would be wasted).
    """
    rtype = resource.get("resourceType")
    status = resource.get("status") if isinstance(resource.get("status"), str) else None
    counts = ordered or (status in COUNTING_STATUS.get(rtype, ()) and resource.get("doNotPerform") is not True)
    if current_only and not counts:
        return None
    concepts, display, problem = _medication_concepts(resource, resolver)
    ref = local_reference(resource) or f"{rtype}/(no id)"
    if problem and warnings is not None:
        warnings.append(f"{ref}: {problem}")
    contributors, how = match_drug(concepts, [display] if display else [], knowledge)
    if not contributors:
        return None
    start = _medication_start(resource)
    description = (next((label for c in concepts if (label := concept_label(c))), None) or display
                   or _known_name(concepts, knowledge) or "medication (no name on record)")
    return MedicationFact(
        reference=ref, contributors=contributors, description=description, matched_by=how, status=status,
        counts=counts, start=start,
        dispensed=start if rtype == "MedicationDispense" else None, ordered=ordered, kind=rtype or "",
        last_activity=_last_activity(resource),
    )


# --- conditions --------------------------------------------------------------------------------

def _status_code(concept: object) -> str | None:
    for coding in array(concept.get("coding")) if isinstance(concept, dict) else ():
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return coding["code"]
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return concept["text"].strip().lower()
    return None


def match_condition(concept: object, knowledge: Knowledge) -> tuple[tuple[str, ...], str]:
    found: list[str] = []
    how = ""
    for system, code, _ in codings(concept):
        ids: tuple[str, ...] = ()
        if system == ICD10CM:
            icd = normalise_icd10(code)
            label = f"ICD-10-CM {code}"
            for n in knowledge.icd_prefix_lengths:
                if len(icd) >= n:
                    ids += knowledge.icd_prefix.get(icd[:n], ())
            for lo, hi, range_ids in knowledge.icd_ranges:
                if lo <= icd[: len(lo)] <= hi:
                    ids += range_ids
            ids += knowledge.icd_exact.get(icd, ())
        elif system == SNOMED:
            ids = knowledge.snomed.get(code, ())
            label = f"SNOMED CT {code}"
        for cid in ids:
            if cid not in found:
                found.append(cid)
                how = how or label
    if knowledge.local_condition:  # a site's own problem-list ids (CRAMP_SITE_KNOWLEDGE)
        for key in local_codings(concept):
            for cid in knowledge.local_condition.get(key, ()):
                if cid not in found:
                    found.append(cid)
                    how = how or f"site code {key[0]}|{key[1]}"
    # A known code wins over text: the words are read only when no coding can be placed at all.
    if not found and not any(placed(system, code, knowledge) for system, code, _ in codings(concept)):
        for cid, word in _word_matches(concept_texts(concept), knowledge.condition_words,
                                        knowledge.condition_word_ids, knowledge.word_cache, knowledge=knowledge):
            if cid not in found:
                found.append(cid)
                how = how or f"text '{word}'"
    return tuple(found), how


_ICD10CM_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}$")


def placed(system: str, code: str, knowledge: Knowledge) -> bool:
    """Whether the engine can place a condition coding: then its code decides, and the text is not read.

    ICD-10-CM is a hierarchy the contributors cover by prefix and range, so any well-formed code is placed
    (R73.03 prediabetes belongs to no contributor: its words "Borderline diabetes" must not make it one).
    SNOMED CT is placed when the knowledge indexes the code; an unindexed concept falls back to its words.
    """
    if system == ICD10CM:
        return bool(_ICD10CM_CODE.match(normalise_icd10(code)))
    if system == SNOMED:
        return code in knowledge.snomed
    return False


def condition_fact(resource: dict, knowledge: Knowledge, *, current_only: bool = False) -> ConditionFact | None:
    """The fact of one Condition, or None when it names no contributor (or, `current_only`, does not count)."""
    clinical = _status_code(resource.get("clinicalStatus"))
    verification = _status_code(resource.get("verificationStatus"))
    if clinical is None:  # no status: it counts unless it has abated
        counts = not any(k.startswith("abatement") for k in resource)
    else:
        counts = clinical in ACTIVE_CLINICAL
    counts = counts and verification not in VOID_VERIFICATION
    if current_only and not counts:
        return None
    contributors, how = match_condition(resource.get("code"), knowledge)
    if not contributors:
        return None
    date = first_date(resource, ("onsetDateTime", "onsetPeriod", "recordedDate"))
    return ConditionFact(
        reference=local_reference(resource) or "Condition/(no id)", contributors=contributors,
        description=concept_label(resource.get("code")) or "condition", matched_by=how, counts=counts, date=date,
        recorded=resource.get("recordedDate") if isinstance(resource.get("recordedDate"), str) else None,
    )


# --- labs --------------------------------------------------------------------------------------

COMPARATORS = {"<": "<", "<=": "<=", ">=": ">=", ">": ">", "≤": "<=", "≥": ">="}
_NUMBER = r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_VALUE_STRING = re.compile(rf"^\s*(<=|>=|<|>|≤|≥)?\s*{_NUMBER}\s*(\S.*)?$")
_RANGE_TEXT = re.compile(rf"^\s*{_NUMBER}\s*(?:-|–|to)\s*{_NUMBER}\s*(\S.*)?$", re.IGNORECASE)
_RANGE_FLOOR = re.compile(rf"^\s*(?:>=|≥|>)\s*{_NUMBER}\s*(\S.*)?$")
_LOW_TEXT = re.compile(
    r"^\s*(l|ll|lu|(critically |critical |very |abnormally )?low|below (low )?normal|below (the )?reference range)"
    r"\s*(\(l+\))?\s*$", re.IGNORECASE)


class LabValue(NamedTuple):
    value: float | None
    unit: str | None
    comparator: str | None = None


def _quantity(q: object) -> LabValue:
    if not isinstance(q, dict):
        return LabValue(None, None)
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return LabValue(None, None)
    unit = q.get("code") if q.get("system") == UCUM and isinstance(q.get("code"), str) else q.get("unit")
    if not isinstance(unit, str):
        unit = q.get("code") if isinstance(q.get("code"), str) else None
    return LabValue(float(value), unit, COMPARATORS.get(q.get("comparator")))


def _value_string(text: object, default_unit: str) -> LabValue:
    """A result sent as text ("<1.0", "3.2 mmol/L"): the number, its unit (the LOINC's own when none is written)
    and its comparator. Text that is not a number ("hemolyzed", "see note") gives no value."""
    m = _VALUE_STRING.match(text) if isinstance(text, str) else None
    if m is None or (m.group(3) and canonical_unit(m.group(3)) is None):
        return LabValue(None, None)
    return LabValue(float(m.group(2)), m.group(3) or default_unit, COMPARATORS.get(m.group(1)))


def _lab_value(holder: dict, default_unit: str) -> LabValue:
    if "valueQuantity" in holder:
        return _quantity(holder.get("valueQuantity"))
    return _value_string(holder.get("valueString"), default_unit)


def _range_low(rng: dict, result_unit: str | None) -> tuple[float | None, str | None, str | None]:
    """(lower limit, its unit, how to show the range) from `low`/`high` quantities or, failing them, `text`."""
    low, low_unit, _ = _quantity(rng.get("low"))
    high, high_unit, _ = _quantity(rng.get("high"))
    if low is not None:
        hi = f"-{_fmt(high)}" if high is not None else " or more"
        unit = low_unit or high_unit or result_unit
        return low, unit, f"{_fmt(low)}{hi} {unit or ''}".strip()
    text = rng.get("text")
    if not isinstance(text, str):
        return None, None, None
    if m := _RANGE_TEXT.match(text):
        lo, hi, unit = m.group(1), m.group(2), m.group(3)
    elif m := _RANGE_FLOOR.match(text):
        lo, hi, unit = m.group(1), None, m.group(2)
    else:
        return None, None, None
    if unit and canonical_unit(unit) is None:
        return None, None, None
    unit = unit or result_unit
    shown = f"{_fmt(float(lo))}-{_fmt(float(hi))}" if hi else f"{_fmt(float(lo))} or more"
    return float(lo), unit, f"{shown} {unit or ''}".strip()


def _low_interpretation(concept: object) -> bool:
    """L, LL or LU from any coding, or a text-only interpretation that says low ("Low", "Critically low")."""
    if any(code in LOW_INTERPRETATIONS for _, code, _ in _any_codings(concept)):
        return True
    texts = concept_texts(concept) if isinstance(concept, dict) else []
    return any(_LOW_TEXT.match(t) for t in texts)


def _any_codings(concept: object) -> Iterator[tuple[object, str, object]]:
    """Codings in any system (interpretation codes arrive under several system URIs)."""
    for coding in array(concept.get("coding")) if isinstance(concept, dict) else ():
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            yield coding.get("system"), coding["code"].strip(), coding.get("display")


def _fmt(value: float) -> str:
    return f"{value:g}"


def _lab_fact(ref: str, loinc: str, holder: dict, date: str | None, status: str | None,
              knowledge: Knowledge) -> LabFact | None:
    lab = knowledge.labs.get(loinc)
    if lab is None:
        if loinc in knowledge.monitoring_labs:
            return LabFact(ref, loinc, None, "total", None, None, "", None, None, False, date, status=status)
        return None
    contributor = knowledge.contributors[lab.contributor]
    element = ELEMENT_OF[lab.contributor]
    target = contributor.lab_unit or lab.unit
    raw, unit, comparator = _lab_value(holder, lab.unit)
    unit = unit or lab.unit
    value = convert(raw, unit, target, element) if raw is not None else None
    shown = f"{comparator or ''}{_fmt(raw)} {unit}" if raw is not None else ""
    range_low = range_shown = None
    for rng in array(holder.get("referenceRange")):
        if not isinstance(rng, dict):
            continue
        low, low_unit, how = _range_low(rng, unit)
        if low is not None:
            range_low, range_shown = convert(low, low_unit or unit, target, element), how
            break
    flagged = any(_low_interpretation(concept) for concept in array(holder.get("interpretation")))
    return LabFact(ref, loinc, lab.contributor, lab.analyte, value, target, shown, range_low, range_shown,
                   flagged, date, comparator=comparator, status=status, reported_unit=unit)


def lab_facts(resource: dict, knowledge: Knowledge) -> list[LabFact]:
    parts = lab_parts(resource, knowledge)
    if parts is None:
        return []
    ref, date, wanted, status = parts
    return [fact for holder, code in wanted if (fact := lab_fact(ref, code, holder, date, knowledge, status))]


def lab_parts(resource: dict, knowledge: Knowledge) -> tuple[str, str | None, list[tuple[dict, str]], str | None] | None:
    """(reference, date, [(part, LOINC)], status) of an Observation the rules read, or None (most are not).

    The cheap half of :func:`lab_facts`: a reader that keeps only the latest results builds facts for those alone.
    """
    status = resource.get("status") if isinstance(resource.get("status"), str) else None
    if status not in USABLE_OBSERVATION:
        return None
    # Which parts (the Observation, its components) carry a LOINC the rules read: usually none (vital signs).
    holders = [resource, *[c for c in array(resource.get("component")) if isinstance(c, dict)]]
    wanted = [(holder, code) for holder in holders
              if (code := _known_loinc(holder.get("code"), knowledge)) is not None]
    if not wanted:
        return None
    ref = local_reference(resource) or "Observation/(no id)"
    date = first_date(resource, ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"))
    return ref, date, wanted, status


def lab_fact(ref: str, loinc: str, part: dict, date: str | None, knowledge: Knowledge,
             status: str | None = None) -> LabFact | None:
    """The fact of one part (the Observation or a component) that carries `loinc`; `status` is the Observation's."""
    return _lab_fact(ref, loinc, part, date, status, knowledge)


def _known_loinc(concept: object, knowledge: Knowledge) -> str | None:
    """The first LOINC of a concept that the rules read (an electrolyte or a monitoring lab).

    Runs for every Observation and component (vital signs mostly), so the code is looked up before the system.
    """
    if not isinstance(concept, dict):
        return None
    labs, monitoring = knowledge.labs, knowledge.monitoring_labs
    for coding in array(concept.get("coding")):
        code = coding.get("code") if isinstance(coding, dict) else None
        if isinstance(code, str) and ((code := code.strip()) in labs or code in monitoring) \
                and canonical_system(coding.get("system")) == LOINC:
            return code
    return None
