"""Build plugin/knowledge/terminology.json from public code lists (run by hand; its output is committed).

    python tools/build_terminology.py [--mirrors /work/.mirror] [--out plugin/knowledge/terminology.json]

Every code in the pack comes from a file in a git snapshot of a public repository (fetched beside the
project under --mirrors as `owner+name/repo`), and the pack records, per code, the repository, commit,
file and — where the list is a VSAC value set — its OID, name and expansion version. Facts (codes and
their names) are carried over; nothing is invented here:

- a medication code belongs to a contributor when its published name (or the list's own ingredient
  column) names one of the contributor's ingredients, whole word (`quinidine` is not quinine); a
  combination belongs to every contributor whose ingredient it contains;
- a condition code belongs to the contributor its value set is mapped to below, minus names the clinical
  reference excludes (gestational diabetes, mononeuropathy, history-of …).

Term types (TTY) come from the list where it gives them (RxNorm TTY, OMOP concept class); otherwise
from the RxNorm naming pattern ("{…} Pack [Brand]" is a BPCK); the pack says which (`tty_from`).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from plugin.codes import normalise_ndc

ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTORS = ROOT / "plugin" / "knowledge" / "contributors.json"
DEFAULT_OUT = ROOT / "plugin" / "knowledge" / "terminology.json"

# Each medication contributor's ingredients (lower case, as RxNorm spells them, salts follow the word).
INGREDIENTS = {
    "quinine": ["quinine"],
    "loop-diuretic": ["furosemide", "bumetanide", "torsemide", "ethacrynic acid", "ethacrynate"],
    "thiazide-diuretic": ["hydrochlorothiazide", "chlorothiazide", "chlorthalidone", "indapamide", "metolazone",
                          "bendroflumethiazide", "methyclothiazide", "polythiazide", "trichlormethiazide"],
    "potassium-sparing-diuretic": ["spironolactone", "eplerenone", "amiloride", "triamterene"],
    "laba": ["salmeterol", "formoterol", "arformoterol", "vilanterol", "olodaterol", "indacaterol"],
    "statin": ["atorvastatin", "simvastatin", "rosuvastatin", "pravastatin", "lovastatin", "fluvastatin",
               "pitavastatin", "cerivastatin"],
    "iron-sucrose": ["iron sucrose"],
    "conjugated-estrogens": ["estrogens, conjugated", "conjugated estrogens"],
    "raloxifene": ["raloxifene"],
    "teriparatide": ["teriparatide"],
    "naproxen": ["naproxen"],
}
# The lists' own class labels, where a row's name does not carry the ingredient (e.g. "Lasix Pill").
SSMITH_CLASSES = {"THIAZIDE_DIURETIC": "thiazide-diuretic", "LOOP_DIURETIC": "loop-diuretic",
                  "K_SPARING_DIURETIC": "potassium-sparing-diuretic",
                  "ALDO_ANTAGONIST": "potassium-sparing-diuretic"}

# ESRD and dialysis are their own finding when the knowledge has such a contributor; until then they
# stay with chronic kidney disease (the loader applies this fallback when the id is absent).
ESRD = "esrd-dialysis"
FALLBACK_IDS = {ESRD: "chronic-kidney-disease"}

# Condition value sets -> contributor, with names the clinical reference keeps out.
_ENDED = r"miscarriage|abortion|stillbirth|fetal death|ectopic|molar|hydatidiform|blighted"  # not pregnant now
_NOT_CURRENT = r"history of|\bh/o\b|family history|personal history|screening|suspected|ruled out|no evidence|absent"


@dataclass(frozen=True)
class ConditionSet:
    contributor: str
    keep: str = ""          # a name must match this (when set)
    drop: str = ""          # … and must not match this
    esrd: str = ""          # names matching this go to the ESRD contributor


# A combination code is two findings when its name says both: diabetic polyneuropathy is neuropathy too.
ALSO = [
    ("neuropathy", r"polyneuropath|peripheral neuropath|diabetic neuropath|neuropathy due to (type \d )?diabet",
     r"mononeuro|optic|autonomic|amyotroph|mononeuritis"),
    ("peripheral-artery-disease", r"peripheral angiopathy|peripheral (arterial|vascular|circulatory)", r"^$"),
]
# Liver-disease sets: cirrhosis and chronic liver disease only (not acute hepatitis, not cystic fibrosis).
LIVER = ConditionSet("cirrhosis", keep=r"cirrho|fibrosis|chronic liver|alcoholic liver|portal hypertension|"
                                       r"end.stage liver|chronic hepatic failure|hepatorenal|esophageal varices",
                     drop=r"cystic fibrosis|acute|pulmonary")
CKD_ESRD = r"(?<!pre-)end.stage|stage 5|\bESRD\b|dialysis|kidney failure|renal failure|anephric"
VSAC_CONDITIONS = {  # by OID, wherever the expansion is published
    "2.16.840.1.113883.3.464.1003.103.12.1001": ConditionSet("diabetes", drop=r"gestation|prediabet|pre-diabet"),
    "2.16.840.1.113883.3.464.1003.103.12.1020": ConditionSet("diabetes", drop=r"gestation|prediabet"),
    "2.16.840.1.113762.1.4.1047.21": ConditionSet(
        "peripheral-artery-disease",
        keep=r"extremit|\blegs?\b|\blimbs?\b|peripheral|claudication|iliac|femoral|popliteal|tibial|"
             r"\bfoot\b|\btoes?\b|gangrene|rest pain",
        drop=r"coronary|cerebr|carotid|renal|aort(a|ic)(?! ?-?iliac)|retina|mesenteric|upper"),
    "2.16.840.1.113883.3.526.3.353": ConditionSet(ESRD),
    "2.16.840.1.113883.3.526.3.1002": ConditionSet(ESRD),
    "2.16.840.1.113883.3.464.1003.109.12.1017": ConditionSet("chronic-kidney-disease", esrd=CKD_ESRD),
    "2.16.840.1.113883.3.464.1003.199.12.1035": LIVER,   # Chronic Liver Disease
    "2.16.840.1.113762.1.4.1047.42": LIVER,              # Liver Disease
    # Alcohol and Drug Dependence (CMS137): its alcohol codes only
    "2.16.840.1.113883.3.464.1003.106.12.1001": ConditionSet("alcohol-use-disorder", keep=r"alcohol",
                                                             drop=_NOT_CURRENT),
    "2.16.840.1.113883.3.526.3.378": ConditionSet("pregnancy", drop=_NOT_CURRENT + r"|postpartum|puerper|"
                                                  r"pregnancy loss|pregnancy test|not pregnant|" + _ENDED),
}
# PEDSnet Variable-Dictionary condition code sets (OMOP concept lists with vocabulary).
PEDSNET_CONDITIONS = {
    "conditions/dx_2022_03_CKDAllStages_V1.csv": ConditionSet(
        "chronic-kidney-disease", keep=r"chronic|stage|end.stage|CKD", drop=_NOT_CURRENT + r"|acute",
        esrd=CKD_ESRD),
    "conditions/dx_2021_11_KidneyDialysis_V1.csv": ConditionSet(
        ESRD, keep=r"dependen|end.stage|\bESRD\b|on (renal |peritoneal |hemo|haemo)?dialysis|dialysis status|"
                   r"stage 5",
        drop=_NOT_CURRENT + r"|complication|stopped|started|decision|assessment|referral|declined|education|"
                            r"review|plan\b|foreign body|accident|misadventure|infection|reaction|mechanical"),
    "conditions/dx_2021_12_Hypothyroidism_V1.csv": ConditionSet("hypothyroidism", drop=_NOT_CURRENT),
    "conditions/dx_peripheral_neuropathy.csv": ConditionSet(
        "neuropathy", keep=r"polyneuropath|peripheral neuropath|diabetic neuropath|sensory neuropath|"
                           r"motor neuropath|axonal neuropath|sensorimotor",
        drop=r"mononeurop|optic|cranial|\bnerve\b|plexus|radicul|autonomic"),
    "conditions/dx_pregnancy.csv": ConditionSet(
        "pregnancy", keep=r"pregnan|gestation|trimester|weeks|antenatal|prenatal|maternal care",
        drop=_NOT_CURRENT + r"|postpartum|puerper|post.partum|newborn|neonat|infant|delivered|"
                            r"lactat|breast|abortion|ectopic|molar|hydatidiform|termination|pregnancy loss|"
                            r"pregnancy test|not pregnant|childcare|contracept|procreative|infertil|" + _ENDED),
}
# Lists read whole (a problem-list subset, UK code sets): a code joins the first of these its name matches.
NAMED_CONDITIONS = [
    ConditionSet("lumbar-spinal-stenosis", keep=r"(lumbar|lumbosacral)\b.*stenosis|stenosis.*\blumbar|"
                                                r"neurogenic claudication|spinal claudication",
                 drop=_NOT_CURRENT),
    ConditionSet("venous-insufficiency",
                 keep=r"venous insufficiency|venous stasis|stasis (dermatitis|eczema|edema)|varicose ulcer|"
                      r"varicose veins? of (the )?(legs?|lower (limb|extremit))",
                 drop=_NOT_CURRENT + r"|thromb|morpholog|mixed arteriovenous|immobility"),
    ConditionSet("volume-depletion", keep=r"dehydrat|hypovol(a)?emi|volume depletion",
                 drop=_NOT_CURRENT + r"|newborn|neonat|o/e|shock"),
    ConditionSet("low-potassium", keep=r"hypokal(a)?emi", drop=_NOT_CURRENT + r"|newborn|neonat|periodic paralysis"),
    ConditionSet("low-magnesium", keep=r"hypomagnes", drop=_NOT_CURRENT + r"|newborn|neonat"),
    ConditionSet("low-calcium", keep=r"hypocalc(a)?emi", drop=_NOT_CURRENT + r"|newborn|neonat|puerper|pregnan"),
    ConditionSet("alcohol-use-disorder",
                 keep=r"alcoholism|alcohol (abuse|dependence|misuse|use disorder|withdrawal)|nondependent alcohol|"
                      r"alcoholic (psychosis|paranoia|polyneuropathy|dementia|brain)|(harmful|hazardous) "
                      r"(alcohol|drinking)",
                 drop=_NOT_CURRENT + r"|fetal|maternal|counsel|liver|cirrho|hepat"),
    ConditionSet("leg-cramps-documented", keep=r"^cramp$|cramp in (lower )?(leg|limb)|leg cramp|calf cramp",
                 drop=r"pain"),
]
IPS_REPO, IPS_COMMIT = "HL7/fhir-ips", "57c3299fe9759f9be7c7b6976ce61f57ef9a7bd1"
IPS_FILE = "input/fsh/valuesets/ProblemsSnomedCtIpsFreeSet.fsh"   # the clinical reference's C8; gone at HEAD
GM_SDE_REPO = "UoM-Data-Science-Platforms/gm-sde"                  # the clinical reference's C15
GM_SDE_FILES = [f"shared/clinical-code-sets/conditions/{name}/1/{name}.snomed.txt"
                for name in ("back-pain", "back-problems", "chronic-pain", "efi-skin-ulcer")]
PEDSNET_NAMED = ["conditions/dx_edema.csv"]   # venous stasis edema and ulcers among other oedema codes
PEDSNET_DRUGS = ["drugs/rx_2021_11_LoopDiuretic_V1.csv", "drugs/rx_2021_05_Thiazides_V1.csv",
                 "drugs/rx_2021_03_Antihypertensive_V1.csv", "drugs/rx_2022_09_AntiAsthmaticAgents_V1.csv",
                 # sets built for other studies, read for ours: quinine combinations (aminophylline / quinine,
                 # aspirin / quinine), Symbicort and Breztri forms, ACE / ARB + thiazide products, naproxen /
                 # lansoprazole packs
                 "drugs/rx_2023_07_Aminophylline_V1.csv", "drugs/rx_2023_11_COVID19Medications_V1.csv",
                 "drugs/rx_2021_03_ReninAngioTensinAldosteronSystemBlockers_V1.csv",
                 "drugs/rx_2022_08_ProtonPumpInhibitors_V1.csv"]
SSMITH_FILE = "antihypertensive_drugs/antihtn_rxcuis.csv"
# RxTerms was removed from ringful/RxParser's main line; read where it was last present.
RXTERMS_REPO, RXTERMS_COMMIT = "ringful/RxParser", "55d3d9564bc18820c6357f85c028bbf52df278d8"
RXTERMS_FILE = "src/main/java/com/ringfulhealth/rxparser/entity/rxnorm/RxTerms.txt"
EMA_REPO, EMA_FILE = "mi-erasmusmc/ema-authorised-to-rxnorm-mappings", "ema-to-rxnorm.tsv"
_EMA_SPAIN = ("mi-erasmusmc/ema-authorised-to-rxnorm-mappings", "920aa6c751c6d45dd08b86a50dd8971828fbdfb9",
              "data/spain/products/hierro_sacarosa/mapping.tsv")
# (system, code, name as published, term type, how the term type is known, source)
CARRIED = [
    ("rxnorm", "1741267", "5 ML iron sucrose 20 MG/ML Injection", "SCD",   # Spanish Venofer and Feriv map here
     "name pattern (a quantified clinical drug)", _EMA_SPAIN),
]
NDC_MAP_REPO = "fabkury/ndc_map"
NDC_MAP_FILE = "FDA NDC Directory with drug classes/FDA NDC directory with atc5 atc4 ingredients (2020_06_17).zip"
NDC_MAP_MEMBER = "ndc_map 2020_06_17 (atc5 atc4 ingredients).csv"
SSMITH_LIPIDS = "lipid_lowering_therapy/antilipidemics_rxcui_classes.sas7bdat"
SSMITH_ANTIPLATELETS = "antiplatelets/antiplatelet_rxcui_classes.sas7bdat"
PDDI_FILES = ["input/vocabulary/valueset-naproxen.xml", "input/vocabulary/valueset-aspirin.xml"]  # aspirin / quinine
# Synthea's disease modules code their medication orders in RxNorm (the COPD module's fluticasone / salmeterol
# inhaler among them). The upstream repository's snapshot is over the fetch size limit; this fork carries the
# same modules as of May 2019.
SYNTHEA_REPO = "drao05/synthea"
SYNTHEA_MODULES = "src/main/resources/modules"
CANVAS_DIRS = ["canvas_sdk/value_set/v2022", "canvas_sdk/value_set/v2026"]
ECQM_DIR = "input/vocabulary/valueset/external"
_FHIR_SYSTEMS = {"http://www.nlm.nih.gov/research/umls/rxnorm": "rxnorm", "http://snomed.info/sct": "snomed",
                 "http://hl7.org/fhir/sid/icd-10-cm": "icd10cm"}

OMOP_CLASS_TTY = {"Ingredient": "IN", "Precise Ingredient": "PIN", "Multiple Ingredients": "MIN",
                  "Clinical Drug": "SCD", "Branded Drug": "SBD", "Clinical Drug Comp": "SCDC",
                  "Branded Drug Comp": "SBDC", "Clinical Drug Form": "SCDF", "Branded Drug Form": "SBDF",
                  "Clinical Pack": "GPCK", "Branded Pack": "BPCK", "Brand Name": "BN",
                  "Quant Clinical Drug": "SCD", "Quant Branded Drug": "SBD"}   # RxNorm's quantified SCD/SBD


# --- reading the snapshots -----------------------------------------------------------------------

class Mirror:
    def __init__(self, root: Path, repo: str, commit: str = "HEAD"):
        """A snapshot read at `commit` (HEAD, or an older commit where a list was later removed)."""
        self.repo = repo
        self.git = root / repo.replace("/", "+") / "repo"
        if not self.git.is_dir():
            sys.exit(f"missing snapshot of {repo}: expected a git directory at {self.git} (use the fetch tool)")
        self.commit = self._run("rev-parse", commit).strip()

    def _git(self, *args: str) -> bytes:
        return subprocess.run(["git", f"--git-dir={self.git}", *args], check=True, capture_output=True).stdout

    def _run(self, *args: str) -> str:
        return self._git(*args).decode("utf-8")

    def read(self, path: str) -> str:
        return self._run("show", f"{self.commit}:{path}").lstrip("\ufeff")

    def read_bytes(self, path: str) -> bytes:
        return self._git("show", f"{self.commit}:{path}")

    def files(self, folder: str) -> list[str]:
        return sorted(self._run("ls-tree", "--name-only", f"{self.commit}:{folder}").split())

    def tree(self, folder: str, suffix: str) -> list[str]:
        """Paths under folder, at any depth, ending with suffix."""
        return sorted(p for p in self._run("ls-tree", "-r", "--name-only", self.commit, folder).split()
                      if p.endswith(suffix))


@dataclass
class Pack:
    sources: dict[str, dict] = field(default_factory=dict)
    codes: dict[str, dict[str, dict]] = field(default_factory=lambda: {
        "rxnorm": {}, "ndc": {}, "snomed": {}, "icd10cm": {}})
    _source_ids: dict[tuple, str] = field(default_factory=dict)
    # brand (lower case) -> the contributor sets of every product seen with it, matched or not
    brands_seen: dict[str, list[frozenset]] = field(default_factory=dict)

    def source(self, mirror: Mirror, path: str, member: str = "", **value_set: str) -> str:
        return self.cite(mirror.repo, mirror.commit, path, member, **value_set)

    def cite(self, repo: str, commit: str, path: str, member: str = "", **value_set: str) -> str:
        """The key (T…) of a source: a file (and the member of a zip file) at a commit of a public repo."""
        key = (repo, path, member, tuple(sorted(value_set.items())))
        if key not in self._source_ids:
            sid = f"T{len(self._source_ids) + 1}"
            self._source_ids[key] = sid
            entry = {"repository": f"https://github.com/{repo}", "commit": commit, "file": path}
            if member:
                entry["member"] = member
            if value_set:
                entry["value_set"] = dict(value_set)
            self.sources[sid] = entry
        return self._source_ids[key]

    def add(self, system: str, code: str, contributors: list[str], name: str, source: str,
            tty: str | None = None, tty_from: str | None = None) -> None:
        entry = self.codes[system].setdefault(code, {"c": [], "n": name, "s": []})
        for cid in contributors:
            if cid not in entry["c"]:
                entry["c"].append(cid)
        if source not in entry["s"]:
            entry["s"].append(source)
        if tty and "t" not in entry:
            entry["t"] = tty
            entry["tty_from"] = tty_from or "source"


# --- classification --------------------------------------------------------------------------

def _ingredient_pattern() -> list[tuple[re.Pattern, str]]:
    found = []
    for cid, words in INGREDIENTS.items():
        for word in words:
            body = r"[\s,]+".join(map(re.escape, word.split()))
            found.append((re.compile(rf"(?<![a-z]){body}(?![a-z])", re.IGNORECASE), cid))
    return found


_INGREDIENT_PATTERNS = _ingredient_pattern()


def medication_contributors(name: str, hints: tuple[str, ...] = ()) -> list[str]:
    """Contributors whose ingredient the product's name (or the list's ingredient column) names."""
    found = [cid for pattern, cid in _INGREDIENT_PATTERNS if pattern.search(name)]
    for hint in hints:
        found += [cid for pattern, cid in _INGREDIENT_PATTERNS if pattern.fullmatch(hint.strip())]
    return list(dict.fromkeys(found))


_DOSE_FORM = re.compile(r"\b(Tablet|Capsule|Solution|Suspension|Injection|Inhaler|Inhalant|Powder|Cartridge|"
                        r"Syringe|Pen Injector|Cream|Patch|Spray|Ring|Injectable|Transdermal System|Vaginal|"
                        r"Oral)\b", re.IGNORECASE)


def tty_from_name(name: str) -> str | None:
    """RxNorm's naming conventions (normalized names): the term type a name's shape implies."""
    branded = bool(re.search(r"\[[^\]]+\]\s*$", name))
    if re.search(r"\}\s*Pack\b", name):
        return "BPCK" if branded else "GPCK"
    if re.search(r"\b\d+(\.\d+)?\s*(MG|MCG|UNT|MEQ|ML|%)\b", name, re.IGNORECASE):
        dose_form = _DOSE_FORM.search(name)
        if dose_form:
            return "SBD" if branded else "SCD"
        return "SBDC" if branded else "SCDC"
    if _DOSE_FORM.search(name):
        return "SBDF" if branded else "SCDF"
    if not branded and re.fullmatch(r"[a-z][a-z ,()\-]*(\s/\s[a-z][a-z ,()\-]*)*", name.strip()):
        return "MIN" if " / " in name else "IN"
    return None


# --- sources ---------------------------------------------------------------------------------

_CANVAS_CLASS = re.compile(r"^class (\w+)\(ValueSet\):(.*?)(?=^class |\Z)", re.DOTALL | re.MULTILINE)
_CANVAS_BLOCK = re.compile(r"^\s*(RXNORM|SNOMEDCT|ICD10CM) = \{(.*?)^\s*\}", re.DOTALL | re.MULTILINE)
_CANVAS_LINE = re.compile(r'"([0-9A-Z.]+)",\s*#\s*(.+)')


def read_canvas(pack: Pack, mirror: Mirror) -> None:
    """canvas-medical/canvas-plugins: VSAC eCQM value sets (expansions) as Python classes."""
    for folder in CANVAS_DIRS:
        for filename in mirror.files(folder):
            path = f"{folder}/{filename}"
            if not filename.endswith(".py"):
                continue
            try:
                text = mirror.read(path)
            except subprocess.CalledProcessError:
                print(f"  skipped {path}: not in the snapshot (over its size limit)", file=sys.stderr)
                continue
            for cls in _CANVAS_CLASS.finditer(text):
                body = cls.group(2)
                oid = re.search(r'OID = "([^"]+)"', body)
                if not oid:
                    continue
                meta = {"oid": oid.group(1),
                        "name": _field(body, "VALUE_SET_NAME") or cls.group(1),
                        "version": _field(body, "EXPANSION_VERSION") or ""}
                condition = VSAC_CONDITIONS.get(meta["oid"])
                for block in _CANVAS_BLOCK.finditer(body):
                    system = block.group(1)
                    rows = _CANVAS_LINE.findall(block.group(2))
                    if system == "RXNORM":
                        for code, name in rows:
                            _add_drug(pack, code, name.strip(), (), partial(pack.source, mirror, path, **meta))
                    elif condition:
                        target = "snomed" if system == "SNOMEDCT" else "icd10cm"
                        for code, name in rows:
                            _add_condition(pack, target, code, name.strip(), condition,
                                           partial(pack.source, mirror, path, **meta))


def _field(body: str, name: str) -> str | None:
    m = re.search(rf'{name} = "([^"]*)"', body)
    return m.group(1) if m else None


def _add_drug(pack: Pack, code: str, name: str, hints: tuple[str, ...], source, tty: str | None = None,
              tty_from: str | None = None, system: str = "rxnorm", name_is_rxnorm: bool = True) -> None:
    """One drug code. Without a term type from the list, an RxNorm name's shape gives it (`name_is_rxnorm`);
    a name made of ingredients only (ndc_map) gives none."""
    if not code.isdigit():
        return
    contributors = medication_contributors(name, hints)
    brand = _BRAND.search(name) or (re.fullmatch(r"[A-Z][A-Za-z0-9 \-]+", name.strip()) if tty == "BN" else None)
    if brand:
        pack.brands_seen.setdefault(brand.group(brand.lastindex or 0).strip().lower(), []).append(
            frozenset(contributors))
    if not contributors:
        return
    if tty is None and system == "rxnorm" and name_is_rxnorm:
        tty, tty_from = tty_from_name(name), "name pattern"
    pack.add(system, code, contributors, name, source(), tty, tty_from)


def _add_condition(pack: Pack, system: str, code: str, name: str, rule: ConditionSet, source) -> None:
    if system == "snomed" and not code.isdigit():
        return  # e.g. codes mangled into scientific notation by a spreadsheet
    if system == "icd10cm":
        code = code.replace(".", "").upper()
        if not re.fullmatch(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}", code):
            return
    if rule.keep and not re.search(rule.keep, name, re.IGNORECASE):
        return
    if rule.drop and re.search(rule.drop, name, re.IGNORECASE):
        return
    cid = ESRD if rule.esrd and re.search(rule.esrd, name, re.IGNORECASE) else rule.contributor
    also = [other for other, keep, drop in ALSO if re.search(keep, name, re.IGNORECASE)
            and not re.search(drop, name, re.IGNORECASE)]
    pack.add(system, code, list(dict.fromkeys([cid, *also])), name, source())


def _add_named_condition(pack: Pack, system: str, code: str, name: str, source) -> None:
    """A code from a list read whole: it joins the first NAMED_CONDITIONS rule its name matches, if any."""
    for rule in NAMED_CONDITIONS:
        if re.search(rule.keep, name, re.IGNORECASE):
            _add_condition(pack, system, code, name, rule, source)
            return


def read_ips(pack: Pack, mirror: Mirror) -> None:
    """HL7/fhir-ips: the SNOMED CT IPS free set (SNOMED 2022-07-31) as a FHIR expansion in FSH."""
    src = partial(str, pack.source(mirror, IPS_FILE))
    text = mirror.read(IPS_FILE)
    pairs = re.findall(r"contains\[=\]\.code = #(\d+)\s*\n\* \^expansion\.contains\[=\]\.display = \"([^\"]+)\"", text)
    for code, name in pairs:
        _add_named_condition(pack, "snomed", code, name, src)


def read_gm_sde(pack: Pack, mirror: Mirror) -> None:
    """UoM-Data-Science-Platforms/gm-sde: Greater Manchester SNOMED code sets (code, tab, name per line)."""
    for path in GM_SDE_FILES:
        src = partial(str, pack.source(mirror, path))
        for line in mirror.read(path).splitlines():
            code, _, name = line.partition("\t")
            _add_named_condition(pack, "snomed", code.strip(), name.strip(), src)


def read_ssmith(pack: Pack, mirror: Mirror) -> None:
    """ssmithm/rxnorm-drug-lists: antihypertensive RXCUIs with TTY, ingredient and class (RxNorm May 2026)."""
    src = pack.source(mirror, SSMITH_FILE)
    for row in csv.DictReader(io.StringIO(mirror.read(SSMITH_FILE))):
        hint = SSMITH_CLASSES.get(row["class"])
        hints = (row["ingredient_name"],) if hint else ()
        _add_drug(pack, row["RXCUI"], row["STR"], hints, partial(str, src), row["TTY"], "source")


def read_rxterms(pack: Pack, mirror: Mirror) -> None:
    """NLM RxTerms (a 2013 copy in ringful/RxParser): SCD, SBD and BPCK rows with RxNorm's full names.
    The copy is sorted as text and ends mid-row at RXCUI 543600; the cut row is skipped."""
    src = pack.source(mirror, RXTERMS_FILE)
    for row in csv.DictReader(io.StringIO(mirror.read(RXTERMS_FILE)), delimiter="|", quoting=csv.QUOTE_NONE):
        if row.get("SXDG_NAME") is None:   # the cut last row
            continue
        _add_drug(pack, row["RXCUI"], row["FULL_NAME"], (), partial(str, src), row["TTY"], "source")


def read_ndc_map(pack: Pack, mirror: Mirror) -> None:
    """fabkury/ndc_map: the FDA NDC Directory of 2020-06-17 with the RxCUI RxNav maps each package NDC to
    and that concept's ingredients (IN, or MIN for a combination). Every NDC naming a contributor's
    ingredient joins the pack, and so does the product RxCUI it maps to (named by its ingredients)."""
    src = partial(str, pack.source(mirror, NDC_MAP_FILE, NDC_MAP_MEMBER))
    with zipfile.ZipFile(io.BytesIO(mirror.read_bytes(NDC_MAP_FILE))) as archive:
        text = io.TextIOWrapper(archive.open(NDC_MAP_MEMBER), encoding="utf-8", newline="")
        products: dict[str, tuple[str, dict[str, str]]] = {}
        for row in csv.DictReader(text):
            if row["in_name"] != "NA" and row["rxcui"] != "NA":
                rxcui, names = products.setdefault(normalise_ndc(row["ndc"]), (row["rxcui"], {}))
                names[row["in_tty"]] = row["in_name"]
    for ndc, (rxcui, names) in sorted(products.items()):
        name = names.get("MIN") or names.get("IN", "")   # a combination's MIN names every ingredient
        if re.fullmatch(r"\d{11}", ndc) and medication_contributors(name):
            _add_drug(pack, ndc, name, (), src, system="ndc")
            _add_drug(pack, rxcui, name, (), src, name_is_rxnorm=False)   # its term type is not given


def read_ema(pack: Pack, mirror: Mirror) -> None:
    """mi-erasmusmc/ema-authorised-to-rxnorm-mappings: EU-authorised products mapped to RxNorm concepts,
    with OMOP's concept class (the term type) and RxNorm's name; RxNorm Extension rows stay out."""
    src = pack.source(mirror, EMA_FILE)
    for row in csv.DictReader(io.StringIO(mirror.read(EMA_FILE)), delimiter="\t", quoting=csv.QUOTE_NONE):
        tty = OMOP_CLASS_TTY.get(row["concept_class_id"])
        if row["vocabulary_id"] == "RxNorm" and tty:
            _add_drug(pack, row["rxcui"], row["concept_name"], (), partial(str, src), tty, "source")


def read_carried(pack: Pack) -> None:
    """Rows read through the public code index in files whose commit no snapshot here holds; each is
    cited exactly (repository, commit, file) and carried over as published."""
    for system, code, name, tty, tty_from, (repo, commit, path) in CARRIED:
        _add_drug(pack, code, name, (), partial(pack.cite, repo, commit, path), tty, tty_from, system)


def _sas_rows(mirror: Mirror, path: str):
    """The rows of a SAS file in a snapshot, as dicts. Needs the `sas7bdat` reader (`pip install -e '.[tools]'`);
    only this script uses it."""
    import tempfile

    from sas7bdat import SAS7BDAT

    data = subprocess.run(["git", f"--git-dir={mirror.git}", "show", f"{mirror.commit}:{path}"],
                          check=True, capture_output=True).stdout
    with tempfile.NamedTemporaryFile(suffix=".sas7bdat") as tmp:
        tmp.write(data)
        tmp.flush()
        with SAS7BDAT(tmp.name, skip_header=False) as reader:
            rows = iter(reader)
            header = next(rows)
            for values in rows:
                yield dict(zip(header, values, strict=True))


def read_ssmith_lipids(pack: Pack, mirror: Mirror) -> None:
    """ssmithm/rxnorm-drug-lists: lipid-lowering RXCUIs with TTY and ingredient (RxNorm Nov 2020), a SAS file."""
    src = pack.source(mirror, SSMITH_LIPIDS)
    for row in _sas_rows(mirror, SSMITH_LIPIDS):
        hints = tuple(str(row[k]).lower() for k in ("medname1", "medname2")
                      if row.get(k) and str(row[f"class{k[-1]}"]).upper() == "STATIN")
        _add_drug(pack, str(row["RXCUI"]), str(row["STR"]), hints, partial(str, src), str(row["TTY"]), "source")


def read_ssmith_antiplatelets(pack: Pack, mirror: Mirror) -> None:
    """ssmithm/rxnorm-drug-lists: antiplatelet RXCUIs with TTY, a SAS file. Its aspirin combinations carry
    pravastatin (Pravigard products and packs) and quinine; their names name the ingredient, so no hint."""
    src = pack.source(mirror, SSMITH_ANTIPLATELETS)
    for row in _sas_rows(mirror, SSMITH_ANTIPLATELETS):
        _add_drug(pack, str(row["RXCUI"]), str(row["STR"]), (), partial(str, src), str(row["TTY"]), "source")


def read_pedsnet(pack: Pack, mirror: Mirror) -> None:
    """PEDSnet/Variable-Dictionary: OMOP drug and condition code sets (RxNorm, NDC, SNOMED, ICD-10-CM)."""
    for path in PEDSNET_DRUGS:
        src = pack.source(mirror, path)
        for row in csv.DictReader(io.StringIO(mirror.read(path))):
            vocabulary = row.get("vocabulary_id")
            name = row.get("concept_name") or ""
            hints = (row["ingredient"],) if row.get("ingredient") else ()
            tty = OMOP_CLASS_TTY.get(row.get("concept_class_id") or "")
            if vocabulary is None and re.fullmatch(r"\d{1,8}", row["concept_code"]):
                vocabulary = "RxNorm"   # a set without a vocabulary column; its RxNorm Extension codes ("OMOP…")
                #                         are not digits and stay out
            if vocabulary == "RxNorm":
                _add_drug(pack, row["concept_code"], name, hints, partial(str, src), tty, "source" if tty else None)
            elif vocabulary == "NDC" and re.fullmatch(r"\d{9}|\d{11}", row["concept_code"]):   # product | package
                _add_drug(pack, row["concept_code"], name, hints, partial(str, src), system="ndc")
    for path in PEDSNET_NAMED:
        src = pack.source(mirror, path)
        for row in csv.DictReader(io.StringIO(mirror.read(path))):
            if row.get("vocabulary_id") == "SNOMED":
                _add_named_condition(pack, "snomed", row["concept_code"].strip(), row["concept_name"].strip(),
                                     partial(str, src))
    for path, rule in PEDSNET_CONDITIONS.items():
        src = pack.source(mirror, path)
        for row in csv.DictReader(io.StringIO(mirror.read(path))):
            system = {"SNOMED": "snomed", "ICD10CM": "icd10cm"}.get(row.get("vocabulary_id") or "")
            if system:
                _add_condition(pack, system, row["concept_code"].strip(), row["concept_name"].strip(), rule,
                               partial(str, src))


def read_ecqm_content(pack: Pack, mirror: Mirror) -> None:
    """cqframework/ecqm-content-r4-2021: VSAC value sets as FHIR ValueSet JSON with their expansions
    (the Statin Grouper 2.16.840.1.113762.1.4.1110.19 among them)."""
    for filename in mirror.files(ECQM_DIR):
        path = f"{ECQM_DIR}/{filename}"
        try:
            vs = json.loads(mirror.read(path))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue
        if not isinstance(vs, dict) or vs.get("resourceType") != "ValueSet":
            continue
        expansion = vs.get("expansion") or {}
        meta = {"oid": str(vs.get("id", "")).removeprefix("valueset-"), "name": vs.get("title") or vs.get("name", ""),
                "version": f"{vs.get('version', '')}; expansion {expansion.get('identifier', '')}".strip("; ")}
        condition = VSAC_CONDITIONS.get(meta["oid"])
        concepts = [(inc.get("system"), c) for inc in (vs.get("compose") or {}).get("include", [])
                    for c in inc.get("concept", [])]
        concepts += [(c.get("system"), c) for c in expansion.get("contains", [])]
        for system, concept in concepts:
            target = _FHIR_SYSTEMS.get(system or "")
            code, name = str(concept.get("code", "")), str(concept.get("display", ""))
            if target == "rxnorm":
                _add_drug(pack, code, name, (), partial(pack.source, mirror, path, **meta))
            elif target and condition:
                _add_condition(pack, target, code, name, condition, partial(pack.source, mirror, path, **meta))


def read_pddi(pack: Pack, mirror: Mirror) -> None:
    """HL7/PDDI-CDS: FHIR ValueSets with enumerated RxNorm concepts (naproxen products and brands)."""
    ns = {"f": "http://hl7.org/fhir"}
    for path in PDDI_FILES:
        root = ET.fromstring(mirror.read(path))
        meta = {"name": root.find("f:title", ns).get("value"), "url": root.find("f:url", ns).get("value")}
        version = root.find("f:version", ns)
        if version is not None:
            meta["version"] = version.get("value")
        src = pack.source(mirror, path, **meta)
        for include in root.findall("f:compose/f:include", ns):
            if "rxnorm" not in (include.find("f:system", ns).get("value") or ""):
                continue
            for concept in include.findall("f:concept", ns):
                code, display = concept.find("f:code", ns).get("value"), concept.find("f:display", ns)
                name = display.get("value") if display is not None else ""
                hints = ("naproxen",) if "naproxen" in path else ()
                tty = "BN" if name and " " not in name.strip() and name[0].isupper() else None
                _add_drug(pack, code, name, hints, partial(str, src), tty, "name pattern" if tty else None)


def read_synthea(pack: Pack, mirror: Mirror) -> None:
    """Synthea's module JSON: every RxNorm coding a module orders or tests for, with its display."""
    def codings(node):
        if isinstance(node, dict):
            if node.get("system") == "RxNorm" and "code" in node:
                yield str(node["code"]), str(node.get("display", ""))
            for value in node.values():
                yield from codings(value)
        elif isinstance(node, list):
            for value in node:
                yield from codings(value)

    for path in mirror.tree(SYNTHEA_MODULES, ".json"):
        for code, name in codings(json.loads(mirror.read(path))):
            _add_drug(pack, code, name, (), partial(pack.source, mirror, path))


