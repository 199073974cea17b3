r"""Service settings: one frozen dataclass read from the environment once, at start-up.

Every setting has a safe default (the secret key in the production profile is the one exception: it must be
given). A bad value is a start-up error (:class:`SettingsError`) naming the variable.

| variable | default | meaning |
|---|---|---|
| `CRAMP_PROFILE` | `production` | `local` = embedded defaults for one developer: authentication off (loudly: a WARNING at start and `"auth": "off"` in `/healthz`), a generated secret key, CORS `*`. `production` = authentication on, `CRAMP_SECRET_KEY` required. |
| `CRAMP_HOST` | `127.0.0.1` | interface `cramp-cds serve` listens on (`--host` overrides) |
| `CRAMP_PORT` | `8080` | port `cramp-cds serve` listens on (`--port` overrides) |
| `CRAMP_DATA_DIR` | `./var` | folder for the SQLite database and the generated secret key (created if missing) |
| `CRAMP_DATABASE` | `sqlite:///<CRAMP_DATA_DIR>/cramp.db` | the store (feedback, suppression, `jti` replay memory): `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or a plain file path (SQLite in WAL mode: several workers on one host), or `postgresql://user:password@host:5432/dbname` (several hosts). The schema is created and upgraded at start (Alembic migrations upgrade an existing database). |
| `CRAMP_SECRET_KEY` | local: generated once into `<CRAMP_DATA_DIR>/secret_key` (mode 0600); production: **required** | HMAC-SHA256 key that turns `fhirServer + "\|" + patientId` into the opaque patient key the feedback store keeps (it never stores raw patient ids). At least 16 characters. Changing it forgets earlier overrides. |
| `CRAMP_TRIGGER_POLICY` | `documented` | when `patient-view` speaks: `documented` = only when the record documents leg cramps (or quinine is active); `any` = whenever a contributor is found |
| `CRAMP_LAB_LOOKBACK_DAYS` | `365` | how far back the lab rules look (and the `observations` template, with `CRAMP_PREFETCH_DATE_TOKENS=on`) |
| `CRAMP_PREFETCH_DATE_TOKENS` | `off` | `on` = prefetch templates also bound labs and dispenses by `{{today() - N days}}` (a CDS Hooks 3.0 token); `off` = CDS Hooks 2.0 tokens only, bounded by `_sort` and `_count` |
| `CRAMP_LAB_SUGGESTION_MONTHS` | `12` | a lab-order suggestion (K, Mg, Ca, creatinine) is offered when a diuretic is current and no such result is newer than this many months (engine `ReviewOptions.monitoring_months`) |
| `CRAMP_STALE_ORDER_DAYS` | `365` | a medication order or statement with no newer activity of its class (renewal, dispense, statement, administration) for this many days is shown as *possibly stale* (engine `ReviewOptions.stale_order_days`; a US prescription is generally valid for a year) |
| `CRAMP_ADMINISTRATION_WINDOW_DAYS` | `30` | a MedicationAdministration counts this many days after it was given (`administration_window_days`; an iron sucrose course spans up to about four weeks, Venofer US label) |
| `CRAMP_PREGNANCY_WINDOW_DAYS` | `300` | a pregnancy counts this many days after its onset or recording, whichever is later (`pregnancy_window_days`; post-term begins at 294 days, ACOG Practice Bulletin 146) |
| `CRAMP_SUPPRESSION_DAYS` | `30` | an override with a suppressing reason hides the same card for the same patient for this many days (`0` = never suppress) |
| `CRAMP_SUPPRESSION_REASONS` | `already-addressed,benefit-outweighs-risk` | comma list of override-reason codes (system `https://cramp-cds.org/fhir/CodeSystem/override-reason`) that suppress |
| `CRAMP_FHIR_CONNECT_TIMEOUT` | `0.5` | seconds to connect to the client's `fhirServer` when prefetch is missing |
| `CRAMP_FHIR_READ_TIMEOUT` | `1.5` | longest wait for any one read from the FHIR server |
| `CRAMP_FHIR_BUDGET` | `1.5` | one hard deadline for everything one hook call fetches (connect, headers, streamed bodies; all keys, all pages); then 412 |
| `CRAMP_FHIR_MAX_RESPONSE_BYTES` | `33554432` (32 MiB) | largest single FHIR server answer; larger is a 412 naming the key (read as a stream and cut at the limit) |
| `CRAMP_FHIR_MAX_PAGES` | `10` | most pages followed (`next` links) per prefetch key; a longer result is a 412 naming the limit |
| `CRAMP_MAX_BODY_BYTES` | `5242880` (5 MB) | largest request body; larger is 413 (checked on Content-Length before the body is read) |
| `CRAMP_MAX_PREFETCH_RESOURCES` | `20000` | most resources in one call's prefetch plus fetched pages; more is 413 naming the limit |
| `CRAMP_MAX_FEEDBACK_ENTRIES` | `100` | most entries in one feedback POST; more is 413 naming the limit |
| `CRAMP_ALLOWED_ORIGINS` | local: `*`; production: none | CORS: `*` or a comma list of origins (`https://ehr.example.org`) allowed to call from a browser. Empty = no `Access-Control-Allow-Origin` header. |
| `CRAMP_PUBLIC_BASE_URL` | unset | the URL clients use to reach this service (behind a proxy), e.g. `https://cds.example.org`; the JWT `aud` must equal it + the request path. Unset: the request URL without query. |
| `CRAMP_LOG_LEVEL` | `INFO` | Python logging level for the `cramp_cds` loggers |
| `CRAMP_LINK_HOSTS` | unset (all) | comma list of hosts card links may point to (a host also allows its subdomains); other links are left off the card |
| `CRAMP_EVIDENCE_PAGE` | unset | an http(s) URL: every card link (and the card's source) is rewritten to this one evidence page |
| `CRAMP_SANDBOX` | local: `on`; production: `off` | serve the web sandbox page at `/sandbox/` (it sends no JWT: only useful with authentication off) |
| `CRAMP_LOG_FORMAT` | local: `text`; production: `json` | `json` = one JSON object per line (time, level, logger, pid, request_id, message and the access line's fields); `text` = one readable line |
| `CRAMP_METRICS` | local: `on`; production: `off` | serve Prometheus metrics at `/metrics` (summed over gunicorn workers by the production config) |
| `CRAMP_METRICS_TOKEN` | unset | when set, `/metrics` needs `Authorization: Bearer <this token>` (at least 16 characters) |
| `CRAMP_ADMIN` | `off` | `on` serves the feedback report at `/admin/feedback` (needs `CRAMP_ADMIN_TOKEN`) |
| `CRAMP_ADMIN_TOKEN` | unset | the bearer token `/admin/feedback` requires (at least 16 characters); required when `CRAMP_ADMIN=on` |
| authentication variables | on (production), off (local) | read by `cds_hooks.auth.load_auth_config`; see that module |
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from plugin.cards import OVERRIDE_REASONS, OVERRIDE_SYSTEM
from plugin.rules import ReviewOptions

log = logging.getLogger("cramp_cds.settings")

PROFILES = ("local", "production")
TRIGGER_POLICIES = ("documented", "any")
OVERRIDE_REASON_SYSTEM = OVERRIDE_SYSTEM  # the card builder owns the override-reason codes
OVERRIDE_REASON_CODES = tuple(code for code, _ in OVERRIDE_REASONS)
SECRET_FILE_NAME = "secret_key"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


@dataclass(frozen=True)
class Settings:
    profile: str = "production"
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("var")
    database_path: Path | None = Path("var/cramp.db")  # the SQLite file; None for PostgreSQL
    database_url: str = "sqlite:///var/cramp.db"
    secret_key: bytes = field(default=b"", repr=False)
    trigger_policy: str = "documented"
    lab_lookback_days: int = 365
    lab_suggestion_months: int = 12
    stale_order_days: int = ReviewOptions.stale_order_days
    administration_window_days: int = ReviewOptions.administration_window_days
    pregnancy_window_days: int = ReviewOptions.pregnancy_window_days
    suppression_days: int = 30
    suppression_reasons: tuple[str, ...] = ("already-addressed", "benefit-outweighs-risk")
    fhir_connect_timeout: float = 0.5
    fhir_read_timeout: float = 1.5
    fhir_budget_seconds: float = 1.5
    fhir_max_pages: int = 10
    fhir_max_response_bytes: int = 32 * 1024 * 1024
    prefetch_date_tokens: bool = False
    link_hosts: tuple[str, ...] = ()
    evidence_page: str | None = None
    max_body_bytes: int = 5 * 1024 * 1024
    max_prefetch_resources: int = 20000
    max_feedback_entries: int = 100
    allowed_origins: tuple[str, ...] = ()
    public_base_url: str | None = None
    log_level: str = "INFO"
    sandbox: bool = False
    log_format: str = "json"
    metrics: bool = False
    metrics_token: str | None = field(default=None, repr=False)
    admin: bool = False
    admin_token: str | None = field(default=None, repr=False)
    auth: Any = None  # cds_hooks.auth.AuthConfig, or None when that module is unavailable (auth off)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth is not None and getattr(self.auth, "enabled", False))

    @property
    def review_options(self) -> Any:
        """The engine's ``plugin.ReviewOptions`` built from these settings."""
        return ReviewOptions(lab_lookback_days=self.lab_lookback_days, monitoring_months=self.lab_suggestion_months,
                             stale_order_days=self.stale_order_days,
                             administration_window_days=self.administration_window_days,
                             pregnancy_window_days=self.pregnancy_window_days)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``); raise :class:`SettingsError` on a bad value."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        profile = reader.choice("CRAMP_PROFILE", "production", PROFILES)
        local = profile == "local"
        data_dir = Path(reader.text("CRAMP_DATA_DIR", "var"))
        database_url, database_path = _database(reader.text("CRAMP_DATABASE", ""), data_dir)
        reasons = reader.csv("CRAMP_SUPPRESSION_REASONS", "already-addressed,benefit-outweighs-risk")
        for reason in reasons:
            if reason not in OVERRIDE_REASON_CODES:
                raise SettingsError(
                    f"CRAMP_SUPPRESSION_REASONS: unknown override reason {reason!r} "
                    f"(known: {', '.join(OVERRIDE_REASON_CODES)})"
                )
        origins = reader.csv("CRAMP_ALLOWED_ORIGINS", "*" if local else "")
        for origin in origins:
            if origin != "*" and not _is_http_url(origin):
                raise SettingsError(f"CRAMP_ALLOWED_ORIGINS: {origin!r} is neither '*' nor an http(s) origin")
        public_base_url = reader.text("CRAMP_PUBLIC_BASE_URL", "").rstrip("/") or None
        if public_base_url and not _is_http_url(public_base_url):
            raise SettingsError(f"CRAMP_PUBLIC_BASE_URL: {public_base_url!r} is not an absolute http(s) URL")
        evidence_page = reader.text("CRAMP_EVIDENCE_PAGE", "") or None
        if evidence_page and not _is_http_url(evidence_page):
            raise SettingsError(f"CRAMP_EVIDENCE_PAGE: {evidence_page!r} is not an absolute http(s) URL")
        link_hosts = tuple(h.lower() for h in reader.csv("CRAMP_LINK_HOSTS", ""))
        for host in link_hosts:
            if "/" in host or ":" in host or not host.strip("."):
                raise SettingsError(f"CRAMP_LINK_HOSTS: {host!r} is not a host name (no scheme, port or path)")
        log_level = reader.text("CRAMP_LOG_LEVEL", "INFO").upper()
        if not isinstance(logging.getLevelName(log_level), int):
            raise SettingsError(f"CRAMP_LOG_LEVEL: unknown level {log_level!r}")
        simple = {
            "profile": profile,
            "host": reader.text("CRAMP_HOST", "127.0.0.1"),
            "port": reader.integer("CRAMP_PORT", 8080, low=1, high=65535),
            "data_dir": data_dir,
            "database_path": database_path,
            "database_url": database_url,
            "trigger_policy": reader.choice("CRAMP_TRIGGER_POLICY", "documented", TRIGGER_POLICIES),
            "lab_lookback_days": reader.integer("CRAMP_LAB_LOOKBACK_DAYS", 365, low=1, high=36500),
            "lab_suggestion_months": reader.integer("CRAMP_LAB_SUGGESTION_MONTHS", 12, low=1, high=1200),
            "stale_order_days": reader.integer("CRAMP_STALE_ORDER_DAYS", ReviewOptions.stale_order_days,
                                               low=1, high=36500),
            "administration_window_days": reader.integer(
                "CRAMP_ADMINISTRATION_WINDOW_DAYS", ReviewOptions.administration_window_days, low=1, high=3650),
            "pregnancy_window_days": reader.integer("CRAMP_PREGNANCY_WINDOW_DAYS", ReviewOptions.pregnancy_window_days,
                                                    low=1, high=3650),
            "suppression_days": reader.integer("CRAMP_SUPPRESSION_DAYS", 30, low=0, high=3650),
            "suppression_reasons": reasons,
            "fhir_connect_timeout": reader.number("CRAMP_FHIR_CONNECT_TIMEOUT", 0.5),
            "fhir_read_timeout": reader.number("CRAMP_FHIR_READ_TIMEOUT", 1.5),
            "fhir_budget_seconds": reader.number("CRAMP_FHIR_BUDGET", 1.5),
            "fhir_max_pages": reader.integer("CRAMP_FHIR_MAX_PAGES", 10, low=1, high=1000),
            "fhir_max_response_bytes": reader.integer("CRAMP_FHIR_MAX_RESPONSE_BYTES", 32 * 1024 * 1024,
                                                      low=1024, high=1 << 34),
            "prefetch_date_tokens": reader.choice("CRAMP_PREFETCH_DATE_TOKENS", "off", ("on", "off")) == "on",
            "link_hosts": link_hosts,
            "evidence_page": evidence_page,
            "max_body_bytes": reader.integer("CRAMP_MAX_BODY_BYTES", 5 * 1024 * 1024, low=1024, high=1 << 31),
            "max_prefetch_resources": reader.integer("CRAMP_MAX_PREFETCH_RESOURCES", 20000, low=1, high=10**7),
            "max_feedback_entries": reader.integer("CRAMP_MAX_FEEDBACK_ENTRIES", 100, low=1, high=100000),
            "allowed_origins": origins,
            "public_base_url": public_base_url,
            "log_level": log_level,
            "sandbox": reader.choice("CRAMP_SANDBOX", "on" if local else "off", ("on", "off")) == "on",
            "log_format": reader.choice("CRAMP_LOG_FORMAT", "text" if local else "json", ("json", "text")),
            "metrics": reader.choice("CRAMP_METRICS", "on" if local else "off", ("on", "off")) == "on",
            "metrics_token": _token(reader, "CRAMP_METRICS_TOKEN"),
            "admin": reader.choice("CRAMP_ADMIN", "off", ("on", "off")) == "on",
            "admin_token": _token(reader, "CRAMP_ADMIN_TOKEN"),
        }
        if simple["admin"] and not simple["admin_token"]:
            raise SettingsError("CRAMP_ADMIN_TOKEN: required when CRAMP_ADMIN=on (the feedback report needs "
                                "authentication)")
        # last: the steps with side effects (the local key file) and the auth module's own variables
        secret_key = _secret_key(env.get("CRAMP_SECRET_KEY", ""), local=local, data_dir=data_dir)
        return cls(**simple, secret_key=secret_key, auth=_auth_config(env, local=local))


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name)
        return default if value is None or not value.strip() else value.strip()

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in allowed:
            raise SettingsError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self.text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}: {raw!r} is not an integer") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}: {value} is outside {low}..{high}")
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}: {raw!r} is not a number of seconds") from None
        if not 0 < value <= 3600:
            raise SettingsError(f"{name}: {value} is outside (0, 3600] seconds")
        return value

    def csv(self, name: str, default: str) -> tuple[str, ...]:
        value = self.env.get(name)
        value = default if value is None else value
        return tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def _token(reader: _Reader, name: str) -> str | None:
    value = reader.text(name, "")
    if value and len(value) < 16:
        raise SettingsError(f"{name}: must be at least 16 characters")
    return value or None


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def database_from_env(env: Mapping[str, str] | None = None) -> str:
    """The store's URL from ``CRAMP_DATABASE``/``CRAMP_DATA_DIR`` alone (tools that need no other setting)."""
    reader = _Reader(os.environ if env is None else env)
    return _database(reader.text("CRAMP_DATABASE", ""), Path(reader.text("CRAMP_DATA_DIR", "var")))[0]


