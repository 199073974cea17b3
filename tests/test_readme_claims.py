"""The README's promises, claim by claim (issue 18): each test fails when the claim it names stops being true.

Claims already pinned elsewhere are not repeated here (the card's 140 characters: tests/test_cards.py; the
sandbox CLI's exit statuses: tests/test_sandbox_cli.py; the X1-X7 authentication rules: tests/test_auth.py;
413/415/412 naming what was wrong: tests/test_service_errors.py and tests/test_service_prefetch.py). Numbers
the README states (exit statuses, defaults) are written here as literals, not imported, so that changing the
code's constant without the README fails.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import responses

from cds_hooks.batch.cli import main as review_main
from cds_hooks.settings import Settings
from tests.builders import bundle, condition, cramps, icd, lab, med_request, patient, rx
from tests.conftest import ROOT
from tests.service_fixtures.support import (
    FHIR,
    HYDROCHLOROTHIAZIDE,
    SECRET,
    TOKEN,
    feedback_entry,
    full_prefetch,
    hook_request,
    make_client,
    post_hook,
    potassium,
)
from tests.service_fixtures.support import cramps as service_cramps
from tests.service_fixtures.support import med_request as service_med_request

README = (ROOT / "README.md").read_text(encoding="utf-8")
AS_OF = "2026-11-01"


def settings_table() -> dict[str, str]:
    """README's Settings table: variable -> its default cell (``A / B`` rows split into both variables)."""
    rows: dict[str, str] = {}
    section = README.split("### Settings", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`(CRAMP_[A-Z_]+)`", cells[0]) if len(cells) >= 3 else []
        defaults = cells[1].split(" / ") if len(names) > 1 else [cells[1]] if names else []
        for name, default in zip(names, defaults, strict=False):
            rows[name] = default
    return rows


def local_settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path / "var"),
                              "CRAMP_SECRET_KEY": SECRET, **env})


# --------------------------------------------------------------------------- the settings table


def test_every_documented_setting_is_read_by_the_code():
    code = "".join(p.read_text(encoding="utf-8") for d in ("cds_hooks", "plugin") for p in (ROOT / d).rglob("*.py"))
    read = set(re.findall(r"[\"'](CRAMP_[A-Z_]+)[\"']", code))
    assert settings_table(), "the Settings table was not found in README.md"
    assert set(settings_table()) - read == set(), "settings README.md documents but the code never reads"


# Lines that run other programs (their options are theirs).
FOREIGN_COMMAND = re.compile(r"\b(docker|curl|git|pip|npm|pytest|gunicorn|psql|apt-get|java|spark-submit)\b")


def test_every_documented_command_line_option_exists():
    """Each `--option` README.md or docs/ shows is accepted by one of the project's command-line parsers."""
    docs = README + "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    ours = [line for line in docs.splitlines() if not FOREIGN_COMMAND.search(line)]
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*[a-z])", "\n".join(ours)))
    sources = [*(ROOT / "cds_hooks").rglob("*.py"), *(ROOT / "tools").glob("*.py"),
               *(ROOT / "benchmarks").glob("*.py")]
    accepted = set(re.findall(r"add_argument\(\s*[\"'](--[a-z-]+)[\"']",
                              "".join(p.read_text(encoding="utf-8") for p in sources)))
    assert {"--no-validate", "--lab-lookback-days", "--as-of"} <= documented
    assert documented - accepted == set(), "options the documentation shows but no parser accepts"


@pytest.mark.parametrize(("variable", "attribute", "value", "readme"), [
    ("CRAMP_PORT", "port", 8080, "`8080`"),
    ("CRAMP_HOST", "host", "127.0.0.1", "`127.0.0.1`"),
    ("CRAMP_TRIGGER_POLICY", "trigger_policy", "documented", "`documented`"),
    ("CRAMP_LAB_LOOKBACK_DAYS", "lab_lookback_days", 365, "`365`"),
    ("CRAMP_LAB_SUGGESTION_MONTHS", "lab_suggestion_months", 12, "`12`"),
    ("CRAMP_SUPPRESSION_DAYS", "suppression_days", 30, "`30`"),
    ("CRAMP_SUPPRESSION_REASONS", "suppression_reasons", ("already-addressed", "benefit-outweighs-risk"),
     "`already-addressed,benefit-outweighs-risk`"),
    ("CRAMP_FHIR_CONNECT_TIMEOUT", "fhir_connect_timeout", 0.5, "`0.5`"),
    ("CRAMP_FHIR_READ_TIMEOUT", "fhir_read_timeout", 1.5, "`1.5` s"),
    ("CRAMP_FHIR_BUDGET", "fhir_budget_seconds", 1.5, "`1.5` s"),
    ("CRAMP_FHIR_MAX_RESPONSE_BYTES", "fhir_max_response_bytes", 33554432, "`33554432`"),
    ("CRAMP_PREFETCH_DATE_TOKENS", "prefetch_date_tokens", False, "`off`"),
    ("CRAMP_FHIR_MAX_PAGES", "fhir_max_pages", 10, "`10`"),
    ("CRAMP_MAX_BODY_BYTES", "max_body_bytes", 5242880, "`5242880`"),
    ("CRAMP_MAX_PREFETCH_RESOURCES", "max_prefetch_resources", 20000, "`20000`"),
    ("CRAMP_MAX_FEEDBACK_ENTRIES", "max_feedback_entries", 100, "`100`"),
    ("CRAMP_LOG_LEVEL", "log_level", "INFO", "`INFO`"),
])
def test_documented_defaults_are_the_defaults(tmp_path, variable, attribute, value, readme):
    assert settings_table()[variable] == readme
    assert getattr(local_settings(tmp_path), attribute) == value