# --- brand names -----------------------------------------------------------------------------

_BRAND = re.compile(r"\[([^\]]+)\]\s*$")


def brand_names(pack: Pack) -> dict[str, dict]:
    """Brand names in the lists' product names ("… [Lasix]") and brand-name rows.

    A brand names a contributor only when every product seen with that brand, in any list read (also
    the rows that matched no contributor), contains the contributor's ingredient: a brand also printed
    on a single-ingredient ARB product is not evidence of a thiazide.
    """
    generic = {w for words in INGREDIENTS.values() for w in words}
    sources: dict[str, list[str]] = {}
    for entry in pack.codes["rxnorm"].values():
        m = _BRAND.search(entry["n"])
        brand = (m.group(1) if m else entry["n"] if entry.get("t") == "BN" else "").strip().lower()
        if brand:
            sources.setdefault(brand, [])
            sources[brand] = list(dict.fromkeys(sources[brand] + entry["s"]))
    names: dict[str, dict] = {}
    for brand, seen in sorted(pack.brands_seen.items()):
        if (len(brand) < 4 or brand in generic or " - " in brand or medication_contributors(brand)
                or not re.fullmatch(r"[a-z][a-z0-9 \-]*", brand)):  # "pfizer brand of atorvastatin" is no brand word
            continue
        common = frozenset.intersection(*seen)
        if common and brand in sources:
            names[brand] = {"c": sorted(common), "s": sources[brand]}
    return names


