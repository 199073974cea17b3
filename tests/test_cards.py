"""The card policy (design.md) and card contents (clinical-reference §3), checked against C1-C6 / G2."""
from __future__ import annotations

import re

from fhir.resources.R4B.servicerequest import ServiceRequest

from plugin import build_card, review
from tests.builders import NOW, bundle, concept, condition, cramps, icd, lab, med_request, patient, rx
from tests.card_checks import assert_valid_card


def card_for(resources, hook="patient-view", context=None, **kw):
    rv = review([patient(), *resources], now=NOW, hook=hook, context=context)
    return build_card(rv, hook=hook, **kw)


def order_context(*drafts, select=None):
    refs = select or [f"MedicationRequest/{d['id']}" for d in drafts]
    return {"patientId": "p1", "userId": "Practitioner/x", "selections": refs, "draftOrders": bundle(*drafts)}


def test_patient_view_silent_without_documented_cramps_by_default():
    assert card_for([med_request("m1", rx("310798"))]) is None
    card = card_for([med_request("m1", rx("310798"))], trigger="any")
    assert card is not None and card.key == "contributors:thiazide-diuretic"
    assert card.body["summary"] == "Leg-cramp review; possible contributor: thiazide or thiazide-like diuretic"


def test_patient_view_card_lists_contributors_with_reason_date_and_grade():
    card = card_for([cramps(), med_request("m1", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"),
                                           authored="2026-05-02"),
                     lab("mg", "2601-3", 0.55, "mmol/L", low=0.7, high=1.1), condition("c", icd("K74.60"))])
    body = card.body
    assert_valid_card(body)
    assert body["indicator"] == "info"
    assert body["summary"] == ("Leg cramps documented; possible contributors: "
                               "low magnesium, thiazide or thiazide-like diuretic, cirrhosis of the liver")
    detail = body["detail"]
    assert "hydrochlorothiazide 25 MG Oral Tablet, active since 2026-05-02" in detail
    assert "MedicationRequest/m1" not in detail and "*Evidence: moderate (E2).*" in detail
    assert body["extension"]["org.cramp-cds.review"]["references"]["thiazide-diuretic"] == ["MedicationRequest/m1"]
    assert "0.55 mmol/L on 2026-10-01" in detail and "0.7-1.1" in detail
    assert "Evidence: strong" in detail                       # cirrhosis
    assert detail.index("magnesium") < detail.index("hydrochlorothiazide") < detail.index("Cirrhosis")
    assert body["extension"]["org.cramp-cds.review"]["contributors"] == [
        "low-magnesium", "thiazide-diuretic", "cirrhosis"]
    assert any(link["url"].startswith("https://pubmed.ncbi.nlm.nih.gov/22157068") for link in body["links"])


def test_documented_cramps_alone_give_no_card():
    assert card_for([cramps()]) is None


def test_active_quinine_warns_on_patient_view_for_anyone():
    card = card_for([med_request("q", rx("9071", "quinine sulfate"))])
    assert card.key == "quinine" and card.body["indicator"] == "warning"
    assert "not FDA-approved for leg cramps" in card.body["summary"]
    assert "suggestions" not in card.body  # nothing to remove on patient-view: it is not a draft
    assert_valid_card(card.body)


def test_quinine_order_select_warns_with_delete_suggestion():
    q = med_request("q1", rx("997010", "quinine sulfate 324 MG Oral Capsule"), status="draft")
    card = card_for([], hook="order-select", context=order_context(q))
    body = card.body
    assert_valid_card(body)
    assert body["indicator"] == "warning" and body["summary"].startswith("Quinine ordered")
    (suggestion,) = body["suggestions"]
    assert suggestion["actions"] == [{
        "type": "delete", "resourceId": "MedicationRequest/q1",
        "description": "Remove the quinine draft order (quinine sulfate 324 MG Oral Capsule)"}]
    assert body["selectionBehavior"] == "any"
    assert "thrombocytopenia" in body["detail"].lower()


