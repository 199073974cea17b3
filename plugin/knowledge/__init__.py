"""The knowledge base: contributors, their codes, evidence and card texts, loaded and validated once.

A malformed or inconsistent knowledge file is a start-up error naming the file and the entry.
Match indexes are precomputed here so that matching a coding is a dictionary look-up.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from plugin.codes import ndc_product, normalise_atc, normalise_icd10
from plugin.knowledge.errors import KnowledgeError
from plugin.knowledge.terminology import (
    PACK_PATH,
    Indexes,
    SiteCode,
    pack_provenance,
    read_json,
    read_pack,
    read_site_files,
)

DEFAULT_PATH = Path(__file__).with_name("contributors.json")
SITE_KNOWLEDGE_VARIABLE = "CRAMP_SITE_KNOWLEDGE"

CATEGORIES = ("harm", "trigger", "electrolyte", "medication", "condition")
GRADES = ("strong", "moderate", "weak-moderate", "weak", "not-established")
REQUIRED_IDS = frozenset({
    "loop-diuretic", "thiazide-diuretic", "potassium-sparing-diuretic", "statin", "laba", "iron-sucrose",
    "conjugated-estrogens", "raloxifene", "teriparatide", "naproxen", "quinine",
    "diabetes", "peripheral-artery-disease", "neuropathy", "alcohol-use-disorder", "chronic-kidney-disease",
    "esrd-dialysis",
    "cirrhosis", "hypothyroidism", "pregnancy", "lumbar-spinal-stenosis", "venous-insufficiency",
    "volume-depletion", "low-potassium", "low-magnesium", "low-calcium", "leg-cramps-documented",
})
DIURETICS = ("loop-diuretic", "thiazide-diuretic", "potassium-sparing-diuretic")
ELEMENT_OF = {"low-potassium": "potassium", "low-magnesium": "magnesium", "low-calcium": "calcium"}
_ICD_PATTERN = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{0,4})?$")


@dataclass(frozen=True)
class LabCode:
    loinc: str
    name: str
    unit: str
    analyte: str  # "total" or "ionized" (calcium); "total" otherwise
    contributor: str


@dataclass(frozen=True)
class Contributor:
    id: str
    category: str
    label: str
    grade: str
    evidence: tuple[str, ...]
    statement: str
    recent_start_months: int | None = None
    lab_unit: str | None = None
    lab_low: dict[str, float] = field(default_factory=dict)  # analyte -> default lower limit
    subsumes: tuple[str, ...] = ()  # less specific contributors this one replaces (ESRD over CKD)
    episodic: bool = False  # it passes ("history of pregnancy" is over); chronic ones persist ("history of cirrhosis")


@dataclass(frozen=True)
class Knowledge:
    version: str
    path: str
    sources: dict[str, dict]
    contributors: dict[str, Contributor]  # in file order: most important first within a category
    rxnorm: dict[str, tuple[str, ...]]
    rxnorm_names: dict[str, str]     # code -> name, to describe a drug whose record carries no display
    atc: dict[str, tuple[str, ...]]  # code or class prefix
    atc_lengths: tuple[int, ...]
    icd_prefix: dict[str, tuple[str, ...]]
    icd_prefix_lengths: tuple[int, ...]
    icd_ranges: tuple[tuple[str, str, tuple[str, ...]], ...]
    snomed: dict[str, tuple[str, ...]]
    drug_names: re.Pattern | None
    drug_name_ids: dict[str, tuple[str, ...]]
    condition_words: re.Pattern | None
    condition_word_ids: dict[str, tuple[str, ...]]
    labs: dict[str, LabCode]
    monitoring_labs: dict[str, str]
    # From the terminology pack and site code maps (plugin/knowledge/terminology.py).
    ndc: dict[str, tuple[str, ...]] = field(default_factory=dict)
    icd_exact: dict[str, tuple[str, ...]] = field(default_factory=dict)
    local_drug: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    local_condition: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    pack_path: str | None = None
    site_codes: tuple[SiteCode, ...] = ()
    # Drug and condition texts repeat endlessly across records: remember what the word patterns found.
    word_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def pack(self) -> dict:
        """The terminology pack with every code's provenance (read on first use, not at start-up)."""
        return pack_provenance(self.pack_path)

    @property
    def lab_loincs(self) -> tuple[str, ...]:
        """Every LOINC the rules read: electrolytes and monitoring labs (prefetch templates use this)."""
        return tuple(dict.fromkeys([*self.labs, *self.monitoring_labs]))

    def order(self, contributor_id: str) -> tuple[int, int]:
        c = self.contributors[contributor_id]
        return CATEGORIES.index(c.category), list(self.contributors).index(contributor_id)

    def source_url(self, key: str) -> str | None:
        return (self.sources.get(key) or {}).get("url")