def test_profiles_as_documented(tmp_path):
    local = local_settings(tmp_path)
    assert (local.auth_enabled, local.allowed_origins, local.sandbox) == (False, ("*",), True)
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"clients": [{"iss": "https://ehr.example.org",
                                                "jku": ["https://ehr.example.org/jwks"]}]}))
    production = Settings.from_env({"CRAMP_SECRET_KEY": SECRET, "CRAMP_TRUSTED_CLIENTS": str(clients),
                                    "CRAMP_DATA_DIR": str(tmp_path / "prod")})
    assert (production.profile, production.auth_enabled, production.allowed_origins, production.sandbox) == (
        "production", True, (), False)


# --------------------------------------------------------------------------- settings that change behaviour


def _thiazide_card(client, **prefetch):
    body = hook_request(prefetch=full_prefetch(meds=[service_med_request("h1", HYDROCHLOROTHIAZIDE)],
                                               conditions=[service_cramps()], **prefetch))
    response = post_hook(client, body)
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    return cards[0] if cards else None


def _override_already_addressed(client, card):
    response = client.post("/cds-services/leg-cramp-patient-view/feedback",
                           json={"feedback": [feedback_entry(card["uuid"], reason="already-addressed")]})
    assert response.status_code == 200


def test_suppression_days_zero_means_never(tmp_path):
    """`CRAMP_SUPPRESSION_DAYS` ... (`0` = never): an override with a suppressing reason hides nothing."""
    never = make_client(tmp_path / "never", {"CRAMP_SUPPRESSION_DAYS": "0"})
    _override_already_addressed(never, _thiazide_card(never))
    assert _thiazide_card(never) is not None
    default = make_client(tmp_path / "default")
    _override_already_addressed(default, _thiazide_card(default))
    assert _thiazide_card(default) is None


@pytest.mark.date_sensitive  # the service's "now" is the wall clock; the labs are dated relative to it
def test_lab_lookback_days_is_the_rules_lookback_too(tmp_path):
    """`CRAMP_LAB_LOOKBACK_DAYS`: the observations prefetch window *and the lab rules' lookback*."""
    old_low = potassium("k-old", 3.0, when_days_ago=200)
    short = make_client(tmp_path / "short", {"CRAMP_LAB_LOOKBACK_DAYS": "100"})
    default = make_client(tmp_path / "default")
    on_card = lambda card: card["extension"]["org.cramp-cds.review"]["contributors"]
    assert "low-potassium" not in on_card(_thiazide_card(short, observations=[old_low]))
    assert "low-potassium" in on_card(_thiazide_card(default, observations=[old_low]))


@pytest.mark.date_sensitive
def test_lab_suggestion_months(tmp_path):
    """`CRAMP_LAB_SUGGESTION_MONTHS`: a diuretic with no K/Mg/Ca/creatinine result this recent earns the suggestion."""
    normal_k_8_months_ago = potassium("k", 4.2, when_days_ago=245)
    six = make_client(tmp_path / "six", {"CRAMP_LAB_SUGGESTION_MONTHS": "6"})
    default = make_client(tmp_path / "default")
    assert "suggestions" in _thiazide_card(six, observations=[normal_k_8_months_ago])
    assert "suggestions" not in _thiazide_card(default, observations=[normal_k_8_months_ago])


@pytest.mark.parametrize(("env", "status"), [({}, 200), ({"CRAMP_SANDBOX": "off"}, 404),
                                             ({"CRAMP_SANDBOX": "on"}, 200)])
def test_sandbox_page_follows_cramp_sandbox(tmp_path, env, status):
    """`CRAMP_SANDBOX` (local: on): serve the web sandbox at `/sandbox/`, or not at all."""
    client = make_client(tmp_path, env)
    assert client.get("/sandbox/").status_code == status
    assert client.get("/sandbox/api/samples").status_code == status


@pytest.mark.parametrize(("level", "info", "warning"), [("WARNING", False, True), ("debug", True, True),
                                                       ("ERROR", False, False)])
