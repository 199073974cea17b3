"""The generated terminology pack and a site's code maps, read into plain indexes once at start.

The pack (`terminology.json`, built by `tools/build_terminology.py`) holds product-level RxNorm, NDC,
SNOMED CT and ICD-10-CM codes per contributor, each with its sources. A site code map
(`CRAMP_SITE_KNOWLEDGE`) is a FHIR ValueSet (compose or expansion) or ConceptMap naming a contributor id;
it extends a contributor with the site's own codes (Epic ERX, Multum, First Databank …) without forking
the knowledge. Either file, malformed, is a start-up error naming the file and the entry.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from plugin.codes import (
    ATC,
    ICD10CM,
    LOINC,
    NDC,
    RXNORM,
    SNOMED,
    canonical_system,
    normalise_icd10,
    normalise_ndc,
)
from plugin.knowledge.errors import KnowledgeError

PACK_PATH = Path(__file__).with_name("terminology.json")
PACK_SYSTEMS = {"rxnorm": RXNORM, "ndc": NDC, "snomed": SNOMED, "icd10cm": ICD10CM}
CONTRIBUTOR_EXTENSION = "https://cramp-cds.org/fhir/StructureDefinition/contributor"
CONTRIBUTOR_SYSTEM = "https://cramp-cds.org/fhir/CodeSystem/contributor"
DRUG_CATEGORIES = ("harm", "medication")
_DRUG_SYSTEMS = (RXNORM, NDC)
_CONDITION_SYSTEMS = (SNOMED, ICD10CM)
_UNMAPPED = {"unmatched", "disjoint", "not-related-to"}


@dataclass
class Indexes:
    """Codes to contributor ids, to be merged into the knowledge's match indexes."""
    rxnorm: dict[str, list[str]] = field(default_factory=dict)
    ndc: dict[str, list[str]] = field(default_factory=dict)
    snomed: dict[str, list[str]] = field(default_factory=dict)
    icd_exact: dict[str, list[str]] = field(default_factory=dict)
    local_drug: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    local_condition: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)       # brand -> ids (drug name fallback)
    rxnorm_names: dict[str, str] = field(default_factory=dict)

    def add(self, index: str, key, cid: str) -> None:
        ids = getattr(self, index).setdefault(key, [])
        if cid not in ids:
            ids.append(cid)


@dataclass(frozen=True)
class SiteCode:
    """One code a site file maps, and where it says so (for `cramp-cds knowledge show/lookup`)."""
    system: str
    code: str
    contributor: str
    display: str | None
    file: str
    where: str


def _resolve(cid: str, known: dict[str, str], fallback: dict[str, str]) -> str | None:
    if cid in known:
        return cid
    alias = fallback.get(cid)
    return alias if alias in known else None


def _resolve_all(ids: list[str], known: dict[str, str], fallback: dict[str, str], where: str) -> tuple[str, ...]:
    out = []
    for cid in ids:
        resolved = _resolve(cid, known, fallback)
        if resolved is None:
            raise KnowledgeError(f"{where}: unknown contributor {cid!r}")
        if resolved not in out:
            out.append(resolved)
    return tuple(out)


def index_path(pack: Path) -> Path:
    """The pack's runtime index beside it: terminology.json -> terminology.index.json."""
    return pack.with_suffix(".index.json")


def read_json(path: Path) -> object:
    """A knowledge JSON file, or a KnowledgeError naming the file and what is wrong."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KnowledgeError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise KnowledgeError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None


def read_pack(pack: Path, known: dict[str, str]) -> Indexes:
    """The pack's indexes, from its runtime index (codes grouped by their contributor ids, so that start-up
    reads a few lists instead of every code's provenance). `known`: contributor id -> category."""
    path = index_path(pack)
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("schema") != 1 or not isinstance(raw.get("index"), dict):
        raise KnowledgeError(f"{path}: top level: expected an object with \"schema\": 1 and \"index\"")
    fallback = raw.get("fallback_ids") or {}
    out = Indexes()
    targets = {"rxnorm": out.rxnorm, "ndc": out.ndc, "snomed": out.snomed, "icd10cm": out.icd_exact}
    for system, groups in raw["index"].items():
        target = targets.get(system)
        if target is None or not isinstance(groups, dict):
            raise KnowledgeError(f"{path}: index.{system}: unknown code system or not an object")
        for joined, codes in groups.items():
            ids = _resolve_all(joined.split(","), known, fallback, f"{path}: index.{system}[{joined!r}]")
            if {known[c] in DRUG_CATEGORIES for c in ids} != {system in ("rxnorm", "ndc")}:
                raise KnowledgeError(f"{path}: index.{system}[{joined!r}]: {system} codes cannot name {joined}")
            for code in codes:
                target[code] = list(ids)
    for joined, brands in (raw.get("brands") or {}).items():
        ids = _resolve_all(joined.split(","), known, fallback, f"{path}: brands[{joined!r}]")
        for brand in brands:
            out.names[brand] = list(ids)
    out.rxnorm_names = dict(raw.get("rxnorm_names") or {})
    return out