def _fail(path: Path, where: str, problem: str) -> KnowledgeError:
    return KnowledgeError(f"{path}: {where}: {problem}")


def _add(index: dict[str, list[str]], key: str, cid: str) -> None:
    ids = index.setdefault(key, [])
    if cid not in ids:
        ids.append(cid)


_SEPARATORS = re.compile(r"[\s,/-]+")


def normalise_words(text: str) -> str:
    """Lower case with separators folded: "Estrogens, Conjugated" -> "estrogens conjugated"."""
    return _SEPARATORS.sub(" ", text.lower()).strip()


def _word_pattern(words: dict[str, list[str]]) -> re.Pattern | None:
    if not words:
        return None
    # Longest first so "ethacrynic acid" wins over a shorter overlapping name.
    alternatives = sorted(words, key=len, reverse=True)
    body = "|".join(r"[\s,/-]+".join(map(re.escape, w.split(" "))) for w in alternatives)
    return re.compile(rf"(?<![a-z0-9])(?:{body})(?![a-z0-9])", re.IGNORECASE)


def load_knowledge(path: str | Path | None = None, *, pack: str | Path | None = PACK_PATH,
                   site: tuple[str | Path, ...] | list[str | Path] = ()) -> Knowledge:
    """Load and validate a knowledge file (the built-in one by default), the terminology pack (`pack=None`:
    none) and any site code maps (FHIR ValueSet/ConceptMap files naming contributor ids)."""
    path = Path(path) if path else DEFAULT_PATH
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("schema") != 1:
        raise _fail(path, "top level", "expected an object with \"schema\": 1")
    sources = raw.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise _fail(path, "sources", "expected a non-empty object of source keys")
    for key, src in sources.items():
        if not isinstance(src, dict) or not isinstance(src.get("citation"), str):
            raise _fail(path, f"source {key!r}", "needs a \"citation\" string")
        if "url" in src and not str(src["url"]).startswith("https://"):
            raise _fail(path, f"source {key!r}", "url must be an absolute https URL")

    contributors: dict[str, Contributor] = {}
    rxnorm: dict[str, list[str]] = {}
    atc: dict[str, list[str]] = {}
    icd_prefix: dict[str, list[str]] = {}
    icd_ranges: list[tuple[str, str, tuple[str, ...]]] = []
    snomed: dict[str, list[str]] = {}
    drug_words: dict[str, list[str]] = {}
    condition_words: dict[str, list[str]] = {}
    labs: dict[str, LabCode] = {}

    entries = raw.get("contributors")
    if not isinstance(entries, list) or not entries:
        raise _fail(path, "contributors", "expected a non-empty list")
    for n, entry in enumerate(entries):
        where = f"contributors[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise _fail(path, where, "needs an \"id\" string")
        cid = entry["id"]
        where = f"contributor {cid!r}"
        if cid in contributors:
            raise _fail(path, where, "duplicate id")
        for key in ("category", "label", "grade", "statement"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise _fail(path, where, f"needs a non-empty \"{key}\" string")
        if entry["category"] not in CATEGORIES:
            raise _fail(path, where, f"category must be one of {', '.join(CATEGORIES)}")
        if entry["grade"] not in GRADES:
            raise _fail(path, where, f"grade must be one of {', '.join(GRADES)}")
        evidence = entry.get("evidence")
        if not isinstance(evidence, list) or not evidence:
            raise _fail(path, where, "needs a non-empty \"evidence\" list")
        for key in [*evidence, *entry.get("code_sources", [])]:
            if key not in sources:
                raise _fail(path, where, f"cites unknown source {key!r}")
        if not isinstance(entry.get("episodic", False), bool):
            raise _fail(path, where, "episodic must be true or false")
        recent = entry.get("recent_start_months")
        if recent is not None and (not isinstance(recent, int) or recent <= 0):
            raise _fail(path, where, "recent_start_months must be a positive integer")

        match = entry.get("match") or {}
        if not isinstance(match, dict) or not match:
            raise _fail(path, where, "needs a non-empty \"match\" object")
        unknown = set(match) - {"rxnorm", "atc", "names", "icd10cm", "snomed", "text"}
        if unknown:
            raise _fail(path, where, f"unknown match keys {sorted(unknown)}")
        for code in match.get("rxnorm", {}):
            if not str(code).isdigit():
                raise _fail(path, where, f"RxNorm code {code!r} is not numeric")
            _add(rxnorm, str(code), cid)
        for code in match.get("atc", []):
            code = normalise_atc(str(code))
            if not re.fullmatch(r"[A-Z][0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?", code):
                raise _fail(path, where, f"ATC code {code!r} is malformed")
            _add(atc, code, cid)
        for pattern in match.get("icd10cm", []):
            parts = str(pattern).upper().split("-")
            if len(parts) > 2 or not all(_ICD_PATTERN.match(p) for p in parts):
                raise _fail(path, where, f"ICD-10-CM pattern {pattern!r} is malformed")
            if len(parts) == 2:
                lo, hi = (normalise_icd10(p) for p in parts)
                if len(lo) != len(hi) or lo > hi:
                    raise _fail(path, where, f"ICD-10-CM range {pattern!r} needs ends of equal length, low first")
                icd_ranges.append((lo, hi, (cid,)))
            else:
                _add(icd_prefix, normalise_icd10(parts[0]), cid)
        for code in match.get("snomed", {}):
            if not str(code).isdigit():
                raise _fail(path, where, f"SNOMED CT code {code!r} is not numeric")
            _add(snomed, str(code), cid)
        for word in match.get("names", []):
            _add(drug_words, normalise_words(str(word)), cid)
        for word in match.get("text", []):
            _add(condition_words, normalise_words(str(word)), cid)

        lab = entry.get("lab")
        lab_low: dict[str, float] = {}
        lab_unit = None
        if entry["category"] == "electrolyte":
            if not isinstance(lab, dict) or not isinstance(lab.get("loinc"), dict) or not lab["loinc"]:
                raise _fail(path, where, "an electrolyte needs a \"lab\" object with \"loinc\" codes")
            lab_unit = lab.get("unit")
            low = lab.get("low_by_analyte") or {"total": lab.get("low")}
            for analyte, value in low.items():
                if not isinstance(value, (int, float)) or value <= 0:
                    raise _fail(path, where, f"lab low limit for {analyte!r} must be a positive number")
                lab_low[analyte] = float(value)
            for loinc, info in lab["loinc"].items():
                if not re.fullmatch(r"[0-9]{1,7}-[0-9]", loinc) or not isinstance(info, dict):
                    raise _fail(path, where, f"LOINC entry {loinc!r} is malformed")
                analyte = info.get("analyte", "total")
                if analyte not in lab_low:
                    raise _fail(path, where, f"LOINC {loinc} names analyte {analyte!r} without a low limit")
                if loinc in labs:
                    raise _fail(path, where, f"LOINC {loinc} already belongs to {labs[loinc].contributor}")
                labs[loinc] = LabCode(loinc, str(info.get("name", loinc)), str(info.get("unit", lab_unit)),
                                      analyte, cid)
        elif lab is not None:
            raise _fail(path, where, "only electrolyte contributors may have a \"lab\"")

        contributors[cid] = Contributor(
            id=cid, category=entry["category"], label=entry["label"].strip(), grade=entry["grade"],
            evidence=tuple(evidence), statement=entry["statement"].strip(), recent_start_months=recent,
            lab_unit=lab_unit, lab_low=lab_low, episodic=entry.get("episodic", False),
            subsumes=tuple(entry.get("subsumes", ())),
        )

    for c in contributors.values():
        if unknown := set(c.subsumes) - set(contributors):
            raise _fail(path, f"contributor {c.id!r}", f"subsumes unknown ids {sorted(unknown)}")
    missing = REQUIRED_IDS - set(contributors)
    if missing:
        raise _fail(path, "contributors", f"missing required ids {sorted(missing)}")
    monitoring = raw.get("monitoring_labs") or {}
    if not isinstance(monitoring, dict):
        raise _fail(path, "monitoring_labs", "expected an object of LOINC -> name")

    known = {cid: c.category for cid, c in contributors.items()}
    extra = read_pack(Path(pack), known) if pack else Indexes()
    site_codes, site_extra = read_site_files([Path(p) for p in site], known)
    rxnorm_names = _first_names(entries)
    ndc: dict[str, list[str]] = {}
    icd_exact: dict[str, list[str]] = {}
    local_drug: dict[tuple[str, str], list[str]] = {}
    local_condition: dict[tuple[str, str], list[str]] = {}
    for more in (extra, site_extra):
        for target, source in ((rxnorm, more.rxnorm), (ndc, more.ndc), (snomed, more.snomed),
                               (icd_exact, more.icd_exact), (local_drug, more.local_drug),
                               (local_condition, more.local_condition)):
            for key, ids in source.items():
                have = target.get(key)
                if have is None:
                    target[key] = ids  # the common case: a code only the pack knows
                else:
                    have.extend(cid for cid in ids if cid not in have)
        for word, ids in more.names.items():
            for cid in ids:
                _add(drug_words, normalise_words(word), cid)
        for code, name in more.rxnorm_names.items():
            rxnorm_names.setdefault(code, name)
    for code, ids in list(ndc.items()):   # a listed package places every package of its product
        if product := ndc_product(code):
            have = ndc.setdefault(product, [])
            have.extend(cid for cid in ids if cid not in have)

    freeze = lambda index: {k: tuple(v) for k, v in index.items()}
    return Knowledge(
        version=str(raw.get("version", "unversioned")),
        path=str(path),
        sources=sources,
        contributors=contributors,
        rxnorm=freeze(rxnorm),
        rxnorm_names=rxnorm_names,
        atc=freeze(atc),
        atc_lengths=tuple(sorted({len(k) for k in atc}, reverse=True)),
        icd_prefix=freeze(icd_prefix),
        icd_prefix_lengths=tuple(sorted({len(k) for k in icd_prefix}, reverse=True)),
        icd_ranges=tuple(icd_ranges),
        snomed=freeze(snomed),
        drug_names=_word_pattern(drug_words),
        drug_name_ids=freeze(drug_words),
        condition_words=_word_pattern(condition_words),
        condition_word_ids=freeze(condition_words),
        labs=labs,
        monitoring_labs={str(k): str(v) for k, v in monitoring.items()},
        ndc=freeze(ndc),
        icd_exact=freeze(icd_exact),
        local_drug=freeze(local_drug),
        local_condition=freeze(local_condition),
        pack_path=str(pack) if pack else None,
        site_codes=tuple(site_codes),
    )


def _first_names(entries: list[dict]) -> dict[str, str]:
    """RxNorm code -> name, in file order; a code listed under several contributors keeps its first name."""
    names: dict[str, str] = {}
    for entry in entries:
        for code, name in entry["match"].get("rxnorm", {}).items():
            names.setdefault(str(code), str(name))
    return names


def site_knowledge_files(environ: dict | None = None) -> tuple[Path, ...]:
    """The site code maps named by CRAMP_SITE_KNOWLEDGE (one file, or several separated by the OS path
    separator, ':' on Unix)."""
    value = (os.environ if environ is None else environ).get(SITE_KNOWLEDGE_VARIABLE, "")
    return tuple(Path(p) for p in value.split(os.pathsep) if p.strip())


@lru_cache(maxsize=1)
def default_knowledge() -> Knowledge:
    """The built-in knowledge with the terminology pack and the site's code maps, loaded once per process."""
    return load_knowledge(site=site_knowledge_files())
