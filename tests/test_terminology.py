"""The terminology pack (plugin/knowledge/terminology.json): product-level codes matched, every code cited,
no code in the wrong class, the gaps said; condition value sets beyond the clinical reference's examples."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from plugin.codes import NDC, RXNORM, normalise_ndc
from plugin.fhir_read import match_condition, match_drug
from plugin.knowledge import KnowledgeError, default_knowledge, load_knowledge
from plugin.knowledge.terminology import DRUG_CATEGORIES, PACK_PATH, index_path
from tests.builders import concept, icd, rx, sct
from tools.build_terminology import (
    INGREDIENTS,
    KINDS,
    SNAPSHOTS,
    medication_contributors,
    product_kinds,
    runtime_index,
)
from tools.build_terminology import main as build_main

PACK = json.loads(PACK_PATH.read_text(encoding="utf-8"))
K = default_knowledge()

# Pinned per medication contributor: (RxNorm code, kind, a source file that lists it). From the pack.
NDC_MAP = "FDA NDC directory with atc5 atc4 ingredients (2020_06_17).zip"   # fabkury/ndc_map
PINNED = {
    "quinine": [("198186", "SCD", "RxTerms.txt"),                               # quinine 325 MG Oral Capsule
                ("428423", "SCD", "antiplatelet_rxcui_classes.sas7bdat"),     # aspirin 300 MG / quinine 30 MG
                ("429479", "multi-ingredient", "rx_2023_07_Aminophylline_V1.csv")],  # aminophylline / quinine
    "laba": [("1114333", "SBD", "RxTerms.txt"),                                 # indacaterol [Arcapta]
             ("1114329", "SCD", "RxTerms.txt"),
             ("1246290", "multi-ingredient", "RxTerms.txt"),                    # budesonide / formoterol [Symbicort]
             ("896209", "SCD", "modules/copd.json"),     # fluticasone / salmeterol 0.05 MG/ACTUAT DPI (Synthea)
             ("896209", "multi-ingredient", "modules/copd.json")],
    "loop-diuretic": [("200801", "SBD", "antihtn_rxcuis.csv"),                  # furosemide 20 MG [Lasix]
                      ("198372", "SCD", "antihtn_rxcuis.csv"),                  # torsemide 5 MG Oral Tablet
                      ("250708", "multi-ingredient", "rx_2021_11_LoopDiuretic_V1.csv")],
    "thiazide-diuretic": [("214081", "SBD", "antihtn_rxcuis.csv"),              # chlorthalidone [Thalitone]
                          ("311671", "SCD", "antihtn_rxcuis.csv"),              # metolazone 5 MG
                          ("979468", "multi-ingredient", "antihtn_rxcuis.csv")],  # HCTZ / losartan
    "potassium-sparing-diuretic": [("402105", "SBD", "antihtn_rxcuis.csv"),     # eplerenone [Inspra]
                                   ("351256", "SCD", "antihtn_rxcuis.csv"),     # eplerenone 25 MG
                                   ("310812", "multi-ingredient", "antihtn_rxcuis.csv")],  # HCTZ/triamterene
    "statin": [("750227", "SBD", "antihtn_rxcuis.csv"),                         # amlodipine/atorvastatin [Caduet]
               ("259255", "SCD", "v2026/medication.py"),                        # VSAC statin intensity sets
               ("404011", "multi-ingredient", "antihtn_rxcuis.csv"),
               ("762664", "pack", "antilipidemics_rxcui_classes.sas7bdat"),   # aspirin / pravastatin pack
               ("152923", "SBD", "antilipidemics_rxcui_classes.sas7bdat")],   # simvastatin 40 MG [Zocor]
    "iron-sucrose": [("1741267", "SCD", "hierro_sacarosa/mapping.tsv")],       # 5 ML iron sucrose 20 MG/ML
    "conjugated-estrogens": [("150840", "SBD", "RxTerms.txt"),                  # 0.625 MG Oral Tablet [Premarin]
                             ("197660", "SCD", "medication.py"),                # VSAC Conjugated Estrogens
                             ("1441392", "multi-ingredient", "medication.py"),
                             ("1000398", "pack", "medication.py"),
                             ("1000487", "pack", "RxTerms.txt")],               # [Premphase 28 Day] BPCK
    "raloxifene": [("1490067", "SBD", "ema-to-rxnorm.tsv"),                     # 60 MG Oral Tablet [Evista]
                   ("213171", "SBD", "RxTerms.txt"),
                   ("1490065", "SCD", "ema-to-rxnorm.tsv")],
    "teriparatide": [("1435118", "SCD", "ema-to-rxnorm.tsv"),                   # 0.02 MG/ACTUAT Pen Injector
                     ("2693643", "SBD", "ema-to-rxnorm.tsv")],                  # 0.56 ML … Pen Injector [Yorvipath]
    "naproxen": [("105898", "SBD", "valueset-naproxen.xml"),                    # Naprosyn 250 MG
                 ("1608797", "SCD", "valueset-naproxen.xml"),
                 ("1653765", "multi-ingredient", "valueset-naproxen.xml"),      # naproxen / sumatriptan
                 ("758486", "pack", "valueset-naproxen.xml"),
                 ("1116369", "pack", "RxTerms.txt")],                           # Naprelan starter pack
}
# One NDC per medication contributor, with the file that lists it; every spelling must match.
PINNED_NDC = {
    "loop-diuretic": ("00004012101", "rx_2021_11_LoopDiuretic_V1.csv"),     # Bumex 1 MG tablets (PEDSnet)
    "quinine": ("00093300256", NDC_MAP),      # Teva's quinine sulfate 324 MG (the reference's C13 product)
    "laba": ("00085222301", NDC_MAP),         # formoterol / mometasone
    "thiazide-diuretic": ("00006071731", NDC_MAP),                         # hydrochlorothiazide / losartan
    "potassium-sparing-diuretic": ("00025100131", NDC_MAP),                 # spironolactone
    "statin": ("00003517805", NDC_MAP),                                     # pravastatin
    "iron-sucrose": ("00517231005", NDC_MAP),
    "conjugated-estrogens": ("00046074905", NDC_MAP),
    "raloxifene": ("00002418402", NDC_MAP),
    "teriparatide": ("00002840001", NDC_MAP),
    "naproxen": ("00093100501", NDC_MAP),
}


def _files(entry: dict) -> list[str]:
    return [PACK["sources"][s]["file"] for s in entry["s"]]


@pytest.mark.parametrize("cid", list(INGREDIENTS))
def test_every_medication_contributor_has_each_kind_pinned_or_its_gap_said(cid):
    pinned_kinds = {kind for _, kind, _ in PINNED.get(cid, [])} | ({"NDC"} if cid in PINNED_NDC else set())
    gaps = set(PACK["gaps"].get(cid, []))
    for kind in KINDS:
        assert (kind in pinned_kinds) != (kind in gaps), f"{cid}: {kind} neither pinned nor a declared gap"
    if gaps == set(KINDS):
        assert cid in PACK["not_covered"], f"{cid} has no product-level source: the pack must say so"


@pytest.mark.parametrize("cid,code,kind,source", [(c, *p) for c, pins in PINNED.items() for p in pins])
def test_pinned_product_matches_its_contributor_with_its_source(cid, code, kind, source):
    entry = PACK["codes"]["rxnorm"][code]
    assert kind in product_kinds(entry) and any(f.endswith(source) for f in _files(entry))
    ids, how = match_drug([rx(code)], [], K)   # code only, no name on record
    assert cid in ids and how == f"RxNorm {code}"


@pytest.mark.parametrize("cid,ndc,source", [(c, *p) for c, p in PINNED_NDC.items()])
def test_pinned_ndc_matches_in_every_spelling(cid, ndc, source):
    assert any(f.endswith(source) for f in _files(PACK["codes"]["ndc"][ndc]))
    hyphenated = f"{ndc[:5]}-{ndc[5:9]}-{ndc[9:]}"
    ten_digit = f"{ndc[1:5]}-{ndc[5:9]}-{ndc[9:]}" if ndc.startswith("0") else hyphenated   # 4-4-2 form
    for spelling in (ndc, hyphenated, ten_digit):
        assert normalise_ndc(spelling) == ndc
        ids, how = match_drug([concept(NDC, spelling)], [], K)
        assert ids == (cid,) and how == f"NDC {spelling}"


def test_an_unlisted_package_matches_through_its_listed_product_or_sibling_package(capsys):
    """Every package of an NDC product is the same drug: a list naming one package, or the product code
    (OMOP's 9-digit NDC rows), places the others; `knowledge lookup` says which listed code it went by."""
    assert normalise_ndc("0093-3002") == "000933002" and normalise_ndc("71610-021") == "716100021"
    assert "00004012177" not in PACK["codes"]["ndc"] and "00004012101" in PACK["codes"]["ndc"]
    ids, how = match_drug([concept(NDC, "0004-0121-77")], [], K)        # Bumex 1 MG, a package no list names
    assert ids == ("loop-diuretic",) and how == "NDC 0004-0121-77"
    product = PACK["codes"]["ndc"]["016590284"]          # furosemide 40 MG tablet, a 9-digit product row
    assert product["c"] == ["loop-diuretic"] and any(f.endswith("LoopDiuretic_V1.csv") for f in _files(product))
    assert not any(code.startswith("01659028") for code in PACK["codes"]["ndc"] if code != "016590284")
    assert match_drug([concept(NDC, "01659-0284-10")], [], K)[0] == ("loop-diuretic",)
    assert match_drug([concept(NDC, "01659-0285-10")], [], K)[0] == ()  # another product of the labeler
    from cds_hooks.cli import main as cli_main
    assert cli_main(["knowledge", "lookup", "ndc|01659-0284-10"]) == 0
    out = capsys.readouterr().out
    assert "-> loop-diuretic: NDC 016590284 " in out and "(the same product as 01659028410)" in out


def test_quinine_ndcs_agree_with_the_clinical_reference_and_reach_the_brand_concept():
    """The reference (C13) says Teva's quinine NDC 0093-3002 is RxCUI 997010; the FDA NDC Directory as mapped
    by ndc_map says the same of its package, and maps Qualaquin's NDC to 997012, which therefore matches."""
    assert match_drug([concept(NDC, "0093-3002")], [], K)[0] == ("quinine",)   # the reference's product code
    assert PACK["codes"]["ndc"]["00093300256"]["c"] == ["quinine"]
    for code in ("997010", "997012"):
        entry = PACK["codes"]["rxnorm"][code]
        assert entry["c"] == ["quinine"] and any(f.endswith(NDC_MAP) for f in _files(entry))
        assert match_drug([rx(code)], [], K)[0] == ("quinine",)
    assert "t" not in PACK["codes"]["rxnorm"]["997012"]   # its term type is not published where we read it


@pytest.mark.parametrize("cid", ["iron-sucrose", "raloxifene", "teriparatide"])
def test_the_pack_has_no_combination_where_its_gap_note_says_the_ndc_directory_has_none(cid):
    assert "multi-ingredient" in PACK["gaps"][cid] and "no NDC combining" in PACK["not_covered"][cid]
    named = [e["n"] for system in ("rxnorm", "ndc") for e in PACK["codes"][system].values() if cid in e["c"]]
    assert named and not [n for n in named if " / " in n]


def test_gaps_are_computed_truthfully_from_the_pack():
    have: dict[str, set[str]] = {cid: set() for cid in INGREDIENTS}
    for entry in PACK["codes"]["rxnorm"].values():
        for cid in entry["c"]:
            have[cid] |= product_kinds(entry)
    for entry in PACK["codes"]["ndc"].values():
        for cid in entry["c"]:
            have[cid].add("NDC")
    assert {cid: [k for k in KINDS if k not in kinds] for cid, kinds in have.items()
            if set(KINDS) - kinds} == PACK["gaps"]


def test_every_code_names_a_source_with_repository_commit_and_file():
    for system, entries in PACK["codes"].items():
        for code, entry in entries.items():
            assert entry["s"] and entry["c"] and entry["n"], f"{system} {code}"
    for key, src in PACK["sources"].items():
        assert src["repository"].startswith("https://github.com/") and re.fullmatch(r"[0-9a-f]{40}", src["commit"])
        assert src["file"], key
    oids = {s["value_set"]["oid"] for s in PACK["sources"].values() if "oid" in s.get("value_set", {})}
    assert "2.16.840.1.113883.3.526.3.1572" in oids          # High Intensity Statin Therapy
    assert "2.16.840.1.113883.3.464.1003.103.12.1001" in oids  # Diabetes
    assert "2.16.840.1.113762.1.4.1110.19" in oids            # Statin Grouper (cqframework eCQM content)


def test_no_medication_code_maps_to_a_drug_outside_its_class():
    """Each code's published name names an ingredient of every class it maps to, and of no other class:
    a code maps to two classes only when the product contains both (triamterene / HCTZ)."""
    for system in ("rxnorm", "ndc"):
        for code, entry in PACK["codes"][system].items():
            named = set(medication_contributors(entry["n"]))
            if named:   # brand-only names ("Lasix Pill") carry the list's own ingredient column instead
                assert set(entry["c"]) == named, f"{system} {code} {entry['n']}: {entry['c']} vs {named}"
            assert set(entry["c"]) <= set(INGREDIENTS), f"{system} {code}"


def test_combinations_yield_every_class_they_contain_and_nothing_else():
    ids, _ = match_drug([rx("310812")], [], K)   # hydrochlorothiazide 25 MG / triamterene 37.5 MG
    assert set(ids) == {"thiazide-diuretic", "potassium-sparing-diuretic"}
    ids, _ = match_drug([rx("404011")], [], K)   # amlodipine / atorvastatin: amlodipine is not a contributor
    assert ids == ("statin",)
    assert match_drug([rx("197361")], [], K)[0] == ()   # amlodipine 5 MG Oral Tablet alone: nothing


def test_quinidine_is_not_quinine_and_losartan_alone_is_not_a_thiazide():
    assert medication_contributors("quinidine sulfate 200 MG Oral Tablet") == []
    assert match_drug([concept(text="Cozaar 50 mg tablet")], [], K)[0] == ()   # brand of losartan alone
    assert match_drug([concept(text="Hyzaar 50-12.5 tablet")], [], K)[0] == ("thiazide-diuretic",)


def test_quinine_and_laba_combinations_match_by_code_and_brand_with_their_sources():
    """Products the first pack missed: quinine only in combinations, LABA inhalers by drug form and brand."""
    assert PACK["codes"]["rxnorm"]["428423"]["tty_from"] == "source"     # ssmithm lists give the term type
    for code in ("429479", "1007005"):   # aminophylline / quinine (PEDSnet), Aspirin / Quinine (HL7 PDDI-CDS)
        assert match_drug([rx(code)], [], K)[0] == ("quinine",)
    ids, _ = match_drug([rx("745810")], [], K)   # budesonide / formoterol MDI [Symbicort], PEDSnet set
    assert ids == ("laba",)
    assert any(f.endswith("rx_2023_11_COVID19Medications_V1.csv") for f in _files(PACK["codes"]["rxnorm"]["745810"]))
    ids, how = match_drug([concept(text="Breztri Aerosphere 160-9-4.8")], [], K)   # a brand the pack found
    assert ids == ("laba",) and how == "name 'breztri'"
    synthea = PACK["sources"][PACK["codes"]["rxnorm"]["896209"]["s"][0]]
    assert synthea["repository"].endswith("/synthea") and re.fullmatch(r"[0-9a-f]{40}", synthea["commit"])


def test_brand_names_from_the_pack_feed_the_name_fallback():
    assert PACK["brands"]["lasix"]["c"] == ["loop-diuretic"]
    ids, how = match_drug([concept(text="DEMADEX 20 MG TABS")], [], K)   # a brand the pack found
    assert ids == ("loop-diuretic",) and how == "name 'demadex'"
    ids, _ = match_drug([concept(text="Aldactazide 25/25")], [], K)
    assert set(ids) == {"thiazide-diuretic", "potassium-sparing-diuretic"}


# --- conditions ----------------------------------------------------------------------------------

# Codes beyond the clinical reference's examples, one or more per condition contributor, and the contributor.
CONDITION_PINS = [
    (icd("E11.3213"), "diabetes"),        # VSAC Diabetes: retinopathy with macular edema, right eye
    (icd("E10.65"), "diabetes"),
    (sct("421895002"), "peripheral-artery-disease"),  # peripheral vascular disorder due to diabetes
    (sct("13694005"), "neuropathy"),      # sensory polyneuropathy (PEDSnet peripheral neuropathy)
    (sct("126534007"), "neuropathy"),
    (sct("1761006"), "cirrhosis"),        # biliary cirrhosis
    (sct("72892002"), "pregnancy"),       # "Normal pregnancy", the concept Synthea records
    (icd("Z34.83"), "pregnancy"),
    (icd("E03.2"), "hypothyroidism"),
    (sct("191811004"), "alcohol-use-disorder"),   # continuous chronic alcoholism (VSAC Alcohol and Drug Dependence)
    (sct("713862009"), "alcohol-use-disorder"),   # severe alcohol dependence
    (sct("202788007"), "lumbar-spinal-stenosis"),   # degenerative lumbar spinal stenosis (gm-sde)
    (sct("303081002"), "lumbar-spinal-stenosis"),   # neurogenic claudication (IPS free set)
    (sct("35498005"), "venous-insufficiency"),      # stasis dermatitis (IPS free set)
    (sct("15929861000119106"), "venous-insufficiency"),   # venous stasis oedema of both legs (PEDSnet)
    (sct("90791000119104"), "esrd-dialysis"),       # ESRD on dialysis due to type 2 diabetes (PEDSnet)
    (sct("949901000000109"), "chronic-kidney-disease"),   # CKD G3aA2 (PEDSnet)
]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "clinical-reference.md"


@pytest.mark.parametrize("coding,cid", CONDITION_PINS)
def test_condition_descendants_beyond_the_reference_examples(coding, cid):
    ids, _ = match_condition(coding, K)
    target = cid if cid in K.contributors else "chronic-kidney-disease"   # ESRD before its own contributor
    assert target in ids
    if REFERENCE.is_file():   # ../shared, beside the project (CI has it)
        assert coding["coding"][0]["code"] not in REFERENCE.read_text(encoding="utf-8")


@pytest.mark.parametrize("cid", [c for c, con in K.contributors.items() if con.category not in DRUG_CATEGORIES])
def test_every_condition_contributor_has_codes_beyond_the_reference_or_says_why_not(cid):
    if cid in {pinned for _, pinned in CONDITION_PINS}:
        assert cid not in PACK["not_covered"]
    else:
        assert "beyond the" in PACK["not_covered"][cid] or "only the reference" in PACK["not_covered"][cid]


@pytest.mark.parametrize("coding", [
    icd("R73.03"),       # prediabetes
    sct("45004008"),     # not a code in any set: nothing
])
def test_condition_sets_keep_out_what_the_reference_excludes(coding):
    ids, _ = match_condition(coding, K)
    assert "diabetes" not in ids


def test_the_alcohol_set_keeps_its_alcohol_codes_and_leaves_the_other_drugs_out():
    """VSAC Alcohol and Drug Dependence also lists opioid, cannabis … dependence: none of it is alcohol."""
    named = {e["n"] for s in ("snomed", "icd10cm") for e in PACK["codes"][s].values()
             if "alcohol-use-disorder" in e["c"]}
    assert len(named) > 40 and all(re.search("alcohol", n, re.IGNORECASE) for n in named)
    assert "F1120" not in PACK["codes"]["icd10cm"]                      # opioid dependence, in the same set
    assert "alcohol-use-disorder" not in match_condition(icd("F11.20"), K)[0]


WORDS = {"diabetes": "diabet", "pregnancy": "pregnan|gestation|childbirth|puerper|obstetric",
         "chronic-kidney-disease": "kidney|renal|nephropathy", "esrd-dialysis": "kidney|renal|dialysis",
         "peripheral-artery-disease": "peripheral|angiopathy|circulat|vascular|ischemi",
         "neuropathy": "neuropath", "cirrhosis": "cirrho|liver|hepat", "hypothyroidism": "thyroid",
         "alcohol-use-disorder": "alcohol"}


def test_a_condition_code_is_in_two_findings_only_when_it_names_both():
    """Combination codes (type 2 diabetes with peripheral angiopathy) are two findings; nothing else is."""
    for system in ("snomed", "icd10cm"):
        for code, entry in PACK["codes"][system].items():
            if len(entry["c"]) > 1:
                for cid in entry["c"]:
                    assert re.search(WORDS[cid], entry["n"], re.IGNORECASE), f"{system} {code} {entry['n']}: {cid}"
    names = [e["n"].lower() for s in ("snomed", "icd10cm") for e in PACK["codes"][s].values()
             if "neuropathy" in e["c"]]
    assert names and not any("mononeuropathy" in n or "optic" in n for n in names)


def test_esrd_codes_fall_back_to_ckd_until_the_knowledge_has_their_own_contributor():
    entry = PACK["codes"]["snomed"]["236435004"]
    target = "esrd-dialysis" if "esrd-dialysis" in K.contributors else "chronic-kidney-disease"
    assert entry["c"] == ["esrd-dialysis"] and K.snomed["236435004"][-1] == target


def test_the_runtime_index_is_exactly_what_the_cited_pack_derives():
    """Start-up reads terminology.index.json; it must hold nothing the cited pack does not."""
    assert json.loads(index_path(PACK_PATH).read_text(encoding="utf-8")) == runtime_index(PACK)


def test_without_the_pack_product_codes_are_not_known():
    bare = load_knowledge(pack=None)
    assert "214081" not in bare.rxnorm and "214081" in K.rxnorm and RXNORM


def test_a_broken_pack_index_is_a_start_up_error_naming_the_file_and_the_entry(tmp_path):
    pack = tmp_path / "terminology.json"
    pack.write_text(PACK_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    index = json.loads(index_path(PACK_PATH).read_text(encoding="utf-8"))
    index["index"]["rxnorm"]["no-such-class"] = ["1"]
    index["index"]["snomed"]["loop-diuretic"] = ["2"]
    index_path(pack).write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"terminology\.index\.json: index\.rxnorm\['no-such-class'\]: "
                                             r"unknown contributor 'no-such-class'"):
        load_knowledge(pack=pack)
    del index["index"]["rxnorm"]["no-such-class"]
    index_path(pack).write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"index\.snomed\['loop-diuretic'\]: snomed codes cannot name"):
        load_knowledge(pack=pack)


MIRRORS = Path(os.environ.get("CRAMP_TERMINOLOGY_MIRRORS", "/work/.mirror"))


@pytest.mark.skipif(not all((MIRRORS / repo.replace("/", "+")).is_dir() for repo in SNAPSHOTS),
                    reason=f"the public code lists' git snapshots are not all at {MIRRORS} (CRAMP_TERMINOLOGY_MIRRORS)")
def test_the_pack_rebuilds_identically_from_the_snapshots_it_names(tmp_path):
    pytest.importorskip("sas7bdat", reason="the builder's extra reader: pip install -e '.[tools]'")
    out = tmp_path / "terminology.json"
    assert build_main(["--mirrors", str(MIRRORS), "--out", str(out)]) == 0
    assert out.read_bytes() == PACK_PATH.read_bytes()
    assert index_path(out).read_bytes() == index_path(PACK_PATH).read_bytes()