@lru_cache(maxsize=4)
def pack_provenance(pack: str | None) -> dict:
    """The whole pack with every code's names, term types and sources: read only when someone asks
    (`cramp-cds knowledge`, tests), never at start-up."""
    if not pack:
        return {}
    raw = read_json(Path(pack))
    if not isinstance(raw, dict) or raw.get("schema") != 1 or not isinstance(raw.get("codes"), dict):
        raise KnowledgeError(f"{pack}: top level: expected an object with \"schema\": 1 and \"codes\"")
    return raw


# --- site code maps ----------------------------------------------------------------------------

def read_site_files(paths: list[Path], known: dict[str, str]) -> tuple[list[SiteCode], Indexes]:
    """Every site file's codes, validated, and their indexes."""
    codes: list[SiteCode] = []
    for path in paths:
        codes += _site_codes(path, known)
    out = Indexes()
    for sc in codes:
        drug = known[sc.contributor] in DRUG_CATEGORIES
        system = canonical_system(sc.system)
        if system == RXNORM:
            out.add("rxnorm", sc.code, sc.contributor)
            if sc.display:
                out.rxnorm_names.setdefault(sc.code, sc.display)
        elif system == NDC:
            out.add("ndc", normalise_ndc(sc.code), sc.contributor)
        elif system == SNOMED:
            out.add("snomed", sc.code, sc.contributor)
        elif system == ICD10CM:
            out.add("icd_exact", normalise_icd10(sc.code), sc.contributor)
        else:
            out.add("local_drug" if drug else "local_condition", (sc.system, sc.code), sc.contributor)
    return codes, out


def _site_codes(path: Path, known: dict[str, str]) -> list[SiteCode]:
    raw = read_json(path)
    resources = [raw]
    if isinstance(raw, dict) and raw.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in raw.get("entry") or [] if isinstance(e, dict)]
    found: list[SiteCode] = []
    for n, resource in enumerate(resources):
        label = "top level" if resources == [raw] else f"entry[{n}]"
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if kind == "ValueSet":
            found += _value_set(path, label, resource, known)
        elif kind == "ConceptMap":
            found += _concept_map(path, label, resource, known)
        else:
            raise KnowledgeError(f"{path}: {label}: expected a ValueSet or ConceptMap (or a Bundle of them), "
                                 f"got {kind or type(resource).__name__}")
    if not found:
        raise KnowledgeError(f"{path}: maps no codes")
    return found


def _fail(path: Path, where: str, problem: str) -> KnowledgeError:
    return KnowledgeError(f"{path}: {where}: {problem}")


def _check(path: Path, where: str, system: object, code: object, cid: str, known: dict[str, str]) -> str:
    if not isinstance(system, str) or not system.strip():
        raise _fail(path, where, "needs a \"system\"")
    if not isinstance(code, str) or not code.strip():
        raise _fail(path, where, "needs a \"code\" string")
    canonical = canonical_system(system)
    if canonical in (ATC, LOINC) or (canonical and canonical not in _DRUG_SYSTEMS + _CONDITION_SYSTEMS):
        raise _fail(path, where, f"system {system} cannot extend a contributor: use RxNorm, NDC, SNOMED CT, "
                                 "ICD-10-CM or a local code system")
    drug = known[cid] in DRUG_CATEGORIES
    if canonical in _DRUG_SYSTEMS and not drug:
        raise _fail(path, where, f"a {system} code cannot name {cid!r}, which is not a medication")
    if canonical in _CONDITION_SYSTEMS and drug:
        raise _fail(path, where, f"a {system} code cannot name {cid!r}, which is a medication")
    if canonical == RXNORM and not code.strip().isdigit():
        raise _fail(path, where, f"RxNorm code {code!r} is not numeric")
    if canonical == SNOMED and not code.strip().isdigit():
        raise _fail(path, where, f"SNOMED CT code {code!r} is not numeric")
    return system.strip()


