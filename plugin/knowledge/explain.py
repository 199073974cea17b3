"""Why a code maps to a contributor, and what a contributor matches: for people (`cramp-cds knowledge`).

Reads the same indexes the engine matches with, and names for every code where it came from: the
knowledge file's entry and its code sources, the terminology pack's sources (repository, commit, file,
value-set OID and version), or the site file and entry.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from plugin.codes import (
    ATC,
    ICD10CM,
    NDC,
    RXNORM,
    SNOMED,
    canonical_system,
    ndc_product,
    normalise_atc,
    normalise_icd10,
    normalise_ndc,
)
from plugin.knowledge import Knowledge

SYSTEM_NAMES = {"rxnorm": RXNORM, "ndc": NDC, "snomed": SNOMED, "sct": SNOMED, "icd10cm": ICD10CM,
                "icd-10-cm": ICD10CM, "atc": ATC}
_PACK_KEY = {RXNORM: "rxnorm", NDC: "ndc", SNOMED: "snomed", ICD10CM: "icd10cm"}
_FILE_KEY = {RXNORM: "rxnorm", SNOMED: "snomed", ICD10CM: "icd10cm", ATC: "atc"}


@dataclass(frozen=True)
class Reason:
    contributor: str
    how: str      # what matched: "RxNorm 197417", "ICD-10-CM prefix N18", "site code …"
    where: str    # where that fact came from


def parse_system(text: str) -> str:
    """'rxnorm', 'ndc', 'snomed', 'icd10cm', 'atc' or a system URI (a site's local system as written)."""
    return SYSTEM_NAMES.get(text.strip().lower()) or canonical_system(text) or text.strip()


def describe_source(knowledge: Knowledge, key: str) -> str:
    """One line for a pack source key (T…) or a knowledge-file source key (C…/E…)."""
    src = (knowledge.pack.get("sources") or {}).get(key)
    if src:
        vs = src.get("value_set") or {}
        where = f"{src['repository']} @ {src['commit'][:12]} {src['file']}"
        where += f" (member {src['member']})" if src.get("member") else ""
        if vs:
            label = " ".join(f"{k} {v}" for k, v in vs.items() if v)
            where += f" (value set {label})"
        return f"{key}: {where}"
    cited = knowledge.sources.get(key) or {}
    return f"{key}: {cited.get('citation', 'unknown source')}"


def _file_entries(knowledge: Knowledge) -> list[dict]:
    return json.loads(Path(knowledge.path).read_text(encoding="utf-8"))["contributors"]


def lookup(knowledge: Knowledge, system: str, code: str) -> list[Reason]:
    """Every contributor `system|code` maps to, each with what matched and where that came from."""
    code = code.strip()
    reasons: list[Reason] = []
    entries = _file_entries(knowledge)
    fallback = knowledge.pack.get("fallback_ids") or {}

    def file_reason(cid: str, how: str) -> None:
        entry = next(e for e in entries if e["id"] == cid)
        keys = ", ".join(entry.get("code_sources", []))
        reasons.append(Reason(cid, how, f"knowledge file {Path(knowledge.path).name}, contributor {cid!r} "
                                        f"(code sources {keys or 'none listed'})"))

    if system == ICD10CM:
        icd = normalise_icd10(code)
        for entry in entries:
            for pattern in entry["match"].get("icd10cm", []):
                parts = [normalise_icd10(p) for p in str(pattern).split("-")]
                hit = (icd.startswith(parts[0]) if len(parts) == 1
                       else parts[0] <= icd[: len(parts[0])] <= parts[1])
                if hit:
                    file_reason(entry["id"], f"ICD-10-CM {'prefix' if len(parts) == 1 else 'range'} {pattern}")
    elif system == ATC:
        atc = normalise_atc(code)
        for entry in entries:
            for prefix in entry["match"].get("atc", []):
                if atc.startswith(normalise_atc(prefix)):
                    file_reason(entry["id"], f"ATC {prefix}")
    elif system in _FILE_KEY:
        for entry in entries:
            if code in entry["match"].get(_FILE_KEY[system], {}):
                file_reason(entry["id"], f"{_label(system)} {code}")

    pack_key = _PACK_KEY.get(system)
    if pack_key:
        key = normalise_ndc(code) if system == NDC else normalise_icd10(code) if system == ICD10CM else code
        listed = knowledge.pack.get("codes", {}).get(pack_key) or {}
        asked = key
        if key not in listed and system == NDC:
            key = _listed_package_of_same_product(key, listed) or key
        entry = listed.get(key)
        if entry:
            tty = f" [{entry['t']}]" if entry.get("t") else ""
            tty += f" (the same product as {asked})" if key != asked else ""
            for cid in entry["c"]:
                cid = cid if cid in knowledge.contributors else fallback.get(cid, cid)
                reasons.append(Reason(cid, f"{_label(system)} {key} {entry.get('n', '')}{tty}".rstrip(),
                                      "terminology pack: " + "; ".join(describe_source(knowledge, s)
                                                                       for s in entry["s"])))
    for sc in knowledge.site_codes:
        same = (canonical_system(sc.system) or sc.system) == system
        if same and _same_code(system, sc.code, code):
            reasons.append(Reason(sc.contributor, f"site code {sc.system}|{sc.code}", f"{sc.file}: {sc.where}"))
    return reasons


def _listed_package_of_same_product(ndc: str, listed: dict) -> str | None:
    """The pack's NDC for the same product as `ndc` (its product code, or another of its packages)."""
    product = ndc_product(ndc) or (ndc if len(ndc) == 9 else None)
    if product is None:
        return None
    if product in listed:
        return product
    return next((code for code in sorted(listed) if code.startswith(product)), None)


def _same_code(system: str, a: str, b: str) -> bool:
    if system == NDC:
        return normalise_ndc(a) == normalise_ndc(b)
    if system == ICD10CM:
        return normalise_icd10(a) == normalise_icd10(b)
    return a.strip() == b.strip()


def _label(system: str) -> str:
    return {RXNORM: "RxNorm", NDC: "NDC", SNOMED: "SNOMED CT", ICD10CM: "ICD-10-CM", ATC: "ATC"}.get(system, system)


def show(knowledge: Knowledge, cid: str, *, every_code: bool = False) -> list[str]:
    """Lines saying what contributor `cid` matches and where each code came from."""
    c = knowledge.contributors[cid]
    entry = next(e for e in _file_entries(knowledge) if e["id"] == cid)
    lines = [f"{cid}: {c.label} ({c.category}, grade {c.grade}; evidence {', '.join(c.evidence)})", "",
             f"Knowledge file {knowledge.path}:"]
    for key, values in entry["match"].items():
        shown = ", ".join(f"{k} {v}" if isinstance(values, dict) else str(k) for k, v in
                          (values.items() if isinstance(values, dict) else ((x, None) for x in values)))
        lines.append(f"  {key} ({len(values)}): {shown}")
    for key in entry.get("code_sources", []):
        lines.append(f"  source {describe_source(knowledge, key)}")
    fallback = knowledge.pack.get("fallback_ids") or {}
    ids = {cid} | {alias for alias, target in fallback.items() if target == cid and alias not in knowledge.contributors}
    lines += ["", f"Terminology pack {knowledge.pack_path}:"]
    used: Counter = Counter()
    for system, entries in (knowledge.pack.get("codes") or {}).items():
        mine = {code: e for code, e in entries.items() if ids & set(e["c"])}
        if not mine:
            continue
        ttys = Counter(e.get("t", "no term type") for e in mine.values())
        detail = ", ".join(f"{t} {n}" for t, n in sorted(ttys.items())) if system == "rxnorm" else ""
        lines.append(f"  {system}: {len(mine)} codes" + (f" ({detail})" if detail else ""))
        for code, e in mine.items():
            used.update(e["s"])
            if every_code:
                tty = f" [{e['t']}]" if e.get("t") else ""
                lines.append(f"    {code}  {e.get('n', '')}{tty}  from {', '.join(e['s'])}")
    brands = [b for b, e in (knowledge.pack.get("brands") or {}).items() if ids & set(e["c"])]
    if brands:
        lines.append(f"  brand names ({len(brands)}): {', '.join(brands)}")
    for key, n in sorted(used.items(), key=lambda kv: int(kv[0][1:])):
        lines.append(f"  source {describe_source(knowledge, key)} — {n} codes")
    note = (knowledge.pack.get("not_covered") or {}).get(cid)
    if note:
        lines.append(f"  not covered: {note}")
    site = [sc for sc in knowledge.site_codes if sc.contributor == cid]
    if site:
        lines += ["", "Site code maps (CRAMP_SITE_KNOWLEDGE):"]
        lines += [f"  {sc.system}|{sc.code} {sc.display or ''}  ({sc.file}: {sc.where})" for sc in site]
    return lines
