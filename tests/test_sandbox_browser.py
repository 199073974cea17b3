"""The /sandbox page in headless Debian Chromium: what a person sees and clicks.

Starts the real app on 127.0.0.1 (Werkzeug ``make_server`` in a thread; local profile, auth off, a temporary
database, the sandbox mounted) and drives ``/usr/bin/chromium`` through ``/usr/bin/chromedriver`` with
Selenium. The driver path is always given, so Selenium Manager never downloads anything.

Needs: ``apt-get install chromium chromium-driver`` and ``pip install selenium`` (skipped otherwise; required
in CI, see tests/browser_support.py).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.browser_support import WAIT, by_testid, require_browser

pytestmark = pytest.mark.browser

require_browser()   # skips without a browser; fails in CI (CRAMP_REQUIRE_BROWSER=1)

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from cds_hooks.sandbox.testing import live_server, sandbox_app


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-app")


@pytest.fixture(scope="module")
def base_url(data_dir):
    with live_server(sandbox_app(data_dir)) as url:
        yield url


def open_page(browser, base_url: str) -> None:
    browser.get(base_url + "/sandbox")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def run_hook(browser, sample: str, hook: str, drug: str | None = None):
    Select(by_testid(browser, "sample-select")).select_by_value(sample)
    by_testid(browser, f"hook-{hook}").click()
    drug_input = by_testid(browser, "drug-input")
    assert drug_input.is_displayed() == (drug is not None)
    if drug is not None:
        drug_input.clear()
        drug_input.send_keys(drug)
    by_testid(browser, "run-button").click()
    WebDriverWait(browser, WAIT).until(  # the run is over when the status turns green or red
        lambda d: {"status-ok", "status-error"} & set(by_testid(d, "status").get_attribute("class").split()))
    return browser.find_elements(By.CSS_SELECTOR, '[data-testid="card"]')


def feedback_rows(data_dir: Path) -> list[tuple]:
    (db,) = list(data_dir.glob("*.db"))
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        table = next(t for t in tables if "feedback" in t)
        return conn.execute(f"SELECT * FROM {table}").fetchall()


def test_patient_view_shows_the_contributors_card_and_dismiss_sends_feedback(browser, base_url, data_dir):
    open_page(browser, base_url)
    assert "cramp-cds" in browser.title
    Select(by_testid(browser, "sample-select")).select_by_value("ckd-diuretics")
    assert "Daniel Okafor" in by_testid(browser, "patient-info").text

    (card,) = run_hook(browser, "ckd-diuretics", "patient-view")
    assert "1 card" in by_testid(browser, "status").text
    assert by_testid(card, "card-indicator").text.lower() == "info"
    assert "badge-info" in by_testid(card, "card-indicator").get_attribute("class")
    assert by_testid(card, "card-summary").text.startswith("Leg cramps documented; possible contributors: low potassium")
    detail = by_testid(card, "card-detail")
    items = [li.text for li in detail.find_elements(By.TAG_NAME, "li")]
    assert [i.split(":")[0] for i in items] == ["Low potassium", "Thiazide or thiazide-like diuretic",
                                                "Loop diuretic", "End-stage renal disease or dialysis"]
    assert detail.find_element(By.TAG_NAME, "strong").text == "Low potassium"  # Markdown rendered, not shown
    assert "**" not in detail.text and "\\[" not in detail.text and "Moles/volume]" in detail.text
    assert "Source: Leg-cramp medication review" in by_testid(card, "card-source").text
    links = by_testid(card, "card-links").find_elements(By.TAG_NAME, "a")
    assert links and all(a.get_attribute("href").startswith("https://") for a in links)

    # the request and the response are there to inspect, folded away
    assert not by_testid(browser, "request-json").is_displayed()
    by_testid(browser, "request-details").find_element(By.TAG_NAME, "summary").click()
    assert '"hook": "patient-view"' in by_testid(browser, "request-json").text
    assert '"patientId": "sample-ckd"' in by_testid(browser, "request-json").text

    # dismiss with a reason → real feedback, recorded by the service
    before = len(feedback_rows(data_dir))
    Select(by_testid(card, "override-reason")).select_by_visible_text("Not relevant for this patient")
    by_testid(card, "override-comment").send_keys("seen in clinic")
    by_testid(card, "dismiss").click()
    status = by_testid(card, "feedback-status")
    WebDriverWait(browser, WAIT).until(lambda d: "recorded" in status.text or "not recorded" in status.text)
    assert status.text == "Dismissed: “Not relevant for this patient”. Feedback recorded (HTTP 200)."
    assert not by_testid(card, "dismiss").is_enabled()
    assert len(feedback_rows(data_dir)) == before + 1
    by_testid(browser, "feedback-details").find_element(By.TAG_NAME, "summary").click()
    sent = by_testid(browser, "feedback-json").text
    assert '"outcome": "overridden"' in sent and '"code": "not-relevant"' in sent and "seen in clinic" in sent


def test_quinine_order_select_shows_the_warning_and_accepting_sends_feedback(browser, base_url, data_dir):
    open_page(browser, base_url)
    (card,) = run_hook(browser, "quinine-cramps", "order-select", "quinine")
    assert by_testid(card, "card-indicator").text.lower() == "warning"
    assert "badge-warning" in by_testid(card, "card-indicator").get_attribute("class")
    assert by_testid(card, "card-summary").text.startswith("Quinine ordered: not FDA-approved for leg cramps")
    assert "Quinine (ordered now): quinine sulfate 324 MG Oral Capsule" in by_testid(card, "card-detail").text

    (suggestion,) = card.find_elements(By.CSS_SELECTOR, '[data-testid="suggestion"]')
    assert suggestion.text == "Remove the quinine draft order"
    before = len(feedback_rows(data_dir))
    suggestion.click()
    status = by_testid(card, "feedback-status")
    WebDriverWait(browser, WAIT).until(lambda d: "recorded" in status.text or "not recorded" in status.text)
    assert status.text.startswith("Accepted “Remove the quinine draft order” (applied: delete MedicationRequest/")
    assert status.text.endswith("Feedback recorded (HTTP 200).")
    assert not suggestion.is_enabled()
    assert len(feedback_rows(data_dir)) == before + 1


def test_a_service_error_is_shown_not_swallowed(browser, base_url):
    open_page(browser, base_url)
    assert run_hook(browser, "cramps-only", "order-sign", "unobtainium") == []
    error = by_testid(browser, "error")
    assert "Could not build the request" in error.text and "e.g. quinine" in error.text