def _contributor_of(path: Path, where: str, resource: dict, known: dict[str, str]) -> str:
    named = [e.get("valueCode") or e.get("valueString") for e in resource.get("extension") or []
             if isinstance(e, dict) and e.get("url") == CONTRIBUTOR_EXTENSION]
    cid = named[0] if named else resource.get("id")
    if not isinstance(cid, str) or cid not in known:
        raise _fail(path, where, f"names no known contributor ({cid!r}): give the contributor id as the "
                                 f"ValueSet's id or in the extension {CONTRIBUTOR_EXTENSION}")
    return cid


def _value_set(path: Path, label: str, vs: dict, known: dict[str, str]) -> list[SiteCode]:
    where = f"{label} ValueSet {vs.get('id') or vs.get('url') or ''}".strip()
    cid = _contributor_of(path, where, vs, known)
    found: list[SiteCode] = []
    compose = vs.get("compose") if isinstance(vs.get("compose"), dict) else {}
    if compose.get("exclude"):
        raise _fail(path, f"{where} compose.exclude", "exclusions are not supported; list the codes to include")
    for i, include in enumerate(compose.get("include") or []):
        at = f"{where} compose.include[{i}]"
        if not isinstance(include, dict):
            raise _fail(path, at, "expected an object")
        if include.get("filter") or include.get("valueSet"):
            raise _fail(path, at, "filters and value-set references cannot be expanded here; list the "
                                  "concepts, or give an expansion")
        concepts = include.get("concept")
        if not isinstance(concepts, list) or not concepts:
            raise _fail(path, at, "needs a non-empty \"concept\" list")
        for j, concept in enumerate(concepts):
            spot = f"{at}.concept[{j}]"
            code = concept.get("code") if isinstance(concept, dict) else None
            system = _check(path, spot, include.get("system"), code, cid, known)
            found.append(SiteCode(system, code.strip(), cid, concept.get("display"), str(path), spot))
    expansion = vs.get("expansion") if isinstance(vs.get("expansion"), dict) else {}

    def walk(items: object, at: str) -> None:
        for j, item in enumerate(items if isinstance(items, list) else []):
            spot = f"{at}[{j}]"
            if not isinstance(item, dict):
                raise _fail(path, spot, "expected an object")
            if not (item.get("abstract") and item.get("code") is None):  # a grouping node has no code
                system = _check(path, spot, item.get("system"), item.get("code"), cid, known)
                found.append(SiteCode(system, item["code"].strip(), cid, item.get("display"), str(path), spot))
            walk(item.get("contains"), f"{spot}.contains")

    walk(expansion.get("contains"), f"{where} expansion.contains")
    if not found:
        raise _fail(path, where, "has no codes in compose.include[].concept or expansion.contains")
    return found


def _concept_map(path: Path, label: str, cm: dict, known: dict[str, str]) -> list[SiteCode]:
    where = f"{label} ConceptMap {cm.get('id') or cm.get('url') or ''}".strip()
    found: list[SiteCode] = []
    for i, group in enumerate(cm.get("group") or []):
        at = f"{where} group[{i}]"
        if not isinstance(group, dict) or group.get("target") != CONTRIBUTOR_SYSTEM:
            raise _fail(path, at, f"needs \"target\": \"{CONTRIBUTOR_SYSTEM}\" (targets are contributor ids)")
        for j, element in enumerate(group.get("element") or []):
            spot = f"{at}.element[{j}]"
            code = element.get("code") if isinstance(element, dict) else None
            targets = [t for t in element.get("target") or [] if isinstance(t, dict)] if code else []
            if not targets:
                raise _fail(path, spot, "needs a \"code\" and at least one \"target\"")
            for t in targets:
                if (t.get("equivalence") or t.get("relationship")) in _UNMAPPED:
                    continue
                cid = t.get("code")
                if cid not in known:
                    raise _fail(path, f"{spot}.target", f"unknown contributor {cid!r}")
                system = _check(path, spot, group.get("source"), code, cid, known)
                found.append(SiteCode(system, code.strip(), cid, element.get("display"), str(path), spot))
    if not found:
        raise _fail(path, where, "maps no codes (group[].element[].target[].code = a contributor id)")
    return found
