"""Service invocation end to end through the Flask test client: R1, card shape C1-C6 and G2, the three hooks,
the trigger policy, suppression by feedback, and what the service keeps and logs."""
from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses

from cds_hooks.service.validation import FeedbackEntry
from cds_hooks.settings import OVERRIDE_REASON_SYSTEM
from cds_hooks.storage.feedback import FeedbackStore
from tests.card_checks import assert_valid_card
from tests.service_fixtures.support import (
    ACETAMINOPHEN,
    FUROSEMIDE,
    HYDROCHLOROTHIAZIDE,
    QUININE,
    cramps,
    cramps_on_thiazide_prefetch,
    draft_order,
    feedback_entry,
    full_prefetch,
    hook_request,
    make_client,
    make_settings,
    med_request,
    post_hook,
    prefetch_from,
    searchset,
)

# Date-sensitive: the service reviews as of the wall clock and suppression counts days from it.
pytestmark = pytest.mark.date_sensitive


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


# --- R1 ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
def test_r1_nothing_to_say_is_200_with_empty_cards_array(client, hook):
    response = post_hook(client, hook_request(hook))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"cards": []}


def test_r1_c1_to_c6_g2_patient_view_contributor_card(client):
    response = post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch()))
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["cards"] and len(body["cards"]) == 1, "R1, card policy: at most one card"
    card = body["cards"][0]
    assert_valid_card(card)
    assert card["indicator"] == "info"
    assert "hydrochlorothiazide" in card["detail"].lower()
    actions = [a for s in card["suggestions"] for a in s["actions"]]
    assert {a["resource"]["resourceType"] for a in actions} == {"ServiceRequest"}