def test_order_select_contributor_needs_documented_cramps():
    h = med_request("h1", rx("310798"), status="draft")
    assert card_for([], hook="order-select", context=order_context(h)) is None
    card = card_for([cramps()], hook="order-select", context=order_context(h))
    assert card.body["summary"] == ("Leg cramps documented; ordered thiazide or thiazide-like diuretic may contribute "
                                    "(moderate evidence)")
    assert "(ordered now)" in card.body["detail"]


def test_order_hooks_speak_only_about_the_orders():
    """An unrelated order for a patient with cramps and an active statin: no card on order-select."""
    other = med_request("a1", rx("197361", "Amlodipine 5 MG Oral Tablet"), status="draft")
    assert card_for([cramps(), med_request("s", rx("617312"))], hook="order-select",
                    context=order_context(other)) is None


def test_lab_suggestion_is_a_valid_service_request():
    card = card_for([cramps(), med_request("f", rx("313988", "furosemide 40 MG Oral Tablet"))])
    (suggestion,) = card.body["suggestions"]
    codes = [a["resource"]["code"]["coding"][0]["code"] for a in suggestion["actions"]]
    assert codes == ["2823-3", "19123-9", "17861-6", "2160-0"]
    for action in suggestion["actions"]:
        assert action["type"] == "create"
        ServiceRequest.model_validate(action["resource"])
        assert action["resource"]["subject"] == {"reference": "Patient/p1"}
    assert "routine labs are usually unnecessary" in card.body["detail"].lower()


def test_no_lab_suggestion_when_recent_result_exists():
    card = card_for([cramps(), med_request("f", rx("313988")), lab("k", "2823-3", 4.0, "mmol/L")])
    assert "suggestions" not in card.body


def test_record_text_cannot_inject_markdown_or_html():
    evil = med_request("m1", concept(text="furosemide <script>alert(1)</script> [click](http://x.example)"))
    card = card_for([cramps(), evil])
    detail = card.body["detail"]
    assert "<script>" not in detail and not re.search(r"(?<!\\)\]\(http", detail)


def test_summary_always_under_140_characters():
    meds = [med_request(f"m{i}", rx(code)) for i, code in enumerate(
        ["310798", "9997", "36117", "313988", "617312", "72143", "7258", "4099"])]
    conds = [condition(f"c{i}", icd(code)) for i, code in enumerate(
        ["E11.9", "I70.213", "G62.9", "F10.20", "N18.4", "K74.60", "E03.9", "M48.062", "I87.2", "E86.0"])]
    card = card_for([cramps(), *meds, *conds])
    summary = card.body["summary"]
    assert len(summary) < 140 and "…" not in summary
    assert summary.startswith("Leg cramps documented; possible contributors: potassium-sparing diuretic, ")
    assert re.search(r" \+\d+ more$", summary)  # the top contributors by name, then how many more
    assert_valid_card(card.body)


def test_deceased_patient_gets_no_card():
    rv = review([patient(deceasedBoolean=True), med_request("q", rx("9071"))], now=NOW)
    assert build_card(rv, hook="patient-view") is None


def test_each_card_and_suggestion_gets_its_own_uuid():
    card = card_for([cramps(), med_request("f", rx("313988"))])
    ids = [card.body["uuid"], *(s["uuid"] for s in card.body.get("suggestions", ()))]
    assert len(set(ids)) == len(ids)


def test_ordered_and_already_active_class_is_listed_on_two_lines_but_once_as_contributor():
    active = med_request("h0", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"), authored="2024-01-01")
    draft = med_request("h1", rx("979468", "losartan / hydrochlorothiazide"), status="draft")
    card = card_for([cramps(), active], hook="order-sign", context=order_context(draft))
    assert card.body["extension"]["org.cramp-cds.review"]["contributors"] == ["thiazide-diuretic"]
    assert "(ordered now)" in card.body["detail"] and "active since 2024-01-01" in card.body["detail"]


def test_quinine_card_names_red_flags_without_dosing():
    card = card_for([med_request("q", rx("9071", "quinine"))])
    assert "bleeding" in card.body["detail"] and "Review alternatives" in card.body["detail"]
