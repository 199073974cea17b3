"""Which CDS clients are trusted, and how strictly: :class:`AuthConfig` from the environment (X5, X6).

``load_auth_config`` reads ``CRAMP_AUTH``, ``CRAMP_TRUSTED_CLIENTS`` (the trusted-clients JSON file),
``CRAMP_JWT_ALGORITHMS``, ``CRAMP_JWT_CLOCK_SKEW`` and ``CRAMP_TRUST_CDS_HOOKS_SANDBOX``; any bad setting
is a ValueError naming the variable, file or entry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from cds_hooks.auth.jwks import JWKS_MIN_REFETCH_SECONDS, _read_jwks_file

log = logging.getLogger(__name__)

#: Asymmetric algorithms the service can verify; ES384 and RS384 are the ones CDS Hooks recommends (X5).
DEFAULT_ALGORITHMS: tuple[str, ...] = (
    "ES384",
    "RS384",
    "ES256",
    "ES512",
    "RS256",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
)
SUPPORTED_ALGORITHMS = frozenset(DEFAULT_ALGORITHMS)

#: The public CDS Hooks sandbox (checklist §12). Its private key is published: test setups only.
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_JWKS_FILE = str(Path(__file__).resolve().parent / "trust" / "cds-hooks-sandbox-jwks.json")

ENV_AUTH = "CRAMP_AUTH"
ENV_TRUSTED_CLIENTS = "CRAMP_TRUSTED_CLIENTS"
ENV_ALGORITHMS = "CRAMP_JWT_ALGORITHMS"
ENV_CLOCK_SKEW = "CRAMP_JWT_CLOCK_SKEW"
ENV_TRUST_SANDBOX = "CRAMP_TRUST_CDS_HOOKS_SANDBOX"


def _forbidden_alg(alg: str) -> bool:
    """``none`` and every symmetric (HMAC) algorithm are forbidden by CDS Hooks (X5)."""
    return alg.strip().lower() == "none" or alg.strip().upper().startswith("HS")


@dataclass(frozen=True)
class TrustedIssuer:
    """One trusted CDS client (X6).

    ``jku``: allowed JWKS URLs, compared exactly. ``jwks_file``: a JWKS exchanged out of band;
    when set it is the key source for this issuer (the network is never used for it) and ``jku``
    only lists the ``jku`` header values the client may send. ``tenants``: optional allow-list of
    the ``tenant`` claim.
    """

    iss: str
    jku: tuple[str, ...] = ()
    jwks_file: str | None = None
    tenants: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = True
    issuers: Mapping[str, TrustedIssuer] = field(default_factory=dict)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    clock_skew_seconds: int = 60
    max_token_lifetime_seconds: int = 3600
    jwks_timeout_seconds: float = 5.0
    jwks_cache_seconds: int = 3600

    def __post_init__(self) -> None:
        bad = [a for a in self.algorithms if _forbidden_alg(a)]
        if bad:
            raise ValueError(
                f"JWT algorithms {', '.join(bad)} are not allowed: CDS Hooks forbids 'none' and "
                "symmetric (HS*) algorithms (checklist X5)"
            )
        unknown = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ValueError(
                f"unsupported JWT algorithms {', '.join(unknown)}; "
                f"choose from {', '.join(DEFAULT_ALGORITHMS)}"
            )
        if not self.algorithms:
            raise ValueError("at least one JWT algorithm must be allowed")
        if (
            self.clock_skew_seconds < 0
            or self.max_token_lifetime_seconds <= 0
            or self.jwks_timeout_seconds <= 0
        ):
            raise ValueError("clock skew must be >= 0; token lifetime and JWKS timeout must be > 0")
        if self.jwks_cache_seconds < JWKS_MIN_REFETCH_SECONDS:
            raise ValueError(f"jwks_cache_seconds must be at least {JWKS_MIN_REFETCH_SECONDS:.0f}")
        for key, issuer in self.issuers.items():
            if key != issuer.iss:
                raise ValueError(f"issuers mapping key {key!r} differs from its iss {issuer.iss!r}")
            if not issuer.jku and not issuer.jwks_file:
                raise ValueError(f"trusted issuer {issuer.iss!r} has neither jku nor jwks_file")
        # A read-only view, so a shared config cannot be altered at run time.
        object.__setattr__(self, "issuers", MappingProxyType(dict(self.issuers)))



def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("on", "1", "true", "yes"):
        return True
    if v in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be 'on' or 'off', not {value!r}")


def _check_url(url: Any, where: str) -> str:
    """A JWKS URL must be an absolute https URL (http only for loopback test servers)."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{where}: jku entries must be non-empty strings")
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ValueError(f"{where}: jku {url!r} must be an absolute https:// URL")
    return url


