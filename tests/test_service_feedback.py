"""Feedback endpoint (checklist F2, F3): validation of every entry before any is stored, durable SQLite storage
(WAL), the entry limit, unknown card uuids."""
from __future__ import annotations

import sqlite3

import pytest

from cds_hooks.app import create_app
from tests.service_fixtures.support import (
    cramps_on_thiazide_prefetch,
    feedback_entry,
    hook_request,
    issue_diagnostics,
    make_settings,
    post_hook,
)

# Date-sensitive: feedback and suppression are stamped with the wall clock.
pytestmark = pytest.mark.date_sensitive

URL = "/cds-services/leg-cramp-patient-view/feedback"


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def rows(settings) -> list[dict]:
    with sqlite3.connect(settings.database_path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY id")]


def issued_card(client) -> dict:
    return post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json()["cards"][0]


def test_f2_accepted_and_overridden_entries_stored_with_200_empty_object(client, settings):
    card = issued_card(client)
    suggestion = card["suggestions"][0]["uuid"]
    body = {"feedback": [
        feedback_entry(card["uuid"], "accepted", reason=None, accepted=[suggestion]),
        {**feedback_entry(card["uuid"], reason="benefit-outweighs-risk"),
         "overrideReason": {"reason": {"code": "benefit-outweighs-risk",
                                       "system": "https://cramp-cds.org/fhir/CodeSystem/override-reason",
                                       "display": "Benefit outweighs risk; will monitor"},
                            "userComment": "discussed with the patient"}},
    ]}
    response = client.post(URL, json=body)
    assert response.status_code == 200
    assert response.get_json() == {}
    stored = rows(settings)
    assert [r["outcome"] for r in stored] == ["accepted", "overridden"]
    assert stored[0]["accepted_suggestions"] == f'["{suggestion}"]'
    assert stored[1]["reason_code"] == "benefit-outweighs-risk" and stored[1]["has_comment"] == 1
    assert all(r["card_uuid"] == card["uuid"] and r["service_id"] == "leg-cramp-patient-view" for r in stored)
    assert "discussed" not in repr(stored), "free-text comments are not stored (they may hold PHI)"


def test_f2_sandbox_style_override_without_display_or_comment_accepted(client, settings):
    entry = {"card": "3b1d4a56-2a3f-4b6e-9d7c-7e1c2f0a9b11", "outcome": "overridden",
             "outcomeTimestamp": "2026-11-01T09:30:00.123+01:00",
             "overrideReason": {"reason": {"code": "already-addressed",
                                           "system": "https://cramp-cds.org/fhir/CodeSystem/override-reason"}}}
    assert client.post(URL, json={"feedback": [entry]}).status_code == 200
    assert rows(settings)[0]["outcome_timestamp"] == "2026-11-01T08:30:00.123000Z", "stored in UTC"


def test_f3_unknown_card_uuid_is_stored_but_cannot_suppress(client, settings):
    response = client.post(URL, json={"feedback": [feedback_entry("00000000-0000-4000-8000-000000000000")]})
    assert response.status_code == 200
    assert len(rows(settings)) == 1
    assert len(post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json()["cards"]) == 1


def test_f3_same_card_may_get_feedback_more_than_once(client, settings):
    card = issued_card(client)
    for _ in range(2):
        assert client.post(URL, json={"feedback": [feedback_entry(card["uuid"], reason=None)]}).status_code == 200
    assert len(rows(settings)) == 2


@pytest.mark.parametrize(("entry", "field"), [
    ({"outcome": "overridden", "outcomeTimestamp": "2026-11-01T09:30:00Z"}, "feedback[0].card"),
    ({"card": "c1", "outcome": "dismissed", "outcomeTimestamp": "2026-11-01T09:30:00Z"}, "feedback[0].outcome"),
    ({"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-11-01T09:30:00Z"},
     "feedback[0].acceptedSuggestions"),
    ({"card": "c1", "outcome": "accepted", "acceptedSuggestions": [{}], "outcomeTimestamp": "2026-11-01T09:30:00Z"},
     "feedback[0].acceptedSuggestions[0].id"),
    ({"card": "c1", "outcome": "overridden"}, "feedback[0].outcomeTimestamp"),
    ({"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-01T09:30:00"},
     "feedback[0].outcomeTimestamp"),
    ({"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-01"}, "feedback[0].outcomeTimestamp"),
    ({"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-13-01T09:30:00Z"},
     "feedback[0].outcomeTimestamp"),
    ({"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-01T09:30:00Z",
      "overrideReason": {"reason": {"code": "not-relevant"}}}, "feedback[0].overrideReason.reason.system"),
    ({"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-01T09:30:00Z",
      "overrideReason": "not relevant"}, "feedback[0].overrideReason"),
    ("just a string", "feedback[0]"),
])
def test_f2_bad_entry_is_400_naming_index_and_field(client, settings, entry, field):
    response = client.post(URL, json={"feedback": [entry]})
    assert response.status_code == 400
    expressions = [i["expression"][0] for i in response.get_json()["issue"]]
    assert field in expressions
    assert rows(settings) == []


def test_f2_all_entries_validated_before_any_is_stored(client, settings):
    good = feedback_entry("c-good")
    bad = {**feedback_entry("c-bad"), "outcome": "maybe"}
    response = client.post(URL, json={"feedback": [good, good, bad]})
    assert response.status_code == 400
    assert "feedback[2].outcome" in issue_diagnostics(response)
    assert rows(settings) == [], "nothing stored when any entry is bad"


@pytest.mark.parametrize("body", [
    feedback_entry("c1"),  # a single entry instead of the feedback[] array (a peer's mistake)
    {"feedback": feedback_entry("c1")},
    [feedback_entry("c1")],
])
def test_f2_body_must_be_object_with_feedback_array(client, body):
    response = client.post(URL, json=body)
    assert response.status_code == 400
    assert "feedback" in issue_diagnostics(response)


def test_f2_too_many_entries_is_413_naming_the_limit(tmp_path):
    client = create_app(make_settings(tmp_path, {"CRAMP_MAX_FEEDBACK_ENTRIES": "2"})).test_client()
    response = client.post(URL, json={"feedback": [feedback_entry(f"c{i}") for i in range(3)]})
    assert response.status_code == 413
    assert "limit of 2" in issue_diagnostics(response)


def test_feedback_for_unknown_service_is_404(client):
    response = client.post("/cds-services/nope/feedback", json={"feedback": []})
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_store_is_sqlite_in_wal_mode_and_durable_across_app_instances(settings):
    client = create_app(settings).test_client()
    assert client.post(URL, json={"feedback": [feedback_entry("c1")]}).status_code == 200
    with sqlite3.connect(settings.database_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = create_app(settings).test_client()  # a second worker / a restart on the same file
    assert again.post(URL, json={"feedback": [feedback_entry("c2")]}).status_code == 200
    assert [r["card_uuid"] for r in rows(settings)] == ["c1", "c2"]


def test_feedback_from_order_sign_service_suppresses_the_same_card_key(client):
    card = issued_card(client)
    response = client.post("/cds-services/leg-cramp-order-sign/feedback",
                           json={"feedback": [feedback_entry(card["uuid"], reason="already-addressed")]})
    assert response.status_code == 200
    assert post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json() == {"cards": []}
