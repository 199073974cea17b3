"""Findings -> at most one CDS Hooks 2.0 card (design.md card policy; clinical-reference.md §3).

The card says why it fired (resource, value, date) and how strong the evidence is. It never
diagnoses, doses, or tells anyone to stop a drug.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from uuid import uuid4

from plugin.codes import LOINC
from plugin.knowledge import DIURETICS, Knowledge, default_knowledge
from plugin.rules import Finding, Review

OVERRIDE_SYSTEM = "https://cramp-cds.org/fhir/CodeSystem/override-reason"
OVERRIDE_REASONS = (
    ("already-addressed", "Already known or addressed"),
    ("not-relevant", "Not relevant for this patient"),
    ("benefit-outweighs-risk", "Benefit outweighs risk; will monitor"),
    ("patient-declined", "Patient declined"),
)
TOPIC_SYSTEM = "https://cramp-cds.org/fhir/CodeSystem/card-topic"
SUMMARY_LIMIT = 140  # checklist C1: under 140 characters
ORDER_HOOKS = ("order-select", "order-sign")
TRIGGER_POLICIES = ("documented", "any")
# Labs offered when a diuretic is current and none was measured recently (clinical-reference §2.5, §3).
MONITORING_ORDERS = (
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma"),
    ("19123-9", "Magnesium [Mass/volume] in Serum or Plasma"),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma"),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
)
_EVIDENCE_KEY = re.compile(r"\bE[1-9][0-9]?\b(?![.0-9])")  # E1..E99; not ICD-10-CM codes such as E03.9
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")
_FHIR_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")  # Type/id; ids come from the record


@dataclass(frozen=True)
class Card:
    key: str                          # what suppression is keyed on: "quinine", or "contributors:<sorted ids>"
    body: dict                        # the CDS Hooks card JSON
    contributors: tuple[str, ...]     # the contributor ids the card lists, in order


def md(text: str) -> str:
    """Escape record-derived text for GitHub-Flavored Markdown (no markup or HTML from the record)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _name(label: str) -> str:
    """A contributor's label inside a sentence: "Loop diuretic" -> "loop diuretic"; acronyms keep their case."""
    return label if label[1:2].isupper() else label[:1].lower() + label[1:]


def _words_within(text: str, limit: int) -> str:
    """`text` shortened at a word boundary to fewer than `limit` characters (never cut inside a word)."""
    if len(text) < limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return cut + "…"


def compose_summary(head: str, names: list[str], tail: str = "") -> str:
    """head + as many names as fit + "+N more" + tail, under the 140-character limit (checklist C1)."""
    names = list(dict.fromkeys(names))
    for shown in range(len(names), 0, -1):
        more = f" +{len(names) - shown} more" if shown < len(names) else ""
        text = f"{head}{', '.join(names[:shown])}{more}{tail}"
        if len(text) < SUMMARY_LIMIT:
            return text
    return _words_within(f"{head}{len(names)} listed below{tail}", SUMMARY_LIMIT)  # no name fits whole


def _line(f: Finding, knowledge: Knowledge) -> str:
    """One contributor, named (never by FHIR id: those stay in the card's extension), with why and how strong."""
    c = knowledge.contributors[f.contributor]
    marks = (" (ordered now)" if f.ordered else "") + (" (possibly stale)" if f.possibly_stale else "")
    sources = ", ".join(f.sources)
    return f"- **{md(c.label)}**{marks}: {md(f.reason)}. *Evidence: {f.grade} ({sources}).* {c.statement}"


def _links(keys: list[str], knowledge: Knowledge) -> list[dict]:
    """A link for every evidence key the card cites (a key without a URL in the knowledge is a test failure)."""
    links = []
    for key in dict.fromkeys(keys):
        src = knowledge.sources.get(key) or {}
        if src.get("url"):
            label = src.get("label") or src["citation"].split(". ")[0]
            links.append({"label": f"{key}: {label}"[:120], "url": src["url"], "type": "absolute"})
    return links


@cache
def _monitoring_requests() -> tuple[tuple[str, dict], ...]:
    """The proposed lab orders, built and validated with fhir.resources once per process (subject added per card)."""
    from fhir.resources.R4B.servicerequest import ServiceRequest  # on first use: importing the models is slow

    built = []
    for code, name in MONITORING_ORDERS:
        request = ServiceRequest.model_validate({
            "resourceType": "ServiceRequest", "status": "draft", "intent": "proposal",
            "code": {"coding": [{"system": LOINC, "code": code, "display": name}], "text": name},
            "subject": {"reference": "Patient/unknown"},
            "reasonCode": [{"text": "Diuretic current with no recent electrolyte or renal result (leg-cramp review)"}],
        })
        built.append((name, request.model_dump(mode="json", exclude_none=True)))
    return tuple(built)


def _lab_suggestion(patient: str | None, new_uuid: Callable[[], str]) -> dict:
    actions = [{"type": "create", "description": f"Propose a {name.split(' [')[0].lower()} test",
                "resource": {**resource, "subject": {"reference": patient or "Patient/unknown"}}}
               for name, resource in _monitoring_requests()]
    return {"label": "Propose potassium, magnesium, calcium and creatinine tests", "uuid": new_uuid(),
            "actions": actions}


def _quinine_removals(finding: Finding, new_uuid: Callable[[], str]) -> list[dict]:
    """A delete per quinine draft with a valid FHIR id (the id goes in `resourceId`, never in the words)."""
    drafts = [r for r in finding.references if _FHIR_REFERENCE.fullmatch(r)]
    name = f" ({finding.reason})" if len(drafts) == 1 else ""
    return [{"label": "Remove the quinine draft order", "uuid": new_uuid(), "actions": [{
        "type": "delete", "resourceId": ref,
        "description": f"Remove the quinine draft order{name}" + (f" {n} of {len(drafts)}" if not name else "")}]}
        for n, ref in enumerate(drafts, 1)]


