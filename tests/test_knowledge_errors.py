"""README: "a malformed or inconsistent [knowledge] file is a start-up error naming the file and the entry".

Every check of the loader, each with its exact message ``<file>: <entry>: <problem>`` (tests/test_knowledge.py
keeps the broader cases).
"""
from __future__ import annotations

import json

import pytest

from plugin import KnowledgeError, load_knowledge
from plugin.knowledge import CATEGORIES, DEFAULT_PATH, GRADES


def entry(d: dict, cid: str) -> dict:
    return next(c for c in d["contributors"] if c["id"] == cid)


def lab_of(d: dict) -> dict:
    return entry(d, "low-potassium")["lab"]


CASES = [
    (lambda d: d.update(schema=2), "top level", 'expected an object with "schema": 1'),
    (lambda d: d.update(sources={}), "sources", "expected a non-empty object of source keys"),
    (lambda d: d["sources"].update(E1={"url": "https://x.example"}), "source 'E1'", 'needs a "citation" string'),
    (lambda d: d["sources"].update(E99="just text"), "source 'E99'", 'needs a "citation" string'),
    (lambda d: d["sources"]["E1"].update(url="http://insecure.example"), "source 'E1'",
     "url must be an absolute https URL"),
    (lambda d: d.update(contributors=[]), "contributors", "expected a non-empty list"),
    (lambda d: d["contributors"].insert(0, {"label": "x"}), "contributors[0]", 'needs an "id" string'),
    (lambda d: d["contributors"].insert(1, "statin"), "contributors[1]", 'needs an "id" string'),
    (lambda d: entry(d, "statin").update(label=" "), "contributor 'statin'", 'needs a non-empty "label" string'),
    (lambda d: entry(d, "statin").pop("statement"), "contributor 'statin'", 'needs a non-empty "statement" string'),
    (lambda d: entry(d, "statin").update(category="drug"), "contributor 'statin'",
     f"category must be one of {', '.join(CATEGORIES)}"),
    (lambda d: entry(d, "statin").update(grade="huge"), "contributor 'statin'",
     f"grade must be one of {', '.join(GRADES)}"),
    (lambda d: entry(d, "statin").update(evidence=[]), "contributor 'statin'", 'needs a non-empty "evidence" list'),
    (lambda d: entry(d, "statin").update(code_sources=["C99"]), "contributor 'statin'",
     "cites unknown source 'C99'"),
    (lambda d: entry(d, "statin").update(recent_start_months=0), "contributor 'statin'",
     "recent_start_months must be a positive integer"),
    (lambda d: entry(d, "statin").update(recent_start_months="12"), "contributor 'statin'",
     "recent_start_months must be a positive integer"),
    (lambda d: entry(d, "statin").update(match=[]), "contributor 'statin'", 'needs a non-empty "match" object'),
    (lambda d: entry(d, "statin")["match"].update(loinc=[], ndc=[]), "contributor 'statin'",
     "unknown match keys ['loinc', 'ndc']"),
    (lambda d: entry(d, "statin")["match"].update(rxnorm={"12a": "x"}), "contributor 'statin'",
     "RxNorm code '12a' is not numeric"),
    (lambda d: entry(d, "statin")["match"].update(atc=["c10aa9"]), "contributor 'statin'",
     "ATC code 'C10AA9' is malformed"),
    (lambda d: entry(d, "cirrhosis")["match"].update(icd10cm=["K74-K75-K76"]), "contributor 'cirrhosis'",
     "ICD-10-CM pattern 'K74-K75-K76' is malformed"),
    (lambda d: entry(d, "cirrhosis")["match"].update(icd10cm=["74.6"]), "contributor 'cirrhosis'",
     "ICD-10-CM pattern '74.6' is malformed"),
    (lambda d: entry(d, "cirrhosis")["match"].update(icd10cm=["K74-K75.1"]), "contributor 'cirrhosis'",
     "ICD-10-CM range 'K74-K75.1' needs ends of equal length, low first"),
    (lambda d: entry(d, "cirrhosis")["match"].update(icd10cm=["K75-K74"]), "contributor 'cirrhosis'",
     "ICD-10-CM range 'K75-K74' needs ends of equal length, low first"),
    (lambda d: entry(d, "cirrhosis")["match"].update(snomed={"19943007x": "x"}), "contributor 'cirrhosis'",
     "SNOMED CT code '19943007x' is not numeric"),
    (lambda d: entry(d, "low-potassium").pop("lab"), "contributor 'low-potassium'",
     'an electrolyte needs a "lab" object with "loinc" codes'),
    (lambda d: lab_of(d).update(loinc={}), "contributor 'low-potassium'",
     'an electrolyte needs a "lab" object with "loinc" codes'),
    (lambda d: lab_of(d).update(low=0, low_by_analyte=None), "contributor 'low-potassium'",
     "lab low limit for 'total' must be a positive number"),
    (lambda d: lab_of(d)["loinc"].update({"2823": {}}), "contributor 'low-potassium'",
     "LOINC entry '2823' is malformed"),
    (lambda d: lab_of(d)["loinc"].update({"6298-4": "Potassium"}), "contributor 'low-potassium'",
     "LOINC entry '6298-4' is malformed"),
    (lambda d: lab_of(d)["loinc"].update({"6298-4": {"analyte": "urine"}}), "contributor 'low-potassium'",
     "LOINC 6298-4 names analyte 'urine' without a low limit"),
    (lambda d: lab_of(d)["loinc"].update({"2601-3": {}}), "contributor 'low-magnesium'",
     "LOINC 2601-3 already belongs to low-potassium"),
    (lambda d: entry(d, "statin").update(lab={"loinc": {}}), "contributor 'statin'",
     'only electrolyte contributors may have a "lab"'),
    (lambda d: d.update(contributors=[c for c in d["contributors"] if c["id"] != "quinine"]), "contributors",
     "missing required ids ['quinine']"),
    (lambda d: d.update(monitoring_labs=["2160-0"]), "monitoring_labs", "expected an object of LOINC -> name"),
]


@pytest.mark.parametrize(("mutate", "where", "problem"), CASES, ids=[f"{w}: {p}"[:60] for _, w, p in CASES])
def test_each_knowledge_error_names_file_entry_and_problem(tmp_path, mutate, where, problem):
    data = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "k.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(path)
    assert str(err.value) == f"{path}: {where}: {problem}"


def test_unreadable_and_unparseable_files_say_why(tmp_path):
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(tmp_path / "absent.json")
    assert str(err.value) == f"{tmp_path / 'absent.json'}: cannot read: No such file or directory"
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "schema": 1,\n  oops\n}', encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(bad)
    assert str(err.value) == f"{bad}: not valid JSON: Expecting property name enclosed in double quotes at line 3"


def test_a_valid_copy_loads_with_its_version_and_path(tmp_path):
    data = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    data["version"] = "test-1"
    path = tmp_path / "k.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    k = load_knowledge(path)
    assert (k.version, k.path) == ("test-1", str(path))
    assert load_knowledge(path).contributors.keys() == load_knowledge().contributors.keys()
