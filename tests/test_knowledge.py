"""The knowledge file: complete, cited, and a malformed file is a clear start-up error."""
from __future__ import annotations

import json
import re

import pytest

from plugin import KnowledgeError, load_knowledge
from plugin.knowledge import DEFAULT_PATH, REQUIRED_IDS


def raw():
    return json.loads(DEFAULT_PATH.read_text())


def test_built_in_knowledge_loads_and_covers_every_contributor():
    k = load_knowledge()
    assert REQUIRED_IDS <= set(k.contributors)
    for c in k.contributors.values():
        assert c.evidence and all(key in k.sources for key in c.evidence)
        assert c.statement


def test_key_evidence_sources_have_links():
    """The sources most cards cite link to PubMed / DOI / FDA (the others carry a citation only)."""
    k = load_knowledge()
    for key in ("E1", "E2", "E3", "E4", "E5", "E6"):
        assert k.source_url(key).startswith("https://"), key


def test_statements_stay_within_what_cards_may_say():
    """clinical-reference §3: no dosing, no 'stop', no diagnosis of causation."""
    forbidden = re.compile(r"\b(stop|discontinue|switch|increase|decrease|mg|dose|dosing|caused by|causes cramps)\b",
                           re.IGNORECASE)
    for c in load_knowledge().contributors.values():
        assert not forbidden.search(c.statement), (c.id, c.statement)


def test_unverified_ingredients_are_matched_by_name_only():
    k = load_knowledge()
    for name in ("vilanterol", "olodaterol", "indacaterol", "arformoterol", "iron sucrose", "teriparatide"):
        assert name in k.drug_name_ids, name


def write(tmp_path, data):
    p = tmp_path / "k.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["contributors"].pop(), "missing required ids"),
    (lambda d: d["contributors"][0].update(grade="very strong"), "grade must be one of"),
    (lambda d: d["contributors"][0].update(evidence=["E99"]), "unknown source 'E99'"),
    (lambda d: d["contributors"][1]["match"].update(icd10cm=["E13-E08"]), "low first"),
    (lambda d: d["contributors"][1]["match"].update(rxnorm={"abc": "x"}), "not numeric"),
    (lambda d: d["contributors"][1]["match"].update(atc=["C3"]), "malformed"),
    (lambda d: d["contributors"].append(dict(d["contributors"][0])), "duplicate id"),
    (lambda d: d["contributors"][0].update(match={}), "non-empty \"match\""),
])
def test_malformed_knowledge_names_file_and_entry(tmp_path, mutate, message):
    data = raw()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unparseable_knowledge_file(tmp_path):
    with pytest.raises(KnowledgeError, match="not valid JSON"):
        load_knowledge(write(tmp_path, "{nope"))
    with pytest.raises(KnowledgeError, match="cannot read"):
        load_knowledge(tmp_path / "absent.json")


def test_readme_table_matches_the_knowledge():
    """The README's contributor table is what users read; it must not drift from the data."""
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    for c in load_knowledge().contributors.values():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{c.id}` |")), None)
        assert row is not None, c.id
        if c.category != "trigger":
            assert f"| {c.grade}" in row and ", ".join(c.evidence) in row, row


def test_every_cited_evidence_key_has_a_link():
    """Issue 12: a card links every evidence key it cites; the knowledge must give each one a URL."""
    k = load_knowledge()
    cited = {key for c in k.contributors.values() for key in c.evidence} | {"E1", "E3", "E4", "E21"}  # card text
    assert {key for key in cited if not k.source_url(key)} == set()


def test_grades_match_the_clinical_reference_for_kidney_disease():
    """clinical-reference §1.3: haemodialysis/ESRD is strong (E15); CKD before dialysis has no grade of its own."""
    k = load_knowledge()
    assert k.contributors["esrd-dialysis"].grade == "strong"
    assert k.contributors["chronic-kidney-disease"].grade == "not-established"
    assert k.contributors["esrd-dialysis"].subsumes == ("chronic-kidney-disease",)
    assert "type 2 diabetes" in k.contributors["diabetes"].statement and "type 1" in k.contributors["diabetes"].statement