# --- main ------------------------------------------------------------------------------------

# Every snapshot build() reads (owner/name), for whoever checks they are all there first.
SNAPSHOTS = ("ssmithm/rxnorm-drug-lists", "canvas-medical/canvas-plugins", "PEDSnet/Variable-Dictionary",
             "HL7/PDDI-CDS", "cqframework/ecqm-content-r4-2021", SYNTHEA_REPO, RXTERMS_REPO, EMA_REPO, NDC_MAP_REPO,
             IPS_REPO, GM_SDE_REPO)


def build(mirrors: Path) -> dict:
    pack = Pack()
    ssmith = Mirror(mirrors, "ssmithm/rxnorm-drug-lists")
    read_ssmith(pack, ssmith)
    read_ssmith_lipids(pack, ssmith)
    read_ssmith_antiplatelets(pack, ssmith)
    read_canvas(pack, Mirror(mirrors, "canvas-medical/canvas-plugins"))
    read_pedsnet(pack, Mirror(mirrors, "PEDSnet/Variable-Dictionary"))
    read_pddi(pack, Mirror(mirrors, "HL7/PDDI-CDS"))
    read_ecqm_content(pack, Mirror(mirrors, "cqframework/ecqm-content-r4-2021"))
    read_synthea(pack, Mirror(mirrors, SYNTHEA_REPO))
    read_rxterms(pack, Mirror(mirrors, RXTERMS_REPO, RXTERMS_COMMIT))
    read_ips(pack, Mirror(mirrors, IPS_REPO, IPS_COMMIT))
    read_gm_sde(pack, Mirror(mirrors, GM_SDE_REPO))
    read_ema(pack, Mirror(mirrors, EMA_REPO))
    read_carried(pack)
    read_ndc_map(pack, Mirror(mirrors, NDC_MAP_REPO))
    known = {c["id"] for c in json.loads(CONTRIBUTORS.read_text(encoding="utf-8"))["contributors"]}
    for system, entries in pack.codes.items():
        for code, entry in entries.items():
            unknown = set(entry["c"]) - known - set(FALLBACK_IDS)
            if unknown:
                sys.exit(f"{system} {code}: unknown contributor ids {sorted(unknown)}")
    coverage = {cid: sorted({e.get("t") for e in pack.codes["rxnorm"].values() if cid in e["c"] and e.get("t")})
                for cid in INGREDIENTS}
    return {
        "schema": 1,
        "built_by": "tools/build_terminology.py",
        "about": ("Product-level RxNorm, NDC and condition codes for the contributors, from public code lists; "
                  "every code names its sources (keys into 'sources'). c = contributor ids, n = the source's "
                  "name, t = RxNorm term type (tty_from: 'source' or 'name pattern'), s = sources."),
        "fallback_ids": FALLBACK_IDS,
        "not_covered": NOT_COVERED,
        "tty_coverage": coverage,
        "gaps": gaps(pack),
        "sources": pack.sources,
        "codes": {system: dict(sorted(entries.items())) for system, entries in pack.codes.items()},
        "brands": brand_names(pack),
    }