def _load_trusted_clients(path_str: str) -> list[TrustedIssuer]:
    path = Path(path_str)
    where = f"{ENV_TRUSTED_CLIENTS} file {path_str}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
        raise ValueError(f'{where}: expected an object with a "clients" array')  # noqa: TRY004 (bad config is a ValueError)
    allowed_fields = {"iss", "jku", "jwks_file", "tenants", "name", "comment"}
    out: list[TrustedIssuer] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc["clients"]):
        at = f"{where}, clients[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: must be an object")  # noqa: TRY004 (bad config is a ValueError)
        extra = sorted(set(entry) - allowed_fields)
        if extra:
            raise ValueError(f"{at}: unknown field(s) {', '.join(extra)}")
        iss = entry.get("iss")
        if not isinstance(iss, str) or not iss.strip():
            raise ValueError(f"{at}: iss must be a non-empty string")
        at = f"{at} (iss {iss})"
        if iss in seen:
            raise ValueError(f"{at}: duplicate iss")
        seen.add(iss)
        jku_raw = entry.get("jku", [])
        if not isinstance(jku_raw, list):
            raise ValueError(f"{at}: jku must be an array of URLs")  # noqa: TRY004 (bad config is a ValueError)
        jku = tuple(_check_url(u, at) for u in jku_raw)
        jwks_file = entry.get("jwks_file")
        if jwks_file is not None:
            if not isinstance(jwks_file, str) or not jwks_file:
                raise ValueError(f"{at}: jwks_file must be a path string")
            resolved = Path(jwks_file)
            if not resolved.is_absolute():
                resolved = path.resolve().parent / resolved
            jwks_file = str(resolved)
            try:
                _read_jwks_file(jwks_file)
            except ValueError as exc:
                raise ValueError(f"{at}: {exc}") from None
        if not jku and not jwks_file:
            raise ValueError(f"{at}: needs jku URLs or a jwks_file")
        tenants_raw = entry.get("tenants")
        tenants: tuple[str, ...] | None = None
        if tenants_raw is not None:
            if (
                not isinstance(tenants_raw, list)
                or not tenants_raw
                or not all(isinstance(t, str) and t for t in tenants_raw)
            ):
                raise ValueError(f"{at}: tenants must be a non-empty array of strings")
            tenants = tuple(tenants_raw)
        out.append(TrustedIssuer(iss=iss, jku=jku, jwks_file=jwks_file, tenants=tenants))
    return out


def load_auth_config(env: Mapping[str, str], *, default_enabled: bool = True) -> AuthConfig:
    """Build the :class:`AuthConfig` from environment variables (see ``docs/security.md``).

    ``CRAMP_AUTH`` on/off (default ``default_enabled``); ``CRAMP_TRUSTED_CLIENTS`` path of the
    trusted-clients JSON; ``CRAMP_JWT_ALGORITHMS`` comma list; ``CRAMP_JWT_CLOCK_SKEW`` seconds;
    ``CRAMP_TRUST_CDS_HOOKS_SANDBOX=1`` trusts the public sandbox (tests only).
    Any bad setting raises ValueError naming the variable, file or entry.
    """
    enabled = default_enabled
    if env.get(ENV_AUTH, "").strip():
        enabled = _parse_bool(ENV_AUTH, env[ENV_AUTH])

    algorithms = DEFAULT_ALGORITHMS
    if env.get(ENV_ALGORITHMS, "").strip():
        algorithms = tuple(a.strip() for a in env[ENV_ALGORITHMS].split(",") if a.strip())
        forbidden = [a for a in algorithms if _forbidden_alg(a)]
        if forbidden:
            raise ValueError(
                f"{ENV_ALGORITHMS}: {', '.join(forbidden)} not allowed; CDS Hooks forbids 'none' and "
                "symmetric HS* algorithms (checklist X5)"
            )
        unknown = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ValueError(
                f"{ENV_ALGORITHMS}: unsupported {', '.join(unknown)}; choose from {', '.join(DEFAULT_ALGORITHMS)}"
            )

    skew = 60
    if env.get(ENV_CLOCK_SKEW, "").strip():
        try:
            skew = int(env[ENV_CLOCK_SKEW].strip())
        except ValueError:
            raise ValueError(f"{ENV_CLOCK_SKEW} must be a whole number of seconds") from None
        if not 0 <= skew <= 300:
            raise ValueError(f"{ENV_CLOCK_SKEW} must be between 0 and 300 seconds")

    issuers: dict[str, TrustedIssuer] = {}
    if env.get(ENV_TRUSTED_CLIENTS, "").strip():
        for issuer in _load_trusted_clients(env[ENV_TRUSTED_CLIENTS].strip()):
            issuers[issuer.iss] = issuer

    if env.get(ENV_TRUST_SANDBOX, "").strip() and _parse_bool(ENV_TRUST_SANDBOX, env[ENV_TRUST_SANDBOX]):
        if SANDBOX_ISSUER in issuers:
            raise ValueError(f"{ENV_TRUST_SANDBOX}: {SANDBOX_ISSUER} is also listed in {ENV_TRUSTED_CLIENTS}")
        _read_jwks_file(SANDBOX_JWKS_FILE)
        issuers[SANDBOX_ISSUER] = TrustedIssuer(
            iss=SANDBOX_ISSUER, jku=(SANDBOX_JKU,), jwks_file=SANDBOX_JWKS_FILE
        )
        log.warning(
            "trusting the public CDS Hooks sandbox (%s): its private key is public, test setups only",
            SANDBOX_ISSUER,
        )

    if enabled and not issuers:
        raise ValueError(
            f"{ENV_AUTH} is on but no client is trusted: set {ENV_TRUSTED_CLIENTS} "
            f"(or {ENV_TRUST_SANDBOX}=1 for tests), or {ENV_AUTH}=off"
        )
    return AuthConfig(enabled=enabled, issuers=issuers, algorithms=algorithms, clock_skew_seconds=skew)