def test_c1_c3_c4_order_select_quinine_warning_with_delete_suggestion(client):
    body = hook_request("order-select", drafts=[draft_order("q1", QUININE), draft_order("a1", ACETAMINOPHEN)],
                        selections=["MedicationRequest/q1"])
    cards = post_hook(client, body).get_json()["cards"]
    assert len(cards) == 1
    card = cards[0]
    assert_valid_card(card)
    assert card["indicator"] == "warning"
    deletes = [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert [a["resourceId"] for a in deletes] == ["MedicationRequest/q1"]


def test_order_select_speaks_only_about_selected_orders(client):
    body = hook_request("order-select", drafts=[draft_order("a1", ACETAMINOPHEN), draft_order("q1", QUININE)],
                        selections=["MedicationRequest/a1"])
    assert post_hook(client, body).get_json() == {"cards": []}


def test_order_sign_drafted_loop_diuretic_for_documented_cramps(client):
    body = hook_request("order-sign", drafts=[draft_order("f1", FUROSEMIDE)],
                        prefetch=full_prefetch(conditions=[cramps()]))
    cards = post_hook(client, body).get_json()["cards"]
    assert len(cards) == 1
    assert_valid_card(cards[0])
    assert "furosemide" in cards[0]["detail"].lower()


def test_order_sign_accepts_draft_orders_bundle_with_type_collection(client):
    body = hook_request("order-sign", drafts=[draft_order("q1", QUININE)])
    body["context"]["draftOrders"]["type"] = "collection"
    assert len(post_hook(client, body).get_json()["cards"]) == 1


def test_trigger_policy_documented_is_quiet_without_documented_cramps(tmp_path):
    prefetch = full_prefetch(meds=[med_request("hctz1", HYDROCHLOROTHIAZIDE)])
    quiet = make_client(tmp_path / "a")
    assert post_hook(quiet, hook_request(prefetch=prefetch)).get_json() == {"cards": []}
    chatty = make_client(tmp_path / "b", {"CRAMP_TRIGGER_POLICY": "any"})
    cards = post_hook(chatty, hook_request(prefetch=prefetch)).get_json()["cards"]
    assert len(cards) == 1
    assert_valid_card(cards[0])


def test_active_quinine_warns_on_patient_view_without_documented_cramps(client):
    cards = post_hook(client, hook_request(prefetch=full_prefetch(meds=[med_request("q1", QUININE)]))).get_json()
    assert [c["indicator"] for c in cards["cards"]] == ["warning"]


# --- suppression by feedback ---------------------------------------------------------------------------------

def _card(client, body):
    cards = post_hook(client, body).get_json()["cards"]
    assert len(cards) == 1
    return cards[0]


def _override(client, card_uuid, reason, service="leg-cramp-patient-view"):
    response = client.post(f"/cds-services/{service}/feedback",
                           json={"feedback": [feedback_entry(card_uuid, reason=reason)]})
    assert response.status_code == 200


@pytest.mark.parametrize("reason", ["already-addressed", "benefit-outweighs-risk"])
def test_suppressing_override_hides_the_same_card_for_the_same_patient(client, reason):
    body = hook_request(prefetch=cramps_on_thiazide_prefetch())
    card = _card(client, body)
    _override(client, card["uuid"], reason)
    assert post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json() == {"cards": []}
    # the same card key is suppressed on the other hooks too, but only for this patient
    other = hook_request(prefetch=cramps_on_thiazide_prefetch(), pid="p2")
    other["prefetch"] = {**other["prefetch"], "patient": {"resourceType": "Patient", "id": "p2"}}
    other["prefetch"]["medications"]["entry"][0]["resource"]["subject"]["reference"] = "Patient/p2"
    other["prefetch"]["conditions"]["entry"][0]["resource"]["subject"]["reference"] = "Patient/p2"
    assert len(post_hook(client, other).get_json()["cards"]) == 1


def test_a_new_contributor_is_a_new_card_despite_an_earlier_override(client):
    card = _card(client, hook_request(prefetch=cramps_on_thiazide_prefetch()))
    _override(client, card["uuid"], "already-addressed")
    prefetch = cramps_on_thiazide_prefetch()
    prefetch["medications"]["entry"].append(
        {"resource": med_request("furo1", FUROSEMIDE), "search": {"mode": "match"}})
    (fresh,) = post_hook(client, hook_request(prefetch=prefetch)).get_json()["cards"]
    assert "loop-diuretic" in fresh["extension"]["org.cramp-cds.review"]["contributors"]


@pytest.mark.parametrize("reason", ["not-relevant", "patient-declined", None])
def test_non_suppressing_override_or_no_reason_keeps_the_card(client, reason):
    card = _card(client, hook_request(prefetch=cramps_on_thiazide_prefetch()))
    _override(client, card["uuid"], reason)
    assert len(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json()["cards"]) == 1


def test_override_of_the_contributor_card_does_not_hide_a_quinine_warning(client):
    card = _card(client, hook_request(prefetch=cramps_on_thiazide_prefetch()))
    _override(client, card["uuid"], "already-addressed")
    prefetch = cramps_on_thiazide_prefetch()
    prefetch["medications"]["entry"].append({"resource": med_request("q1", QUININE)})
    cards = post_hook(client, hook_request(prefetch=prefetch)).get_json()["cards"]
    assert [c["indicator"] for c in cards] == ["warning"]


def test_same_patient_id_on_another_fhir_server_is_another_patient(client):
    card = _card(client, hook_request(prefetch=cramps_on_thiazide_prefetch(), fhir_server="https://a.example/fhir"))
    _override(client, card["uuid"], "already-addressed")
    again = hook_request(prefetch=cramps_on_thiazide_prefetch(), fhir_server="https://a.example/fhir")
    assert post_hook(client, again).get_json() == {"cards": []}
    elsewhere = hook_request(prefetch=cramps_on_thiazide_prefetch(), fhir_server="https://b.example/fhir")
    assert len(post_hook(client, elsewhere).get_json()["cards"]) == 1


def test_suppression_window_expires(tmp_path):
    settings = make_settings(tmp_path, {"CRAMP_SUPPRESSION_DAYS": "30"})
    from cds_hooks.app import create_app

    client = create_app(settings).test_client()
    card = _card(client, hook_request(prefetch=cramps_on_thiazide_prefetch()))
    store = FeedbackStore(settings.database_path, suppression_days=30,
                          suppression_reasons=settings.suppression_reasons, reason_system=OVERRIDE_REASON_SYSTEM)
    old = datetime.now(UTC) - timedelta(days=31)
    store.add_feedback("leg-cramp-patient-view", [FeedbackEntry(
        card["uuid"], "overridden", old, reason_system=OVERRIDE_REASON_SYSTEM, reason_code="already-addressed")],
        received_at=old)
    assert len(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json()["cards"]) == 1


def test_suppression_reasons_are_a_setting(tmp_path):
    client = make_client(tmp_path, {"CRAMP_SUPPRESSION_REASONS": "not-relevant"})
    card = _card(client, hook_request(prefetch=cramps_on_thiazide_prefetch()))
    _override(client, card["uuid"], "not-relevant")
    assert post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json() == {"cards": []}


# --- what is kept and what is logged -------------------------------------------------------------------------

def test_issued_cards_recorded_with_hmac_patient_key_never_the_raw_id(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path)
    from cds_hooks.app import create_app

    client = create_app(settings).test_client()
    pid = "patient-zz-98765"
    prefetch = cramps_on_thiazide_prefetch()
    prefetch["patient"]["id"] = pid
    for key in ("medications", "conditions"):
        prefetch[key]["entry"][0]["resource"]["subject"]["reference"] = f"Patient/{pid}"
    response = post_hook(client, hook_request(prefetch=prefetch, pid=pid, fhir_server="https://ehr.example/fhir"))
    card = response.get_json()["cards"][0]
    client.post("/cds-services/leg-cramp-patient-view/feedback",
                json={"feedback": [feedback_entry(card["uuid"], reason="already-addressed")]})
    with sqlite3.connect(settings.database_path) as conn:
        rows = conn.execute("SELECT card_uuid, service_id, patient_key, card_key FROM issued_card").fetchall()
    assert len(rows) == 1
    card_uuid, service_id, patient_key, card_key = rows[0]
    assert (card_uuid, service_id, card_key) == (card["uuid"], "leg-cramp-patient-view",
                                                "contributors:thiazide-diuretic")
    assert len(patient_key) == 64 and pid not in patient_key
    raw = b"".join(p.read_bytes() for p in settings.database_path.parent.glob("cramp.db*"))
    assert pid.encode() not in raw, "the store never keeps raw patient identifiers"
    assert pid not in caplog.text, "logs never contain patient ids"


def test_request_id_returned_and_one_access_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="cramp_cds.access")
    response = post_hook(client, hook_request())
    request_id = response.headers["X-Request-ID"]
    assert str(uuid.UUID(request_id)) == request_id
    lines = [r.getMessage() for r in caplog.records if r.name == "cramp_cds.access"]
    assert len(lines) == 1
    line = lines[0]
    assert f"request_id={request_id}" in line and "method=POST" in line and "status=200" in line
    assert "path=/cds-services/leg-cramp-patient-view" in line and "duration_ms=" in line
    assert "p1" not in line.split("path=")[0]


