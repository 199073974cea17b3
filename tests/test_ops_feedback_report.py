"""The feedback report for the people who tune the rules (issue 14 item 6): counts per contributor, week and
override reason from the store (SQLite and PostgreSQL), as CSV and HTML with charts, by the CLI and at
/admin/feedback (off by default, behind its token); never a patient identifier."""
from __future__ import annotations

import base64
import csv
import io
from datetime import UTC, datetime

import pytest

from cds_hooks.cli import main
from cds_hooks.service.validation import FeedbackEntry
from cds_hooks.settings import OVERRIDE_REASON_SYSTEM, SettingsError
from cds_hooks.storage.analytics import summarise
from cds_hooks.storage.database import Database
from cds_hooks.storage.feedback import FeedbackStore
from tests.service_fixtures.support import (
    cramps_on_thiazide_prefetch,
    feedback_entry,
    hook_request,
    make_client,
    make_settings,
    post_hook,
)

ADMIN_TOKEN = "admin-token-0123456789abcdef"
MON_W44 = datetime(2026, 10, 26, 9, tzinfo=UTC)   # ISO week 2026-W44
MON_W45 = datetime(2026, 11, 2, 9, tzinfo=UTC)    # ISO week 2026-W45
PATIENT_KEY = "f" * 64


def override(card: str, reason: str, when: datetime) -> FeedbackEntry:
    return FeedbackEntry(card, "overridden", when, reason_system=OVERRIDE_REASON_SYSTEM, reason_code=reason)


@pytest.fixture
def filled(database_url):
    """Five cards over two weeks with known answers."""
    db = Database(database_url)
    db.migrate()
    store = FeedbackStore(db, suppression_days=30, suppression_reasons=(), reason_system=OVERRIDE_REASON_SYSTEM)
    cards = [("c1", MON_W44, "contributors:laba,statin", ("laba", "statin")),
             ("c2", MON_W44, "contributors:statin", ("statin",)),
             ("c3", MON_W45, "quinine", ("quinine",)),
             ("c4", MON_W45, "contributors:statin", ("statin",)),
             ("c5", MON_W45, "contributors:laba", ("laba",))]
    for uuid_, when, key, contributors in cards:
        store.record_issued(card_uuid=uuid_, service_id="leg-cramp-patient-view", patient=PATIENT_KEY,
                            card_key=key, issued_at=when, indicator="warning" if key == "quinine" else "info",
                            contributors=contributors)
    store.add_feedback("leg-cramp-patient-view", [
        FeedbackEntry("c1", "accepted", MON_W44, accepted_suggestions=("s1",)),
        override("c2", "not-relevant", MON_W44),
        override("c3", "benefit-outweighs-risk", MON_W45),
        override("c3", "benefit-outweighs-risk", MON_W45),  # the same card answered twice counts once
        override("c4", "already-addressed", MON_W45),
    ], MON_W45)
    yield db
    db.close()


def test_counts_per_contributor_week_and_reason(filled):
    summary = summarise(filled, until=datetime(2026, 11, 9, tzinfo=UTC))
    assert (summary.total.issued, summary.total.accepted, summary.total.overridden) == (5, 1, 3)
    statin = summary.by_contributor["statin"]
    assert (statin.issued, statin.accepted, statin.overridden) == (3, 1, 2)
    assert statin.reasons == {"not-relevant": 1, "already-addressed": 1}
    assert summary.by_contributor["quinine"].reasons == {"benefit-outweighs-risk": 1}
    assert list(summary.by_week) == ["2026-W44", "2026-W45"]
    assert summary.by_week["2026-W44"].issued == 2 and summary.by_week["2026-W45"].overridden == 2
    assert summary.by_week_contributor[("2026-W45", "laba")].issued == 1
    since = summarise(filled, since=datetime(2026, 11, 1, tzinfo=UTC), until=datetime(2026, 11, 9, tzinfo=UTC))
    assert since.total.issued == 3 and "2026-W44" not in since.by_week