def build_card(review: Review, *, hook: str | None, trigger: str = "documented", knowledge: Knowledge | None = None,
               new_uuid: Callable[[], str] = lambda: str(uuid4()), suggest_labs: bool = True) -> Card | None:
    """The one card for this review and hook, or None when policy says stay quiet."""
    if trigger not in TRIGGER_POLICIES:
        raise ValueError(f"trigger policy must be one of {TRIGGER_POLICIES}")
    knowledge = knowledge or default_knowledge()
    if review.deceased:
        return None
    findings = review.findings
    contributors = review.contributors
    ordering = hook in ORDER_HOOKS
    speak_about = [f for f in contributors if f.ordered] if ordering else contributors
    quinine = [f for f in speak_about if f.contributor == "quinine"]
    others = [f for f in contributors if f.contributor != "quinine"]
    cramps = review.documented_cramps
    if not quinine and not (speak_about and (cramps or trigger == "any")):
        return None

    suggestions = []
    if quinine:
        key, indicator = "quinine", "warning"
        subject = "Quinine ordered" if ordering else "Active quinine"
        summary = f"{subject}: not FDA-approved for leg cramps; serious haematological reactions are reported"
        lead = ("**Quinine** is on this order." if ordering else "**Quinine** is active on the record.")
        listed = quinine + [f for f in others if not (ordering and f.ordered and f.contributor == "quinine")]
        if ordering:
            # only a draft with a valid FHIR id can be named for deletion (not "MedicationRequest/(no id)")
            suggestions += [s for f in quinine for s in _quinine_removals(f, new_uuid)]
        topic = ("quinine-warning", "Quinine for leg cramps")
    else:
        key, indicator = "contributors", "info"
        ordered = [f for f in speak_about if f.ordered]
        prefix = "Leg cramps documented" if cramps else "Leg-cramp review"
        if ordering:
            grade = ordered[0].grade if len(ordered) == 1 else "varied"
            summary = compose_summary(f"{prefix}; ordered ", [_name(f.label) for f in ordered],
                                      f" may contribute ({grade} evidence)")
            lead = "A drug class on this order is associated with leg cramps."
        else:
            plural = "s" if len(contributors) > 1 else ""
            summary = compose_summary(f"{prefix}; possible contributor{plural}: ", [_name(f.label) for f in contributors])
            lead = "Possible contributors to leg cramps on the record."
        listed = sorted(dict.fromkeys(ordered + others), key=lambda f: not f.ordered) if ordering else others
        topic = ("leg-cramp-contributors", "Possible contributors to leg cramps")

    if cramps:
        cramp = next(f for f in findings if f.contributor == "leg-cramps-documented")
        lead += f" Leg cramps documented: {md(cramp.reason)}."
    lines = [lead, "", *(_line(f, knowledge) for f in listed)]
    if quinine:
        lines += ["", ("Review alternatives with the patient. Red flags on quinine (bleeding, bruising, signs of "
                      "thrombocytopenia or haemolysis) need prompt assessment (E4).")]
    on_diuretic = any(f.contributor in DIURETICS for f in listed)
    if review.monitoring_gap and on_diuretic:
        lines += ["", ("No potassium, magnesium, calcium or creatinine result on record recently while a diuretic "
                      "is current: consider electrolytes and renal function if clinically indicated. Routine "
                      "labs are usually unnecessary for typical nocturnal leg cramps (E1).")]
        if suggest_labs:
            suggestions.append(_lab_suggestion(review.patient, new_uuid))
    footer = "Advisory only."
    if any(f.category in ("medication", "harm") for f in listed):  # only a listed drug has a timing to judge
        footer += " The clinician judges whether the timing of the drugs listed fits."
    lines += ["", footer + (" Distinguish cramps from claudication, restless legs, myositis and neuropathy (E1). "
                            "Nightly calf and "
                            "hamstring stretching is a low-risk option (one RCT, E21; AAN: insufficient evidence, E3).")]

    detail = "\n".join(lines)
    cited = [k for f in listed for k in f.sources] + _EVIDENCE_KEY.findall(detail)
    contributor_ids = tuple(dict.fromkeys(f.contributor for f in listed))  # ordered and on record: listed once
    body: dict = {
        "uuid": new_uuid(),
        "summary": _words_within(summary, SUMMARY_LIMIT),
        "indicator": indicator,
        "detail": detail,
        "source": {
            "label": "Leg-cramp medication review (cramp-cds)",
            "url": knowledge.source_url("E1") or "https://pubmed.ncbi.nlm.nih.gov/22963024/",
            "topic": {"system": TOPIC_SYSTEM, "code": topic[0], "display": topic[1]},
        },
        "overrideReasons": [{"system": OVERRIDE_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS],
        "extension": {"org.cramp-cds.review": {
            "contributors": list(contributor_ids), "knowledgeVersion": knowledge.version,
            # the FHIR references behind each contributor: for integrations, never in the card's sentences
            "references": {cid: list(dict.fromkeys(r for f in listed if f.contributor == cid for r in f.references))
                           for cid in contributor_ids}}},
    }
    links = _links(cited, knowledge)
    if links:
        body["links"] = links
    if suggestions:
        body["suggestions"] = suggestions
        body["selectionBehavior"] = "any"
    if key == "contributors":  # a new contributor is news: only the same set is "the same card"
        key += ":" + ",".join(sorted(contributor_ids))
    return Card(key=key, body=body, contributors=contributor_ids)