def _database(value: str, data_dir: Path) -> tuple[str, Path | None]:
    """``CRAMP_DATABASE`` → (SQLAlchemy URL, SQLite file or None)."""
    if value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        rest = value.split("://", 1)[1]
        if not rest.split("?", 1)[0].strip("/"):
            raise SettingsError("CRAMP_DATABASE: a PostgreSQL URL needs a host and a database name")
        return "postgresql+psycopg://" + rest, None
    if not value:
        path = str(data_dir / "cramp.db")
    elif value.startswith("sqlite:///"):
        path = value[len("sqlite:///"):]
    elif "://" in value:
        raise SettingsError(f"CRAMP_DATABASE: use sqlite:///path, a file path or postgresql://…, got "
                            f"{value.split('://', 1)[0]}://…")
    else:
        path = value
    if not path or path == ":memory:":
        raise SettingsError("CRAMP_DATABASE: needs a file path (an in-memory database is not shared by workers)")
    return f"sqlite:///{path}", Path(path)


def _secret_key(value: str, *, local: bool, data_dir: Path) -> bytes:
    if value:
        if len(value) < 16:
            raise SettingsError("CRAMP_SECRET_KEY: must be at least 16 characters")
        return value.encode("utf-8")
    if not local:
        raise SettingsError(
            "CRAMP_SECRET_KEY: required in the production profile (a random string of 32+ characters; "
            "or set CRAMP_PROFILE=local to generate one)"
        )
    return _persisted_secret(data_dir)


def _persisted_secret(data_dir: Path) -> bytes:
    """Read, or create once with mode 0600, the local profile's secret key (safe when workers race)."""
    path = data_dir / SECRET_FILE_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = data_dir / f".{SECRET_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_urlsafe(48))
            try:
                os.link(tmp, path)  # atomic: a racing worker either wins or reads the winner's file
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        key = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise SettingsError(f"CRAMP_DATA_DIR: cannot create or read {path}: {exc.strerror}") from None
    if len(key) < 16:
        raise SettingsError(f"CRAMP_SECRET_KEY: the generated key file {path} is damaged; delete it")
    return key.encode("ascii")


def _auth_config(env: Mapping[str, str], *, local: bool) -> Any:
    try:
        from cds_hooks.auth import load_auth_config
    except ImportError:
        if local:
            log.warning("cds_hooks.auth is not available: authentication is OFF")
            return None
        raise SettingsError(
            "CRAMP_PROFILE: production needs cds_hooks.auth (JWT verification), which cannot be imported"
        ) from None
    try:
        return load_auth_config(env, default_enabled=not local)
    except SettingsError:
        raise
    except ValueError as exc:  # the auth module names its own variable
        raise SettingsError(str(exc)) from None