def runtime_index(pack: dict) -> dict:
    """What start-up reads: codes grouped by their contributor ids, brands likewise, RxNorm names.

    Derived from the pack alone (a test checks it is), so the provenance stays in one place.
    """
    index: dict[str, dict[str, list[str]]] = {}
    for system, entries in pack["codes"].items():
        groups: dict[str, list[str]] = {}
        for code, entry in entries.items():
            groups.setdefault(",".join(entry["c"]), []).append(code)
        index[system] = groups
    brands: dict[str, list[str]] = {}
    for brand, entry in pack["brands"].items():
        brands.setdefault(",".join(entry["c"]), []).append(brand)
    return {"schema": 1, "derived_from": "terminology.json (tools/build_terminology.py)",
            "fallback_ids": pack["fallback_ids"], "index": index, "brands": brands,
            "rxnorm_names": {code: e["n"] for code, e in pack["codes"]["rxnorm"].items()}}


KINDS = ("SBD", "SCD", "multi-ingredient", "pack", "NDC")


def product_kinds(entry: dict) -> set[str]:
    """The kinds of product a pack entry is, for the coverage report and its test."""
    kinds = {entry.get("t")} & {"SBD", "SCD"}
    if entry.get("t") in ("GPCK", "BPCK"):
        kinds.add("pack")
    if entry.get("t") in ("SCD", "SBD", "GPCK", "BPCK", "MIN") and " / " in entry["n"]:
        kinds.add("multi-ingredient")
    return kinds


