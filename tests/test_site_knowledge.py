"""Site code maps (CRAMP_SITE_KNOWLEDGE, `cramp-cds knowledge import|show|lookup`): a site's local drug id
extends a contributor through the service and the batch review alike; a bad file is a clear start-up error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_hooks.batch.cli import main as review_main
from cds_hooks.cli import main as cli_main
from plugin.knowledge import KnowledgeError, default_knowledge, load_knowledge
from tests.builders import bundle, cramps, med_request, patient
from tests.service_fixtures.support import cramps as service_cramps
from tests.service_fixtures.support import full_prefetch, hook_request, make_client, post_hook

EPIC_ERX = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698288"   # an Epic medication id system, as sites send it
LOCAL_FUROSEMIDE = {"coding": [{"system": EPIC_ERX, "code": "900123", "display": "FUROS 20 TAB"}],
                    "text": "FUROS 20 TAB"}                # no RxNorm, no name the knowledge knows


def site_value_set(path: Path, **changes) -> Path:
    vs = {"resourceType": "ValueSet", "id": "loop-diuretic", "status": "active",
          "compose": {"include": [{"system": EPIC_ERX, "concept": [{"code": "900123", "display": "FUROS 20 TAB"}]}]},
          **changes}
    path.write_text(json.dumps(vs), encoding="utf-8")
    return path


@pytest.fixture
def site_env(tmp_path, monkeypatch):
    """CRAMP_SITE_KNOWLEDGE pointing at a site ValueSet; the cached knowledge is reloaded around the test."""
    monkeypatch.setenv("CRAMP_SITE_KNOWLEDGE", str(site_value_set(tmp_path / "site-drugs.json")))
    default_knowledge.cache_clear()
    yield tmp_path / "site-drugs.json"
    default_knowledge.cache_clear()


def test_without_the_site_map_the_local_id_is_not_recognised(tmp_path):
    client = make_client(tmp_path)
    order = med_request("m1", LOCAL_FUROSEMIDE)
    body = post_hook(client, hook_request(prefetch=full_prefetch(meds=[order], conditions=[service_cramps()])))
    contributors = [c.get("extension", {}).get("org.cramp-cds.review", {}) for c in body.get_json()["cards"]]
    assert "loop-diuretic" not in json.dumps(contributors)


def test_site_value_set_extends_a_contributor_through_the_service(site_env, tmp_path):
    client = make_client(tmp_path)
    order = med_request("m1", LOCAL_FUROSEMIDE)
    response = post_hook(client, hook_request(prefetch=full_prefetch(meds=[order], conditions=[service_cramps()])))
    assert response.status_code == 200
    card = response.get_json()["cards"][0]
    assert "loop-diuretic" in json.dumps(card["extension"])
    assert "**Loop diuretic**" in card["detail"] and "FUROS 20 TAB" in card["detail"]
    assert card["extension"]["org.cramp-cds.review"]["references"]["loop-diuretic"] == ["MedicationRequest/m1"]


def test_site_value_set_extends_a_contributor_in_the_batch_review(site_env, tmp_path, capsys):
    path = tmp_path / "panel.json"
    path.write_text(json.dumps(bundle(patient(), med_request("m1", LOCAL_FUROSEMIDE), cramps())), encoding="utf-8")
    code = review_main([str(path), "--format", "json", "--as-of", "2026-11-01", "--workers", "1", "--quiet"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    found = {f["contributor"]: f for f in doc["patients"][0]["findings"]}
    assert "loop-diuretic" in found and found["loop-diuretic"]["references"] == ["MedicationRequest/m1"]


def test_expansion_and_concept_map_forms_are_read(tmp_path):
    expansion = site_value_set(tmp_path / "exp.json", compose={}, expansion={"contains": [
        {"system": "http://hl7.org/fhir/sid/ndc", "code": "0054-4297-25"},
        {"abstract": True, "contains": [{"system": EPIC_ERX, "code": "900124"}]}]})
    cmap = tmp_path / "cm.json"
    cmap.write_text(json.dumps({"resourceType": "ConceptMap", "id": "multum", "status": "active", "group": [{
        "source": "https://multum.example/drug-id", "target": "https://cramp-cds.org/fhir/CodeSystem/contributor",
        "element": [{"code": "d00070", "target": [{"code": "thiazide-diuretic", "equivalence": "wider"}]},
                    {"code": "d99999", "target": [{"code": "statin", "equivalence": "unmatched"}]}]}]}))
    k = load_knowledge(site=(expansion, cmap))
    assert k.ndc["00054429725"] == ("loop-diuretic",)
    assert k.local_drug[(EPIC_ERX, "900124")] == ("loop-diuretic",)
    assert k.local_drug[("https://multum.example/drug-id", "d00070")] == ("thiazide-diuretic",)
    assert ("https://multum.example/drug-id", "d99999") not in k.local_drug


@pytest.mark.parametrize("changes,message", [
    ({"id": "loop-diuretics"}, "top level ValueSet loop-diuretics: names no known contributor ('loop-diuretics')"),
    ({"compose": {"include": [{"system": EPIC_ERX, "concept": [{"display": "x"}]}]}},
     "compose.include[0].concept[0]: needs a \"code\" string"),
    ({"compose": {"include": [{"system": "http://snomed.info/sct", "concept": [{"code": "1"}]}]}},
     "cannot name 'loop-diuretic', which is a medication"),
    ({"compose": {"include": [{"system": EPIC_ERX, "filter": [{"property": "x", "op": "=", "value": "y"}]}]}},
     "compose.include[0]: filters and value-set references cannot be expanded here"),
    ({"resourceType": "CodeSystem"}, "expected a ValueSet or ConceptMap"),
])
def test_a_bad_site_file_is_an_error_naming_the_file_and_the_entry(tmp_path, changes, message):
    path = site_value_set(tmp_path / "bad.json", **changes)
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(site=(path,))
    assert str(path) in str(err.value) and message in str(err.value)


def test_service_start_up_fails_with_the_site_file_named(tmp_path, monkeypatch, capsys):
    bad = site_value_set(tmp_path / "bad.json", id="nope")
    monkeypatch.setenv("CRAMP_SITE_KNOWLEDGE", str(bad))
    default_knowledge.cache_clear()
    try:
        assert cli_main(["knowledge", "show", "statin"]) == 2
    finally:
        default_knowledge.cache_clear()
    assert f"knowledge error: {bad}: top level ValueSet nope: names no known contributor" in capsys.readouterr().err


def test_cli_import_validates_and_says_what_the_file_adds(tmp_path, capsys):
    good = site_value_set(tmp_path / "good.json")
    assert cli_main(["knowledge", "import", str(good)]) == 0
    out = capsys.readouterr().out
    assert "valid; 1 codes for loop-diuretic (1)" in out and "CRAMP_SITE_KNOWLEDGE=" in out
    bad = site_value_set(tmp_path / "bad.json", id="nope")
    assert cli_main(["knowledge", "import", str(bad)]) == 2
    assert "names no known contributor" in capsys.readouterr().err


def test_cli_lookup_says_which_contributor_and_where_from(capsys):
    assert cli_main(["knowledge", "lookup", "rxnorm|200801"]) == 0
    out = capsys.readouterr().out
    assert "-> loop-diuretic: RxNorm 200801 furosemide 20 MG Oral Tablet [Lasix] [SBD]" in out
    assert "github.com/ssmithm/rxnorm-drug-lists" in out and "antihtn_rxcuis.csv" in out
    assert cli_main(["knowledge", "lookup", "ndc|0004-0121-01"]) == 0
    assert "-> loop-diuretic: NDC 00004012101" in capsys.readouterr().out
    assert cli_main(["knowledge", "lookup", "icd10cm|E11.42"]) == 0
    out = capsys.readouterr().out
    assert "-> diabetes" in out and "2.16.840.1.113883.3.464.1003.103.12.1001" in out and "-> neuropathy" in out
    assert cli_main(["knowledge", "lookup", "rxnorm|197361"]) == 1   # amlodipine alone
    assert cli_main(["knowledge", "lookup", "200801"]) == 2


def test_cli_show_lists_codes_by_term_type_and_their_sources(capsys):
    assert cli_main(["knowledge", "show", "naproxen"]) == 0
    out = capsys.readouterr().out
    assert "rxnorm:" in out and "SBD" in out and "GPCK" in out and "HL7/PDDI-CDS" in out
    assert cli_main(["knowledge", "show", "quinine"]) == 0
    assert "not covered:" in capsys.readouterr().out     # the gap is said, not hidden
    assert cli_main(["knowledge", "show", "no-such-id"]) == 2
