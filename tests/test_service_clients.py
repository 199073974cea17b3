"""Every CDS Hooks 2.0 client (issue 13): lenient where the world is lenient, strict where it matters.

Through the Flask test client: a 2.0 client without FHIR access, case-insensitive ``token_type``, trailing and
doubled slashes on service paths (never a redirect), every error as OperationOutcome (404/405/413/414/431),
the quinine suppression per order, and the card link policy.
"""
from __future__ import annotations

import pytest

from tests.service_fixtures.support import (
    FHIR,
    HYDROCHLOROTHIAZIDE,
    QUININE,
    TOKEN,
    cramps,
    cramps_on_thiazide_prefetch,
    draft_order,
    feedback_entry,
    full_prefetch,
    hook_request,
    issue_diagnostics,
    make_client,
    med_request,
    outcome,
    post_hook,
)


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


def only_card(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    [card] = response.get_json()["cards"]
    return card


def is_outcome(response, status: int) -> None:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json()["resourceType"] == "OperationOutcome"


# --- item 1: a 2.0 client that only prefetches --------------------------------------------------------------

@pytest.mark.parametrize("missing", [{"dispenses": None}, {"statements": None, "dispenses": None}])
def test_p6_supplementary_keys_a_client_left_out_are_reviewed_without_and_the_card_says_so(client, missing):
    prefetch = {k: v for k, v in cramps_on_thiazide_prefetch().items() if k not in missing}
    card = only_card(post_hook(client, hook_request(prefetch=prefetch)))
    assert "Not reviewed: " in card["detail"]
    if "statements" in missing:
        assert "medication statements and dispensing records" in card["detail"]
    else:
        assert "dispensing records" in card["detail"] and "statements" not in card["detail"].split("Not reviewed")[1]
    assert card["extension"]["org.cramp-cds.review"]["notReviewed"] == list(missing)


def test_p6_supplementary_key_answered_with_operation_outcome_is_named_on_the_card(client):
    prefetch = {**cramps_on_thiazide_prefetch(), "statements": outcome("MedicationStatement not supported")}
    card = only_card(post_hook(client, hook_request(prefetch=prefetch)))
    assert "Not reviewed: medication statements" in card["detail"]


def test_p6_complete_prefetch_card_claims_nothing_missing(client):
    card = only_card(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())))
    assert "Not reviewed" not in card["detail"] and "notReviewed" not in card["extension"]["org.cramp-cds.review"]


def test_p7_required_key_left_out_is_still_412(client):
    prefetch = {k: v for k, v in cramps_on_thiazide_prefetch().items() if k != "observations"}
    response = post_hook(client, hook_request(prefetch=prefetch))
    is_outcome(response, 412)
    assert "'observations'" in issue_diagnostics(response)


# --- item 2: lenient where the world is lenient ---------------------------------------------------------------

@pytest.mark.parametrize("token_type", ["bearer", "BEARER", "Bearer"])
def test_token_type_is_case_insensitive(client, token_type):
    body = hook_request(prefetch=cramps_on_thiazide_prefetch(), fhir_server=FHIR, token=TOKEN)
    body["fhirAuthorization"]["token_type"] = token_type
    assert post_hook(client, body).status_code == 200


def test_token_type_other_than_bearer_is_400_naming_the_field(client):
    body = hook_request(prefetch=cramps_on_thiazide_prefetch(), fhir_server=FHIR, token=TOKEN)
    body["fhirAuthorization"]["token_type"] = "MAC"
    response = post_hook(client, body)
    is_outcome(response, 400)
    assert "token_type" in issue_diagnostics(response)


def test_d1_discovery_with_a_trailing_slash_is_discovery(client):
    plain, slashed = client.get("/cds-services"), client.get("/cds-services/")
    assert slashed.status_code == 200 and slashed.get_json() == plain.get_json()


@pytest.mark.parametrize("path", ["/cds-services//leg-cramp-patient-view", "/cds-services/leg-cramp-patient-view/"])
def test_service_paths_with_extra_slashes_are_served_never_redirected(client, path):
    response = client.post(path, json=hook_request(prefetch=cramps_on_thiazide_prefetch()))
    assert response.status_code == 200 and len(response.get_json()["cards"]) == 1


def test_feedback_path_with_extra_slashes_is_served(client):
    card = only_card(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())))
    response = client.post("/cds-services//leg-cramp-patient-view/feedback/",
                           json={"feedback": [feedback_entry(card["uuid"], reason=None)]})
    assert response.status_code == 200


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/cds-services/no-such-service", 404),
    ("GET", "/no/such/page", 404),
    ("GET", "//sandbox//", 404),
    ("DELETE", "/cds-services", 405),
    ("GET", "/cds-services/leg-cramp-patient-view", 405),
])
def test_r4_routing_errors_are_operation_outcomes_never_redirects(client, method, path, status):
    is_outcome(client.open(path, method=method), status)


def test_r4_url_over_the_limit_is_414_operation_outcome(client):
    response = client.get("/cds-services?x=" + "a" * 9000)
    is_outcome(response, 414)
    assert "8192 bytes" in issue_diagnostics(response)


def test_r4_headers_over_the_limit_are_431_operation_outcome(client):
    response = client.get("/cds-services", headers={f"X-Filler-{i}": "b" * 1000 for i in range(40)})
    is_outcome(response, 431)
    assert "32768 bytes" in issue_diagnostics(response)