def gaps(pack: Pack) -> dict[str, list[str]]:
    """Per medication contributor, the kinds of code no public list read here supplies (said, not hidden)."""
    have: dict[str, set[str]] = {cid: set() for cid in INGREDIENTS}
    for entry in pack.codes["rxnorm"].values():
        for cid in entry["c"]:
            have[cid] |= product_kinds(entry)
    for entry in pack.codes["ndc"].values():
        for cid in entry["c"]:
            have[cid].add("NDC")
    return {cid: [k for k in KINDS if k not in kinds] for cid, kinds in have.items() if set(KINDS) - kinds}


# What no public list found here covers; said in the pack so that `knowledge show` can say it too.
NOT_COVERED = {
    "quinine": "RxTerms (2013) lists quinine SCDs (e.g. 198186, 312762) and the FDA NDC Directory of 2020-06-17 "
               "(fabkury/ndc_map) lists quinine NDCs with the RxCUIs they map to: 997010 for the generic 324 mg "
               "capsules (as the clinical reference's C13 says of NDC 0093-3002) and 997012 for Qualaquin's NDC "
               "49708-0153-07. No list read here names 997012 or gives its term type, so no quinine SBD is "
               "pinned (997012 still matches); no list has a quinine pack (RxTerms' 153 packs have none). "
               "Combinations (aminophylline / quinine, aspirin / quinine) come from ssmithm's antiplatelet list, "
               "PEDSnet and HL7 PDDI-CDS.",
    "laba": "SBDs, SCDs and combinations from RxTerms, PEDSnet and Synthea, NDCs from the FDA NDC Directory "
            "(ndc_map). No list read here has a pack containing a LABA (RxTerms' 153 packs have none; ndc_map "
            "gives no term types).",
    "iron-sucrose": "One SCD (1741267, from the EMA/Spain mapping) and the FDA NDC Directory's iron-sucrose NDCs "
                    "(Venofer), whose RxCUIs join the pack without a term type. No list read here names a branded "
                    "iron-sucrose product; the NDC Directory of 2020-06-17 has no NDC combining iron sucrose with "
                    "another ingredient, and no list has a pack of it.",
    "raloxifene": "SCDs and SBDs (Evista) from RxTerms and the EMA mapping, NDCs from the FDA NDC Directory. The NDC "
                  "Directory of 2020-06-17 has no NDC combining raloxifene with another ingredient, and no list "
                  "read here has a pack of it.",
    "teriparatide": "An SCD (1435118) and SBDs from the EMA mapping (RxNorm names Yorvipath, palopegteriparatide, "
                    "as teriparatide, so it is in the class), NDCs (Forteo) from the FDA NDC Directory. The NDC "
                    "Directory of 2020-06-17 has no NDC combining teriparatide with another ingredient, and no list "
                    "read here has a pack of it.",
    "packs": "No list read here has a pack (GPCK/BPCK) containing a loop, thiazide or potassium-sparing diuretic, "
             "a LABA, quinine, iron sucrose, raloxifene or teriparatide: not RxTerms' 153 packs, not ssmithm's "
             "antihypertensive list (no packs at all), not PEDSnet's OMOP sets (which do list packs of other "
             "antihypertensives, e.g. prazosin 1100691, clonidine 1310588), not the VSAC sets. The FDA's NDC "
             "package names of 2018-04-24 (jayped005/build_i2b2_rxnorm_ndc_metadata, ndc_names_from_fda.zip) "
             "have no KIT naming any of these ingredients, so such packs are unlikely to exist at all.",
    "volume-depletion": "The lists read here (the SNOMED CT IPS free set, VSAC sets in three eCQM/dQM content "
                        "repositories, PEDSnet, gm-sde, OHDSI's phenotype library) have no SNOMED CT code for "
                        "dehydration or hypovolaemia beyond the clinical reference's 34095006 and 816082000, bar "
                        "neonatal and shock codes kept out; ICD-10-CM E86.0, E86.1 and E86.9 are all of E86.",
    "low-potassium": "The lists read here have no SNOMED CT hypokalaemia code beyond the reference's 43339004, bar "
                     "neonatal and periodic-paralysis codes kept out; ICD-10-CM E87.6 has no subcodes.",
    "low-magnesium": "The lists read here have no SNOMED CT hypomagnesaemia code beyond the reference's 190855004, "
                     "bar neonatal codes kept out; ICD-10-CM E83.42 has no subcodes.",
    "low-calcium": "The lists read here have no SNOMED CT hypocalcaemia code beyond the reference's 5291005, bar "
                   "neonatal and puerperal codes; ICD-10-CM E83.51 has no subcodes.",
    "leg-cramps-documented": "The lists read here name only the reference's cramp concepts (55300003, 424647005, "
                             "449918009, 102549009); gm-sde's 'Cramping/pain of extremities' is pain as much as "
                             "cramp and is kept out.",
    "ndc": "NDCs come from the FDA NDC Directory of 2020-06-17 as mapped to RxNorm by fabkury/ndc_map (every "
           "class) and from PEDSnet's loop-diuretic set (package and product codes). A listed package or "
           "product code places every package of that product (the NDC's first nine digits).",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"),
                        help="folder of git snapshots named owner+name/repo")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    pack = build(args.mirrors)
    text = json.dumps(pack, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    args.out.write_text(text + "\n", encoding="utf-8")
    index = json.dumps(runtime_index(pack), ensure_ascii=False, separators=(",", ":"))
    args.out.with_suffix(".index.json").write_text(index + "\n", encoding="utf-8")  # = terminology.index_path
    counts = {system: len(entries) for system, entries in pack["codes"].items()}
    print(f"wrote {args.out}: {counts}, {len(pack['brands'])} brand names, {len(pack['sources'])} sources")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