# --- the project's sample hook requests (samples/hooks) ------------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _sample(name: str) -> dict:
    path = SAMPLES / "hooks" / name
    if not path.is_file():
        pytest.skip(f"sample {path} not written yet")
    body = json.loads(path.read_text())
    if "prefetch" in body and "statements" not in body["prefetch"]:
        # The service declares a "statements" template; a request that leaves the key out with no fhirServer is
        # answered 412 (P7, see test below). Fill it the way a client would: an empty searchset.
        body["prefetch"]["statements"] = searchset()
    return body


@pytest.mark.parametrize(("name", "indicator", "words"), [
    ("patient-view.json", "info", "potassium"),
    ("order-select-quinine.json", "warning", "quinine"),
])
def test_r1_c1_sample_hook_requests_with_prefetch(client, name, indicator, words):
    body = _sample(name)
    response = post_hook(client, body)
    assert response.status_code == 200, response.get_json()
    [card] = response.get_json()["cards"]
    assert_valid_card(card)
    assert card["indicator"] == indicator and words in card["detail"].lower()


def test_p7_sample_order_sign_fetches_everything_from_its_fhir_server(client):
    body = _sample("order-sign-hctz.json")
    bundle = json.loads((SAMPLES / "patients" / "hctz-no-labs.json").read_text())
    base = body["fhirServer"].rstrip("/")
    data = prefetch_from([e["resource"] for e in bundle["entry"]], body["context"]["patientId"], base)
    paths = {"patient": f"/Patient/{body['context']['patientId']}", "medications": "/MedicationRequest",
             "statements": "/MedicationStatement", "dispenses": "/MedicationDispense",
             "administrations": "/MedicationAdministration", "conditions": "/Condition",
             "observations": "/Observation"}
    with responses.RequestsMock() as rsps:
        for key, value in data.items():
            rsps.add(responses.GET, base + paths[key], json=value)
        response = post_hook(client, body)
        bearer = {c.request.headers["Authorization"] for c in rsps.calls}
    assert response.status_code == 200, response.get_json()
    [card] = response.get_json()["cards"]
    assert_valid_card(card)
    assert "hydrochlorothiazide" in card["detail"].lower() or "thiazide" in card["summary"].lower()
    assert card["suggestions"], "no labs on record: the lab suggestion appears"
    assert bearer == {f"Bearer {body['fhirAuthorization']['access_token']}"}


def test_p7_prefetch_missing_a_declared_key_without_fhir_server_is_412(client):
    body = hook_request(prefetch=cramps_on_thiazide_prefetch())
    del body["prefetch"]["conditions"]
    response = post_hook(client, body)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.conditions"]


def test_p7_supplementary_keys_may_be_missing_without_fhir_server(client):
    """statements and dispenses are optional: without them and without fhirServer, the review goes on."""
    body = hook_request(prefetch=cramps_on_thiazide_prefetch())
    del body["prefetch"]["statements"], body["prefetch"]["dispenses"]
    response = post_hook(client, body)
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1