def test_a_16_kb_authorization_header_is_within_the_header_limit(client):
    """The JWT verifier's own 16 KB token limit must be reachable (it used to be cut by the server first)."""
    response = client.get("/cds-services", headers={"Authorization": "Bearer " + "x" * 16000})
    assert response.status_code == 200  # authentication is off in this profile: the header is simply accepted


def test_r4_body_over_the_limit_is_413_operation_outcome(tmp_path):
    client = make_client(tmp_path, {"CRAMP_MAX_BODY_BYTES": "2048"})
    response = client.post("/cds-services/leg-cramp-patient-view", data=b"{" + b" " * 4096 + b"}",
                           content_type="application/json")
    is_outcome(response, 413)


# --- item 6: suppression per order ---------------------------------------------------------------------------

def quinine_order_select(order_id: str) -> dict:
    return hook_request("order-select", prefetch=full_prefetch(), drafts=[draft_order(order_id, QUININE)])


def override(client, card: dict, service: str = "leg-cramp-order-select") -> None:
    response = client.post(f"/cds-services/{service}/feedback",
                           json={"feedback": [feedback_entry(card["uuid"], reason="already-addressed")]})
    assert response.status_code == 200


def test_quinine_override_silences_only_the_order_it_was_given_on(client):
    override(client, only_card(post_hook(client, quinine_order_select("q-1"))))
    assert post_hook(client, quinine_order_select("q-1")).get_json() == {"cards": []}, "same order: suppressed"
    card = only_card(post_hook(client, quinine_order_select("q-2")))  # a new quinine order warns again
    assert card["indicator"] == "warning" and "Quinine" in card["summary"]


def test_quinine_override_on_an_active_course_does_not_silence_a_new_order(client):
    course = hook_request(prefetch=full_prefetch(meds=[med_request("q-active", QUININE)]))
    override(client, only_card(post_hook(client, course)), "leg-cramp-patient-view")
    assert post_hook(client, course).get_json() == {"cards": []}, "the same active course stays quiet"
    new_order = hook_request("order-sign", prefetch=full_prefetch(meds=[med_request("q-active", QUININE)]),
                             drafts=[draft_order("q-new", QUININE)])
    assert only_card(post_hook(client, new_order))["indicator"] == "warning"


def test_quinine_order_without_an_id_is_never_suppressed(client):
    draft = draft_order("x", QUININE)
    del draft["id"]
    body = hook_request("order-sign", prefetch=full_prefetch(), drafts=[draft])
    override(client, only_card(post_hook(client, body)), "leg-cramp-order-sign")
    assert only_card(post_hook(client, body))["indicator"] == "warning"


def test_contributor_card_suppression_is_unchanged(client):
    body = hook_request(prefetch=full_prefetch(meds=[med_request("h1", HYDROCHLOROTHIAZIDE)], conditions=[cramps()]))
    override(client, only_card(post_hook(client, body)), "leg-cramp-patient-view")
    assert post_hook(client, body).get_json() == {"cards": []}


# --- item 7: link policy -------------------------------------------------------------------------------------

def card_urls(card: dict) -> list[str]:
    return [link["url"] for link in card.get("links", [])] + [card["source"].get("url")]


def test_links_by_default_point_at_their_sources(client):
    card = only_card(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())))
    hosts = {u.split("/")[2] for u in card_urls(card) if u}
    assert len(hosts) >= 1 and card["links"]


def test_link_allow_list_keeps_only_links_to_allowed_hosts(tmp_path):
    default = only_card(post_hook(make_client(tmp_path / "a"), hook_request(prefetch=cramps_on_thiazide_prefetch())))
    first_host = default["links"][0]["url"].split("/")[2]
    allowed = ".".join(first_host.split(".")[-2:])  # the registrable domain: subdomains are allowed too
    client = make_client(tmp_path / "b", {"CRAMP_LINK_HOSTS": allowed})
    card = only_card(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())))
    assert card["links"] and all(link["url"].split("/")[2].endswith(allowed) for link in card["links"])
    assert len(card["links"]) <= len(default["links"])


def test_link_allow_list_with_no_matching_host_leaves_no_links_and_no_empty_array(tmp_path):
    client = make_client(tmp_path, {"CRAMP_LINK_HOSTS": "intranet.hospital.example"})
    card = only_card(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())))
    assert "links" not in card and "url" not in card["source"]


def test_evidence_page_rewrites_every_link_to_one_page(tmp_path):
    page = "https://intranet.hospital.example/cds/leg-cramps"
    client = make_client(tmp_path, {"CRAMP_EVIDENCE_PAGE": page})
    card = only_card(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())))
    assert [link["url"] for link in card["links"]] == [page] and card["source"]["url"] == page


@pytest.mark.parametrize(("name", "value"), [("CRAMP_EVIDENCE_PAGE", "intranet/page"),
                                             ("CRAMP_LINK_HOSTS", "https://pubmed.ncbi.nlm.nih.gov/")])
def test_bad_link_settings_stop_start_up_naming_the_variable(tmp_path, name, value):
    from cds_hooks.settings import SettingsError

    with pytest.raises(SettingsError, match=name):
        make_client(tmp_path, {name: value})