def test_log_level_sets_the_cramp_cds_loggers(tmp_path, level, info, warning):
    """`CRAMP_LOG_LEVEL`: logging level of the `cramp_cds` loggers (access lines are INFO)."""
    make_client(tmp_path, {"CRAMP_LOG_LEVEL": level})
    for name in ("cramp_cds", "cramp_cds.access"):
        logger = logging.getLogger(name)
        assert (logger.isEnabledFor(logging.INFO), logger.isEnabledFor(logging.WARNING)) == (info, warning), name
    make_client(tmp_path, {})  # back to the default for the tests that follow
    assert logging.getLogger("cramp_cds.access").isEnabledFor(logging.INFO)


def test_fhir_timeouts_reach_the_http_client(tmp_path):
    """`CRAMP_FHIR_CONNECT_TIMEOUT` / `CRAMP_FHIR_READ_TIMEOUT`: every fallback request carries them (or less,
    when the call's time budget has less left)."""
    client = make_client(tmp_path, {"CRAMP_FHIR_CONNECT_TIMEOUT": "1.5", "CRAMP_FHIR_READ_TIMEOUT": "2.5"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, re.compile(re.escape(FHIR) + r"/Patient/p1.*"), json=full_prefetch()["patient"])
        rsps.add(responses.GET, re.compile(re.escape(FHIR) + r"/(?!Patient/).*"),
                 json={"resourceType": "Bundle", "type": "searchset", "entry": []})
        response = post_hook(client, hook_request(fhir_server=FHIR, token=TOKEN, omit_prefetch=True))
        assert response.status_code == 200, response.get_json()
        assert len(rsps.calls) >= 6
        for call in rsps.calls:
            timeout = call.request.req_kwargs["timeout"]
            connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
            assert 0 < connect <= 1.5 and 0 < read <= 2.5, timeout


# --------------------------------------------------------------------------- the batch review's options and exit statuses


def _bundle_file(tmp_path: Path, *resources: dict) -> Path:
    path = tmp_path / "patients" / "b.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle(patient(), *resources)))
    return path


def _review_json(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = review_main([*argv, "--as-of", AS_OF, "--quiet", "--workers", "1", "--format", "json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_batch_no_validate(tmp_path, capsys):
    """`--no-validate`: no strict R4 validation (and no warning about it); the data is read either way."""
    invalid = med_request("m1", rx("310798", "hydrochlorothiazide 25 MG Oral Tablet"), dosageInstruction="daily")
    path = _bundle_file(tmp_path, cramps(), invalid)
    code, validated, _ = _review_json(capsys, str(path))
    assert code == 0
    (p,) = validated["patients"]
    assert any("MedicationRequest/m1 is not valid FHIR R4" in w for w in p["warnings"])
    assert "thiazide-diuretic" in [f["contributor"] for f in p["findings"]]
    code, unvalidated, _ = _review_json(capsys, str(path), "--no-validate")
    assert code == 0
    (p,) = unvalidated["patients"]
    assert not any("not valid FHIR" in w for w in p["warnings"])
    assert "thiazide-diuretic" in [f["contributor"] for f in p["findings"]]


def test_batch_lab_lookback_days(tmp_path, capsys):
    """`--lab-lookback-days N`: the most recent result within N days decides (default 365)."""
    path = _bundle_file(tmp_path, cramps(), lab("k1", "2823-3", 3.0, "mmol/L", when="2025-09-01T08:00:00Z"))
    found = lambda doc: [f["contributor"] for f in doc["patients"][0]["findings"]]
    assert "low-potassium" not in found(_review_json(capsys, str(path))[1])              # 426 days before AS_OF
    assert "low-potassium" in found(_review_json(capsys, str(path), "--lab-lookback-days", "430")[1])
    assert "low-potassium" not in found(_review_json(capsys, str(path), "--lab-lookback-days", "425")[1])


def test_batch_exit_statuses_as_documented(tmp_path, capsys):
    """Exit status: `0` all read, `3` completed with bad records, `4` could not run (no report), `2` usage."""
    good = _bundle_file(tmp_path, condition("c1", icd("K74.60")))
    assert _review_json(capsys, str(good))[0] == 0
    bad = tmp_path / "ndjson"
    bad.mkdir()
    (bad / "Patient.ndjson").write_text(json.dumps(patient()) + "\nnot json\n")
    code, doc, _ = _review_json(capsys, str(bad))
    assert code == 3 and doc["badRecords"] and doc["patients"]
    code, doc, err = _review_json(capsys, str(tmp_path / "absent"))
    assert code == 4 and doc is None and "input not found" in err
    with pytest.raises(SystemExit) as usage:
        review_main([str(good), "--contributor", "no-such-contributor"])
    assert usage.value.code == 2