def test_cli_writes_csv_and_html_without_patient_keys(filled, tmp_path, capsys):
    url = filled.url
    assert main(["feedback-report", "--database", url, "--format", "csv", "--until", "2026-11-09"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    statin = next(r for r in rows if (r["week"], r["contributor"]) == ("all", "statin"))
    assert (statin["issued"], statin["accepted"], statin["overridden"]) == ("3", "1", "2")
    assert statin["overridden:not-relevant"] == "1" and statin["accept_rate"] == "0.333"
    assert next(r for r in rows if r["contributor"] == "all cards")["issued"] == "5"
    out = tmp_path / "report.html"
    assert main(["feedback-report", "--database", url, "--out", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 2 and "statin" in page
    for text in (page, *(",".join(r.values()) for r in rows)):
        assert PATIENT_KEY not in text


def test_cli_on_a_missing_store_is_a_clear_usage_error(tmp_path, capsys):
    assert main(["feedback-report", "--database", str(tmp_path / "nothing.db")]) == 2
    assert "no feedback store" in capsys.readouterr().err


# --- /admin/feedback ----------------------------------------------------------------------------------------

def test_admin_page_is_off_by_default_and_needs_its_token_when_on(tmp_path):
    assert make_client(tmp_path).get("/admin/feedback").status_code == 404
    with pytest.raises(SettingsError, match="CRAMP_ADMIN_TOKEN"):
        make_settings(tmp_path, {"CRAMP_ADMIN": "on"})
    client = make_client(tmp_path, {"CRAMP_ADMIN": "on", "CRAMP_ADMIN_TOKEN": ADMIN_TOKEN})
    refused = client.get("/admin/feedback")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert refused.get_json()["resourceType"] == "OperationOutcome"
    wrong = base64.b64encode(b"pharmacist:not-the-token").decode()
    assert client.get("/admin/feedback", headers={"Authorization": f"Basic {wrong}"}).status_code == 401


def test_admin_page_reports_what_the_service_recorded(tmp_path):
    client = make_client(tmp_path, {"CRAMP_ADMIN": "on", "CRAMP_ADMIN_TOKEN": ADMIN_TOKEN})
    card = post_hook(client, hook_request(prefetch=cramps_on_thiazide_prefetch())).get_json()["cards"][0]
    client.post("/cds-services/leg-cramp-patient-view/feedback",
                json={"feedback": [feedback_entry(card["uuid"], reason="not-relevant")]})
    basic = base64.b64encode(f"pharmacist:{ADMIN_TOKEN}".encode()).decode()
    page = client.get("/admin/feedback", headers={"Authorization": f"Basic {basic}"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "thiazide-diuretic" in page.get_data(as_text=True) and card["uuid"] not in page.get_data(as_text=True)
    sheet = client.get("/admin/feedback?format=csv", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    rows = list(csv.DictReader(io.StringIO(sheet.get_data(as_text=True))))
    thiazide = next(r for r in rows if (r["week"], r["contributor"]) == ("all", "thiazide-diuretic"))
    assert (thiazide["issued"], thiazide["overridden"], thiazide["overridden:not-relevant"]) == ("1", "1", "1")
    bad = client.get("/admin/feedback?since=last-tuesday", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert bad.status_code == 400 and "since" in bad.get_json()["issue"][0]["diagnostics"]


def test_admin_page_is_not_behind_the_ehr_jwt_check(tmp_path):
    import json

    (tmp_path / "clients.json").write_text(json.dumps({"clients": [
        {"iss": "https://ehr.example.org", "jwks_file": "jwks.json"}]}))
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    jwk = {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True), "kid": "k1"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    client = make_client(tmp_path, {"CRAMP_AUTH": "on", "CRAMP_TRUSTED_CLIENTS": str(tmp_path / "clients.json"),
                                    "CRAMP_ADMIN": "on", "CRAMP_ADMIN_TOKEN": ADMIN_TOKEN})
    assert client.get("/cds-services").status_code == 401
    assert client.get("/admin/feedback", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
