"""Settings (one frozen dataclass from the environment), the local profile's secret key, and the CLI."""
from __future__ import annotations

import dataclasses
import stat

import pytest

from cds_hooks.cli import COMMANDS, build_parser, main
from cds_hooks.settings import Settings, SettingsError


def test_defaults_are_documented_values(tmp_path):
    s = Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path)})
    assert (s.host, s.port, s.trigger_policy, s.lab_lookback_days, s.suppression_days) == (
        "127.0.0.1", 8080, "documented", 365, 30)
    assert s.suppression_reasons == ("already-addressed", "benefit-outweighs-risk")
    assert (s.fhir_connect_timeout, s.fhir_read_timeout, s.fhir_budget_seconds, s.fhir_max_pages) == (0.5, 1.5, 1.5, 10)
    assert s.fhir_max_response_bytes == 32 * 1024 * 1024 and s.prefetch_date_tokens is False
    assert (s.link_hosts, s.evidence_page) == ((), None)
    assert (s.max_body_bytes, s.max_prefetch_resources, s.max_feedback_entries) == (5 * 1024 * 1024, 20000, 100)
    assert s.allowed_origins == ("*",) and s.auth_enabled is False
    assert s.database_path == tmp_path / "cramp.db"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_every_setting_is_documented_in_the_module_docstring():
    import cds_hooks.settings as module

    for name in ("CRAMP_PROFILE", "CRAMP_HOST", "CRAMP_PORT", "CRAMP_DATA_DIR", "CRAMP_DATABASE", "CRAMP_SECRET_KEY",
                 "CRAMP_TRIGGER_POLICY", "CRAMP_LAB_LOOKBACK_DAYS", "CRAMP_LAB_SUGGESTION_MONTHS",
                 "CRAMP_SUPPRESSION_DAYS", "CRAMP_SUPPRESSION_REASONS", "CRAMP_FHIR_CONNECT_TIMEOUT",
                 "CRAMP_FHIR_READ_TIMEOUT", "CRAMP_FHIR_BUDGET", "CRAMP_FHIR_MAX_PAGES", "CRAMP_MAX_BODY_BYTES",
                 "CRAMP_MAX_PREFETCH_RESOURCES", "CRAMP_MAX_FEEDBACK_ENTRIES", "CRAMP_ALLOWED_ORIGINS",
                 "CRAMP_PUBLIC_BASE_URL", "CRAMP_LOG_LEVEL", "CRAMP_STALE_ORDER_DAYS",
                 "CRAMP_ADMINISTRATION_WINDOW_DAYS", "CRAMP_PREGNANCY_WINDOW_DAYS"):
        assert f"`{name}`" in module.__doc__, name


def test_review_options_carry_the_clinical_windows(tmp_path):
    s = Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path),
                           "CRAMP_LAB_LOOKBACK_DAYS": "200", "CRAMP_LAB_SUGGESTION_MONTHS": "6"})
    assert (s.review_options.lab_lookback_days, s.review_options.monitoring_months) == (200, 6)


def test_currency_windows_are_settings_that_reach_the_rules_and_the_prefetch(tmp_path):
    """Issue 12: each currency rule is a documented setting; the dispense prefetch reaches the stale horizon."""
    from cds_hooks.service.services import build_registry

    default = Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path)}).review_options
    assert (default.stale_order_days, default.administration_window_days, default.pregnancy_window_days) == (
        365, 30, 300)
    s = Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path),
                           "CRAMP_STALE_ORDER_DAYS": "400", "CRAMP_ADMINISTRATION_WINDOW_DAYS": "14",
                           "CRAMP_PREGNANCY_WINDOW_DAYS": "280"})
    o = s.review_options
    assert (o.stale_order_days, o.administration_window_days, o.pregnancy_window_days) == (400, 14, 280)
    prefetch = build_registry([], 365, o, date_tokens=True)["leg-cramp-patient-view"].prefetch  # 3.0 opt-in
    assert "whenhandedover=ge{{today() - 400 days}}" in prefetch["dispenses"]
    assert "effective-time=ge{{today() - 14 days}}" in prefetch["administrations"]


@pytest.mark.parametrize(("name", "value"), [
    ("CRAMP_PORT", "eighty"), ("CRAMP_PORT", "70000"), ("CRAMP_PROFILE", "staging"),
    ("CRAMP_TRIGGER_POLICY", "always"), ("CRAMP_FHIR_BUDGET", "-1"), ("CRAMP_FHIR_READ_TIMEOUT", "soon"),
    ("CRAMP_SUPPRESSION_REASONS", "already-addressed,whatever"), ("CRAMP_DATABASE", "mysql://db/cramp"),
    ("CRAMP_DATABASE", ":memory:"), ("CRAMP_ALLOWED_ORIGINS", "ehr.example.org"),
    ("CRAMP_PUBLIC_BASE_URL", "cds.example.org"), ("CRAMP_SECRET_KEY", "short"), ("CRAMP_LOG_LEVEL", "LOUD"),
    ("CRAMP_MAX_FEEDBACK_ENTRIES", "0"), ("CRAMP_STALE_ORDER_DAYS", "0"), ("CRAMP_ADMINISTRATION_WINDOW_DAYS", "a month"),
    ("CRAMP_PREGNANCY_WINDOW_DAYS", "-3"),
])
def test_bad_value_is_a_startup_error_naming_the_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path), name: value})


def test_production_profile_requires_a_secret_key_and_defaults_auth_on(tmp_path):
    with pytest.raises(SettingsError, match="CRAMP_SECRET_KEY"):
        Settings.from_env({"CRAMP_DATA_DIR": str(tmp_path)})
    pytest.importorskip("cds_hooks.auth")
    with pytest.raises(SettingsError, match="CRAMP_AUTH|CRAMP_TRUSTED_CLIENTS"):
        Settings.from_env({"CRAMP_DATA_DIR": str(tmp_path), "CRAMP_SECRET_KEY": "x" * 32})  # auth on, nobody trusted


def test_local_profile_generates_and_keeps_a_0600_secret_key(tmp_path):
    data = tmp_path / "var"
    first = Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(data)})
    key_file = data / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(data)})
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    assert [p.name for p in data.iterdir()] == ["secret_key"], "no temporary files left behind"


def test_database_url_forms(tmp_path):
    base = {"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path), "CRAMP_SECRET_KEY": "k" * 20}
    assert str(Settings.from_env({**base, "CRAMP_DATABASE": "sqlite:///var/x.db"}).database_path) == "var/x.db"
    assert str(Settings.from_env({**base, "CRAMP_DATABASE": "sqlite:////srv/x.db"}).database_path) == "/srv/x.db"
    assert str(Settings.from_env({**base, "CRAMP_DATABASE": "/srv/y.db"}).database_path) == "/srv/y.db"


def test_create_app_with_no_arguments_reads_the_environment(tmp_path, monkeypatch):
    from cds_hooks.app import create_app

    monkeypatch.setenv("CRAMP_PROFILE", "local")
    monkeypatch.setenv("CRAMP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CRAMP_AUTH", "off")
    client = create_app().test_client()
    assert client.get("/healthz").get_json()["auth"] == "off"
    assert (tmp_path / "cramp.db").exists()


def test_cli_dispatches_subcommands_from_one_table():
    assert "serve" in COMMANDS
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 9000)
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_cli_bad_setting_exits_2_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("CRAMP_PORT", "not-a-port")
    assert main(["serve"]) == 2
    assert "CRAMP_PORT" in capsys.readouterr().err
