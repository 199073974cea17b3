"""The card at its limits (issue 18): the 140-character summary boundary, what is listed first, the sentence
that says cramps are documented, when suggestions and links appear, and what makes two cards "the same".

Complements tests/test_cards.py; assertions are on behaviour meant to last (order, presence, limits), not on
the exact wording of a summary.
"""
from __future__ import annotations

import json
import re

import pytest

from plugin import build_card, review
from plugin.cards import md
from plugin.knowledge import DEFAULT_PATH, load_knowledge
from plugin.rules import Finding, Review
from tests.builders import NOW, bundle, condition, cramps, icd, lab, med_request, patient, rx
from tests.card_checks import assert_valid_card
from tests.conftest import ROOT


def order_context(*drafts, hook="order-sign"):
    ctx = {"patientId": "p1", "userId": "Practitioner/x", "draftOrders": bundle(*drafts)}
    if hook == "order-select":
        ctx["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts]
    return ctx


def card_for(resources, hook="patient-view", context=None, **kw):
    return build_card(review([patient(), *resources], now=NOW, hook=hook, context=context), hook=hook, **kw)


def synthetic(label: str, *, n: int = 1) -> dict:
    """A contributors card whose summary grows by one character per character of ``label``."""
    findings = [Finding(contributor=cid, category="medication", label=f"{label}{i}" if i else label, grade="weak",
                        sources=("E2",), reason="simvastatin, active", references=("MedicationRequest/m1",))
                for i, cid in enumerate(["statin", "laba"][:n])]
    card = build_card(Review(patient="Patient/p1", findings=findings), hook="patient-view", trigger="any")
    assert card is not None
    return card.body


def test_c1_summary_is_composed_to_fit_and_never_cut():
    """Issue 12: names are shown whole while they fit, up to the last character of room; never cut mid-word."""
    summaries = {k: synthetic("x" * k)["summary"] for k in range(1, 160)}
    assert all(len(s) < 140 and "…" not in s for s in summaries.values())
    fits = [k for k, s in summaries.items() if "x" * k in s]
    assert fits == list(range(1, max(fits) + 1))
    assert len(summaries[max(fits)]) == 139  # 139 characters fit; 140 do not
    assert all(s.endswith("1 listed below") for k, s in summaries.items() if k > max(fits))


def test_leg_cramps_documented_sentence_names_the_record():
    card = card_for([cramps(), med_request("m1", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"))])
    detail = card.body["detail"]
    assert "Leg cramps documented" in detail and "Sleep related leg cramps" in detail
    undocumented = card_for([med_request("m1", rx("310798"))], trigger="any").body["detail"]
    assert "Leg cramps documented" not in undocumented


def test_ordered_drugs_are_listed_before_those_already_on_record():
    active = med_request("h0", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"), authored="2024-01-01")
    draft = med_request("s1", rx("617312", "simvastatin 20 MG Oral Tablet"), status="draft")
    card = card_for([cramps(), active], hook="order-sign", context=order_context(draft))
    assert card.body["extension"]["org.cramp-cds.review"]["contributors"] == ["statin", "thiazide-diuretic"]
    detail = card.body["detail"]
    assert detail.index("simvastatin") < detail.index("hydrochlorothiazide")
    assert card.key == "contributors:statin,thiazide-diuretic"


def test_quinine_comes_first_and_other_contributors_follow():
    q = med_request("q1", rx("997010", "quinine sulfate 324 MG Oral Capsule"), status="draft")
    active = med_request("h0", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"))
    card = card_for([cramps(), active], hook="order-select", context=order_context(q, hook="order-select"))
    assert card.key == "quinine" and card.body["indicator"] == "warning"
    assert card.contributors == ("quinine", "thiazide-diuretic")
    assert card.body["detail"].index("quinine") < card.body["detail"].index("hydrochlorothiazide")


def test_order_hooks_ignore_an_unordered_quinine_for_the_warning():
    """On order hooks the quinine warning is about the order; quinine already on record does not fire it."""
    on_record = med_request("q0", rx("997010", "quinine sulfate 324 MG Oral Capsule"))
    other = med_request("a1", rx("197361", "Amlodipine 5 MG Oral Tablet"), status="draft")
    assert card_for([on_record], hook="order-select", context=order_context(other, hook="order-select")) is None
    assert card_for([on_record]).key == "quinine"  # patient-view: active quinine warns


def test_same_contributors_same_key_new_contributor_new_key():
    a = card_for([cramps(), med_request("h", rx("310798"))])
    b = card_for([cramps(), med_request("h2", rx("310798", "chlorthalidone"))])
    c = card_for([cramps(), med_request("h", rx("310798")), condition("c", icd("K74.60"))])
    assert a.key == b.key == "contributors:thiazide-diuretic"
    assert c.key == "contributors:cirrhosis,thiazide-diuretic"


def test_lab_suggestion_needs_a_listed_diuretic_and_can_be_turned_off():
    diuretic = [cramps(), med_request("f", rx("313988", "furosemide 40 MG Oral Tablet"))]
    assert "suggestions" in card_for(diuretic).body
    body = card_for(diuretic, suggest_labs=False).body
    assert "suggestions" not in body and "selectionBehavior" not in body
    assert "consider electrolytes" in body["detail"]  # the advice stays; only the one-click orders go
    statin_only = card_for([cramps(), med_request("s", rx("617312"))]).body
    assert "suggestions" not in statin_only and "consider electrolytes" not in statin_only["detail"]


def test_order_select_lab_suggestion_follows_the_listed_diuretic():
    draft = med_request("f1", rx("313988", "furosemide 40 MG Oral Tablet"), status="draft")
    card = card_for([cramps()], hook="order-select", context=order_context(draft, hook="order-select"))
    (suggestion,) = card.body["suggestions"]
    assert [a["type"] for a in suggestion["actions"]] == ["create"] * 4


def test_every_cited_key_is_linked_and_labelled():
    meds = [med_request(f"m{i}", rx(code)) for i, code in enumerate(["310798", "36117", "313988", "617312", "9997"])]
    conds = [condition(f"c{i}", icd(code)) for i, code in enumerate(["K74.60", "N18.4", "M48.062", "G62.9"])]
    body = card_for([cramps(), *meds, *conds, lab("k", "2823-3", 3.0, "mmol/L")]).body
    assert_valid_card(body)  # card_checks: a link for every evidence key the card cites
    assert {"E2", "E14", "E11", "E21"} <= {link["label"].split(":")[0] for link in body["links"]}
    assert all(len(link["label"]) <= 120 and link["type"] == "absolute" for link in body["links"])
    assert len({link["url"] for link in body["links"]}) == len(body["links"])


def test_references_stay_in_the_extension_not_in_the_sentences():
    meds = [med_request(f"m{i}", rx("310798", f"hydrochlorothiazide {i}")) for i in range(1, 6)]
    body = card_for([cramps(), *meds]).body
    assert "MedicationRequest/" not in body["detail"] and " …" not in body["detail"]
    refs = body["extension"]["org.cramp-cds.review"]["references"]["thiazide-diuretic"]
    assert refs == [f"MedicationRequest/m{i}" for i in range(1, 6)]


def test_unknown_trigger_policy_is_refused():
    rv = review([patient(), cramps(), med_request("h", rx("310798"))], now=NOW)
    with pytest.raises(ValueError, match="trigger policy"):
        build_card(rv, hook="patient-view", trigger="sometimes")


def test_every_contributor_line_shows_its_evidence_grade_and_sources():
    body = synthetic("statin-like", n=2)
    assert body["detail"].count("*Evidence: weak (E2).*") == 2
    assert body["summary"].count("statin-like") == 2


def test_override_reasons_are_the_readme_table():
    """README: override reasons have stable codes (system and the four codes with their displays)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    system = "https://cramp-cds.org/fhir/CodeSystem/override-reason"
    assert f"`{system}`" in readme
    section = readme.split("| code | display |", 1)[1].split("\n\n", 1)[0]
    table = dict(re.findall(r"^\| `([a-z-]+)` \| ([^|]+?) \| (?:yes|no)", section, re.MULTILINE))
    body = card_for([cramps(), med_request("h", rx("310798"))]).body
    assert {r["code"]: r["display"] for r in body["overrideReasons"]} == table
    assert {r["system"] for r in body["overrideReasons"]} == {system} and len(table) == 4


def test_suggestion_and_source_texts():
    q = med_request("q1", rx("997010", "quinine sulfate 324 MG Oral Capsule"), status="draft")
    quinine = card_for([], hook="order-select", context=order_context(q, hook="order-select")).body
    (remove,) = quinine["suggestions"]
    assert remove["label"] == "Remove the quinine draft order"
    assert quinine["source"]["topic"]["code"] == "quinine-warning"
    body = card_for([cramps(), med_request("f", rx("313988", "furosemide 40 MG Oral Tablet"))]).body
    (labs,) = body["suggestions"]
    assert labs["label"] == "Propose potassium, magnesium, calcium and creatinine tests"
    assert [a["description"] for a in labs["actions"]] == [
        "Propose a potassium test", "Propose a magnesium test", "Propose a calcium test", "Propose a creatinine test"]
    assert body["source"]["label"] == "Leg-cramp medication review (cramp-cds)"
    assert body["source"]["topic"] == {"system": "https://cramp-cds.org/fhir/CodeSystem/card-topic",
                                       "code": "leg-cramp-contributors",
                                       "display": "Possible contributors to leg cramps"}
    assert body["source"]["url"].startswith("https://")
    assert body["extension"]["org.cramp-cds.review"]["knowledgeVersion"]


def test_markdown_escaping_of_record_text():
    assert md("a  b\n\t c") == "a b c"
    assert md(r"\`*_{}[]<>|~") == r"\\\`\*\_\{\}\[\]\<\>\|\~"
    assert md("plain text, 3.5 mmol/L (low) - ok") == "plain text, 3.5 mmol/L (low) - ok"


def test_fhir_references_are_never_in_the_sentences():
    card = card_for([cramps(), med_request("h-1.a", rx("310798", "hctz"))])
    assert "h-1.a" not in card.body["detail"] and "**Thiazide or thiazide-like diuretic**: hctz" in card.body["detail"]
    odd = Finding(contributor="statin", category="medication", label="Statin", grade="weak", sources=("E2",),
                  reason="simvastatin", references=("urn:uuid:a_b",))
    body = build_card(Review(patient="Patient/p1", findings=[odd]), hook="patient-view", trigger="any").body
    assert "urn:uuid" not in body["detail"]
    assert body["extension"]["org.cramp-cds.review"]["references"] == {"statin": ["urn:uuid:a_b"]}


def test_lab_suggestion_for_a_review_without_a_patient_reference():
    thiazide = Finding(contributor="thiazide-diuretic", category="medication", label="Thiazide", grade="moderate",
                       sources=("E2",), reason="hctz, active", references=("MedicationRequest/m1",))
    rv = Review(patient=None, findings=[thiazide], monitoring_gap=True)
    (labs,) = build_card(rv, hook="patient-view", trigger="any").body["suggestions"]
    assert {a["resource"]["subject"]["reference"] for a in labs["actions"]} == {"Patient/unknown"}


def test_summary_lists_labels_once_joined_by_commas():
    assert synthetic("alpha", n=2)["summary"].endswith(": alpha, alpha1")


def test_summary_names_what_fits_and_counts_the_rest():
    summaries = [synthetic("x" * k, n=2)["summary"] for k in range(30, 150)]
    assert all(len(s) < 140 and "…" not in s for s in summaries)
    one_shown = [s for s in summaries if s.endswith(" +1 more")]
    assert one_shown and all(", " not in s.split(": ", 1)[1] for s in one_shown)
    assert max(len(s) for s in summaries if "x1" in s) <= 139


def test_card_lines_name_drugs_never_fhir_ids():
    three = [med_request(f"m{i}", rx("310798", f"hctz {i}")) for i in range(1, 5)]
    body = card_for([cramps(), *three]).body
    assert "MedicationRequest/" not in body["detail"] and "hctz 1" in body["detail"]
    assert body["extension"]["org.cramp-cds.review"]["contributors"] == ["thiazide-diuretic"]


def test_each_line_shows_all_its_sources_and_only_orders_say_ordered_now():
    draft = med_request("s1", rx("617312", "simvastatin 20 MG Oral Tablet"), status="draft")
    card = card_for([cramps(), med_request("h0", rx("310798", "hctz")), lab("k", "2823-3", 3.0, "mmol/L")],
                    hook="order-sign", context=order_context(draft))
    lines = {line.split("**")[1]: line for line in card.body["detail"].splitlines() if line.startswith("- **")}
    assert "(ordered now)" in lines["Statin"]
    assert not [name for name, line in lines.items() if name != "Statin" and "(ordered now)" in line]
    assert "*Evidence: strong (E3, E1).*" in lines["Low potassium"]


def test_active_quinine_is_listed_once_and_said_to_be_active():
    body = card_for([cramps(), med_request("q", rx("9071", "quinine sulfate"))]).body
    assert body["summary"].startswith("Active quinine")
    assert body["detail"].count("- **Quinine") == 1


def _knowledge_with_source(tmp_path, key: str, **changes):
    data = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    data["sources"][key] = {k: v for k, v in {**data["sources"][key], **changes}.items() if v is not None}
    path = tmp_path / "k.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return load_knowledge(path)


def test_link_labels_come_from_the_source_label_or_the_citation_and_stay_short(tmp_path):
    rv = review([patient(), cramps(), med_request("h", rx("310798"))], now=NOW)
    default = {link["label"] for link in build_card(rv, hook="patient-view").body["links"]}
    assert "E2: Garrison et al., Leg cramps and prior prescriptions (Arch Intern Med 2012)" in default
    unlabelled = _knowledge_with_source(tmp_path, "E2", label=None, citation="First sentence. Second sentence.")
    labels = {link["label"] for link in build_card(rv, hook="patient-view", knowledge=unlabelled).body["links"]}
    assert "E2: First sentence" in labels
    long = _knowledge_with_source(tmp_path, "E2", label="y" * 300)
    (e2,) = [link["label"] for link in build_card(rv, hook="patient-view", knowledge=long).body["links"]
             if link["label"].startswith("E2: ")]
    assert e2 == ("E2: " + "y" * 300)[:120]


def test_words_within_cuts_at_a_word_and_marks_the_cut():
    from plugin.cards import _words_within

    assert _words_within("a" * 139, 140) == "a" * 139
    cut = _words_within("word, " * 30, 140)
    assert len(cut) < 140 and cut.endswith("word…") and " " in cut
    assert _words_within("x" * 100 + " " + "y" * 60, 140) == "x" * 100 + "…"


def test_card_texts_keep_their_case():
    diuretic = card_for([cramps(), med_request("f", rx("313988", "furosemide 40 MG Oral Tablet"))]).body["detail"]
    assert diuretic.startswith("Possible contributors to leg cramps on the record.")
    assert "Routine labs are usually unnecessary for typical nocturnal leg cramps (E1)." in diuretic
    assert "Nightly calf and hamstring stretching is a low-risk option" in diuretic


def test_several_classes_ordered_at_once_have_varied_evidence():
    drafts = [med_request("d1", rx("310798", "hctz"), status="draft"),
              med_request("d2", rx("617312", "simvastatin"), status="draft")]
    card = card_for([cramps()], hook="order-sign", context=order_context(*drafts))
    assert "varied evidence" in card.body["summary"]
