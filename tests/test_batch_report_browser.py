"""The batch HTML worklist in headless Debian Chromium: what a pharmacist sees, sorts, filters and opens.

The report of the sample population (samples/patients, as of 2026-11-01) is written by the real command
(`cramp-cds review … --format html`) and opened from disk (file://: the page must work with no network).
Required in CI (CRAMP_REQUIRE_BROWSER=1 from .ci/run); skipped with its reason elsewhere without a browser.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser_support import WAIT, by_testid, require_browser

pytestmark = pytest.mark.browser
require_browser()

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from cds_hooks.batch import errors
from cds_hooks.batch.cli import main
from plugin import build_card, review
from tests.builders import NOW

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "patients"
RANKED = ["Patient/sample-quinine", "Patient/sample-lss", "Patient/sample-cirrhosis", "Patient/sample-ckd",
          "Patient/sample-labstrings", "Patient/sample-lasix", "Patient/sample-diabetes", "Patient/sample-asthma",
          "Patient/sample-hctz", "Patient/sample-negation", "Patient/sample-pregnancy", "Patient/sample-esrd",
          "Patient/sample-e1drugs", "Patient/sample-stale", "Patient/sample-ckd3", "Patient/sample-cramps-only"]
LINK = "https://ehr.example.org/patient/{id}"


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("worklist-report")
    plain, named = folder / "worklist.html", folder / "worklist-named.html"
    common = [str(SAMPLES), "--as-of", "2026-11-01", "--quiet", "--patient-link", LINK]
    assert main([*common, "--out", str(plain)]) == errors.OK
    assert main([*common, "--out", str(named), "--identifiers"]) == errors.OK
    return {"plain": plain, "named": named}


def open_report(browser, path: Path) -> None:
    browser.get(path.as_uri())
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def rows(browser) -> list:
    """The patient rows a person can see, top to bottom."""
    return [r for r in browser.find_elements(By.CSS_SELECTOR, '[data-testid="patient-row"]') if r.is_displayed()]


def patients(browser) -> list[str]:
    return [by_testid(r, "patient").find_element(By.CLASS_NAME, "ref").text for r in rows(browser)]


def sort_by(browser, header: str) -> None:
    browser.find_element(By.XPATH, f'//table[@data-testid="worklist"]/thead//button[.="{header}"]').click()


def test_the_worklist_opens_ranked_with_its_denominators_and_names_nobody_by_default(browser, reports):
    open_report(browser, reports["plain"])
    assert "worklist" in browser.title
    assert patients(browser) == RANKED
    assert [by_testid(r, "rank").text for r in rows(browser)] == [str(n) for n in range(1, 17)]
    first = rows(browser)[0]
    assert by_testid(first, "tier").text == "Quinine current"
    assert by_testid(first, "reason").text.startswith("Quinine: quinine sulfate 324 mg capsule at bedtime")
    assert by_testid(browser, "shown-count").text == "Showing 16 of 16 patients"
    assert by_testid(browser, "denominators").text.startswith(
        "Percentages are of the 16 patients reviewed (17 listed, less 1 deceased who are not reviewed).")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Daniel Okafor" not in body and "SAMPLE-CKD" not in body and "1955-11-02" not in body
    assert "run with --identifiers" in body
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="phi-notice"]') == []
    link = by_testid(rows(browser)[3], "patient-link")
    assert link.get_attribute("href") == "https://ehr.example.org/patient/sample-ckd"


def test_sorting_by_a_column_and_back(browser, reports):
    open_report(browser, reports["plain"])
    sort_by(browser, "Patient")
    assert patients(browser) == sorted(RANKED)
    header = browser.find_element(By.CSS_SELECTOR, 'th[data-key="patient"]')
    assert header.get_attribute("aria-sort") == "ascending"
    sort_by(browser, "Patient")
    assert patients(browser) == sorted(RANKED, reverse=True) and header.get_attribute("aria-sort") == "descending"
    sort_by(browser, "Contributors (drug / value / date)")
    counts = [len(r.find_elements(By.CSS_SELECTOR, "ul.contribs > li")) for r in rows(browser)]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 6
    sort_by(browser, "Rank")
    assert patients(browser) == RANKED
    sort_by(browser, "Rank")
    assert patients(browser) == RANKED[::-1]


def test_filters_and_search_narrow_the_list(browser, reports):
    open_report(browser, reports["plain"])
    contributor = Select(by_testid(browser, "filter-contributor"))
    contributor.select_by_visible_text("Thiazide or thiazide-like diuretic")
    assert patients(browser) == ["Patient/sample-lss", "Patient/sample-ckd", "Patient/sample-asthma",
                                 "Patient/sample-hctz"]
    assert by_testid(browser, "shown-count").text == "Showing 4 of 16 patients"
    Select(by_testid(browser, "filter-tier")).select_by_value("3")
    assert patients(browser) == ["Patient/sample-asthma", "Patient/sample-hctz"]
    Select(by_testid(browser, "filter-cramps")).select_by_value("no")
    assert patients(browser) == [] and by_testid(browser, "empty").is_displayed()
    for testid in ("filter-contributor", "filter-tier", "filter-cramps"):
        Select(by_testid(browser, testid)).select_by_value("")
    assert patients(browser) == RANKED and not by_testid(browser, "empty").is_displayed()

    Select(by_testid(browser, "filter-grade")).select_by_value("moderate")
    assert patients(browser) == ["Patient/sample-diabetes", "Patient/sample-asthma", "Patient/sample-hctz",
                                 "Patient/sample-e1drugs", "Patient/sample-stale"]
    Select(by_testid(browser, "filter-grade")).select_by_value("")
    search = by_testid(browser, "search")
    search.send_keys("loop diuretic")
    assert patients(browser) == ["Patient/sample-ckd", "Patient/sample-lasix"]
    search.send_keys(" calcium")    # every word must match
    assert patients(browser) == ["Patient/sample-lasix"]
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.BACKSPACE)
    assert patients(browser) == RANKED


def test_opening_a_patient_shows_what_the_live_card_says(browser, reports):
    open_report(browser, reports["plain"])
    ckd = rows(browser)[3]
    detail = by_testid(ckd, "detail")
    assert not detail.is_displayed()
    button = by_testid(ckd, "open-detail")
    button.click()
    assert detail.is_displayed() and button.text == "Close" and button.get_attribute("aria-expanded") == "true"

    bundle = json.loads((SAMPLES / "ckd-diuretics.json").read_text())
    card = build_card(review([bundle], now=NOW, context={"patientId": "sample-ckd"}), hook="patient-view").body
    assert by_testid(detail, "card-indicator").text == card["indicator"] == "info"
    assert by_testid(detail, "card-summary").text == card["summary"]
    shown = by_testid(detail, "card-detail")
    assert [li.text.split(":")[0] for li in shown.find_elements(By.TAG_NAME, "li")] == [
        "Low potassium", "Thiazide or thiazide-like diuretic", "Loop diuretic", "End-stage renal disease or dialysis"]
    assert shown.find_element(By.TAG_NAME, "strong").text == "Low potassium"   # Markdown rendered, not shown raw
    assert "**" not in shown.text and "Advisory only" in shown.text
    assert "Observation/ckd-obs-k-20261005" in detail.text    # the resource behind the finding
    # the other patients stay folded
    assert [by_testid(r, "detail").is_displayed() for r in rows(browser)].count(True) == 1
    button.click()
    assert not detail.is_displayed() and button.text == "Open"

    only = rows(browser)[-1]
    by_testid(only, "open-detail").click()
    assert by_testid(only, "no-card").text.startswith("No card at chart opening")


def test_identifiers_are_shown_when_asked(browser, reports):
    open_report(browser, reports["named"])
    assert by_testid(browser, "phi-notice").text.startswith("This page shows patient identifiers")
    ckd = rows(browser)[3]
    assert by_testid(ckd, "patient-name").text == "Daniel Okafor"
    assert by_testid(ckd, "patient-identity").text == "MRN SAMPLE-CKD · born 1955-11-02 (70 y) · male"
    by_testid(browser, "search").send_keys("okafor")
    assert patients(browser) == ["Patient/sample-ckd"]
