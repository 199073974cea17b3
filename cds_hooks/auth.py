"""Authentication of CDS clients (CDS Hooks "Trusting CDS Clients", checklist §8 X1–X7).

A CDS client (an EHR, the public sandbox) sends ``Authorization: Bearer <JWT>`` on every call
(X2). :class:`ClientVerifier` checks that JWT against an allow-list of trusted issuers
(:class:`AuthConfig`, built from the environment by :func:`load_auth_config`) and returns the
verified claims, or raises :class:`AuthenticationError`. The caller answers that with a bare
401 and logs ``exc.reason`` (X7: no detail to the client, never the token itself).

All cryptography is PyJWT's (``jwt.PyJWK``, ``jwt.decode``, ``jwt.get_unverified_header``).
PyJWT's own time, audience and issuer checks are switched off on purpose: they read the wall
clock, which the verifier takes as an injectable ``clock`` so that expiry and replay are testable;
they are done here instead, each with a short fixed reason.

Order of the checks in :meth:`ClientVerifier.verify`:

1. ``Authorization`` present, scheme ``Bearer``, one compact JWS (three base64url segments).
2. Unverified header: ``alg`` allowed (never ``none``/``HS*``), ``kid`` present, ``typ`` ``JWT``
   if present, no ``crit``/``b64``.
3. Unverified ``iss`` picks the trusted issuer (X6); a ``jku`` header must be on its list (X6).
4. Key: the issuer's pinned ``jwks_file`` if it has one, else the JWKS fetched from the ``jku``
   URL (header value, or the issuer's first configured one); the key with the header's ``kid``
   whose type fits ``alg``. Signature verified by PyJWT with the algorithm pinned to ``alg``.
5. Claims (X4/X7): ``iss`` again, ``aud`` equals the called URL, ``exp``/``iat`` present and in
   range (± clock skew), ``exp - iat`` at most the configured lifetime, ``nbf`` if present,
   ``tenant`` if the issuer has a tenant allow-list.
6. ``jti`` not seen before for that issuer (last, so unsigned junk cannot fill the store).

The replay store is in memory and therefore **per process**: with several gunicorn workers a
token replayed to another worker is not detected. Pass a shared store (anything with
``seen(iss, jti, exp) -> bool``) to close that gap.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
import requests

__all__ = [
    "DEFAULT_ALGORITHMS",
    "SANDBOX_ISSUER",
    "SANDBOX_JKU",
    "SANDBOX_JWKS_FILE",
    "AuthConfig",
    "AuthenticationError",
    "ClientVerifier",
    "InMemoryReplayStore",
    "ReplayStore",
    "TrustedIssuer",
    "load_auth_config",
]

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

#: At most one network fetch of a given JWKS URL per this many seconds, whatever triggers it
#: (an unknown ``kid``, a failed fetch, expiry), so that tokens cannot force fetch storms.
JWKS_MIN_REFETCH_SECONDS = 60.0
#: A JWKS larger than this is refused (a JWKS holds a handful of public keys).
JWKS_MAX_BYTES = 256 * 1024
#: Tokens longer than this are refused before parsing.
MAX_TOKEN_CHARS = 16 * 1024
MAX_JTI_CHARS = 512

ENV_AUTH = "CRAMP_AUTH"
ENV_TRUSTED_CLIENTS = "CRAMP_TRUSTED_CLIENTS"
ENV_ALGORITHMS = "CRAMP_JWT_ALGORITHMS"
ENV_CLOCK_SKEW = "CRAMP_JWT_CLOCK_SKEW"
ENV_TRUST_SANDBOX = "CRAMP_TRUST_CDS_HOOKS_SANDBOX"

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"Bearer[ ]+(\S+)[ ]*", re.IGNORECASE)
# Which key may verify which algorithm: (kty, crv or None). Anything else fails, which is what
# defeats "HS256 with the public key as the HMAC secret" and curve confusion.
_KEY_TYPE_FOR_ALG: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    **{f"{p}{n}": ("RSA", None) for p in ("RS", "PS") for n in (256, 384, 512)},
}


def _forbidden_alg(alg: str) -> bool:
    """``none`` and every symmetric (HMAC) algorithm are forbidden by CDS Hooks (X5)."""
    return alg.strip().lower() == "none" or alg.strip().upper().startswith("HS")


class AuthenticationError(Exception):
    """The client could not be authenticated.

    ``reason`` is a short fixed phrase for the log only ("bad signature", "expired", ...); it
    never contains the token. Answer the client with a bare 401 (X7). ``iss`` is the *unverified*
    issuer when one could be read (truncated), to help operators onboard clients.
    """

    def __init__(self, reason: str, *, iss: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.iss = iss


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


# --------------------------------------------------------------------------- configuration


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


def _read_jwks_file(path: str) -> dict[str, dict[str, Any]]:
    """Load a JWKS file into ``{kid: jwk}``; ValueError naming the file on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"JWKS file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        keys = _parse_jwks(json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"JWKS file {path}: {exc}") from None
    return keys


def _parse_jwks(doc: Any) -> dict[str, dict[str, Any]]:
    """``{"keys": [...]}`` → ``{kid: jwk}`` for public keys with a ``kid``; ValueError otherwise."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('not a JWKS (expected an object with a "keys" array)')  # noqa: TRY004 (bad config is a ValueError)
    keys: dict[str, dict[str, Any]] = {}
    for jwk_data in doc["keys"]:
        if not isinstance(jwk_data, dict):
            continue
        kid = jwk_data.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue  # keys without a (unique) kid can never be selected: X3 requires kid
        if "d" in jwk_data or jwk_data.get("kty") == "oct":
            raise ValueError(f"key {kid!r} is private or symmetric; a JWKS must hold public keys only")
        keys[kid] = jwk_data
    if not keys:
        raise ValueError("no usable key with a kid")
    return keys


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


# --------------------------------------------------------------------------- replay store


class ReplayStore(Protocol):
    def seen(self, iss: str, jti: str, exp: float) -> bool:
        """Record ``(iss, jti)`` until ``exp`` (epoch seconds); True if it was already recorded."""
        ...


class InMemoryReplayStore:
    """Thread-safe ``jti`` memory with expiry purge. Per process: see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            exp, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == exp:
                del self._expiry[key]

    def seen(self, iss: str, jti: str, exp: float) -> bool:
        key = (iss, jti)
        with self._lock:
            now = self._clock()
            self._purge(now)
            if key in self._expiry:
                return True
            self._expiry[key] = exp
            heapq.heappush(self._heap, (exp, key))
            return False


# --------------------------------------------------------------------------- JWKS sources


class _JwksEntry:
    __slots__ = ("fetched_at", "keys", "last_attempt", "lock")

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] | None = None
        self.fetched_at = float("-inf")
        self.last_attempt = float("-inf")
        self.lock = threading.Lock()


class ClientVerifier:
    """Verifies the Bearer JWT of a CDS client. Thread-safe; create one per process."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        replay_store: ReplayStore | None = None,
    ) -> None:
        self.config = config
        self._session = session or requests.Session()
        self._clock = clock
        self.replay_store: ReplayStore = replay_store or InMemoryReplayStore(clock=clock)
        self._lock = threading.Lock()
        self._url_cache: dict[str, _JwksEntry] = {}
        # Out-of-band JWKS files are loaded once, now: a bad file is a start-up error (ValueError).
        self._file_keys: dict[str, _JwksEntry] = {}
        for issuer in config.issuers.values():
            if issuer.jwks_file:
                entry = _JwksEntry()
                entry.keys = _read_jwks_file(issuer.jwks_file)
                self._file_keys[issuer.iss] = entry

    # ----------------------------------------------------------------- public

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """Verify ``Authorization: Bearer <jwt>`` for a call to ``audience`` (the called URL).

        Returns the verified claims; raises :class:`AuthenticationError` on any failure.
        It always verifies: ``config.enabled`` is for the caller to decide whether to call it.
        Key material in the token header (``jwk``, ``x5c``, ``x5u``) is never used.
        ``audience`` is the exact URL the client called (e.g. ``request.base_url`` in Flask, with
        the public scheme/host when behind a proxy); a trailing slash is ignored on both sides.
        """
        cfg = self.config
        token = self._bearer_token(authorization)

        # -- header (X3, X5), unverified: only used to choose and pin what is verified below
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise AuthenticationError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or _forbidden_alg(alg) or alg not in cfg.algorithms:
            raise AuthenticationError("alg not allowed")
        if alg not in _KEY_TYPE_FOR_ALG:  # defence in depth against a misconfigured AuthConfig
            raise AuthenticationError("alg not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("missing kid")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthenticationError("bad typ")
        if "crit" in header or "b64" in header:
            raise AuthenticationError("unsupported header")

        # -- issuer and key source (X6)
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthenticationError("missing iss")
        issuer = cfg.issuers.get(iss)
        if issuer is None:
            printable = "".join(ch for ch in iss[:200] if ch.isprintable())
            raise AuthenticationError("untrusted iss", iss=printable)
        jku = header.get("jku")
        if jku is not None and (not isinstance(jku, str) or jku not in issuer.jku):
            raise AuthenticationError("jku not allowed", iss=iss)

        jwk_data = self._find_key(issuer, jku, kid, iss)
        key = self._pyjwk_for(jwk_data, alg, iss)

        # -- signature (X7), algorithm pinned to the header alg, which is allowed and fits the key
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                options={
                    "verify_signature": True,
                    "verify_exp": False,  # time, aud and iss are checked below with our clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError("bad signature", iss=iss) from None
        except jwt.InvalidKeyError:
            raise AuthenticationError("unusable key", iss=iss) from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthenticationError("invalid token", iss=iss) from None

        self._check_claims(claims, issuer, audience)
        return claims

    # ----------------------------------------------------------------- steps

    @staticmethod
    def _bearer_token(authorization: str | None) -> str:
        if authorization is None or not authorization.strip():
            raise AuthenticationError("missing Authorization")
        if len(authorization) > MAX_TOKEN_CHARS:
            raise AuthenticationError("token too large")
        m = _BEARER.fullmatch(authorization.strip())
        if not m:
            raise AuthenticationError("not a Bearer token")
        token = m.group(1)
        if not _COMPACT_JWS.fullmatch(token):
            raise AuthenticationError("malformed token")
        return token

    def _check_claims(self, claims: dict[str, Any], issuer: TrustedIssuer, audience: str) -> None:
        cfg = self.config
        iss = issuer.iss
        if claims.get("iss") != iss:
            raise AuthenticationError("untrusted iss", iss=iss)

        # aud (X4): string or array, equal to the called URL
        want = audience.rstrip("/")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a.rstrip("/") == want for a in auds):
            raise AuthenticationError("wrong aud", iss=iss)

        now = self._clock()
        skew = cfg.clock_skew_seconds
        exp = _number(claims, "exp", iss)
        iat = _number(claims, "iat", iss)
        if exp <= now - skew:
            raise AuthenticationError("expired", iss=iss)
        if iat > now + skew:
            raise AuthenticationError("iat in future", iss=iss)
        if exp < iat:
            raise AuthenticationError("exp before iat", iss=iss)
        if exp - iat > cfg.max_token_lifetime_seconds:
            raise AuthenticationError("lifetime too long", iss=iss)
        if "nbf" in claims and _number(claims, "nbf", iss) > now + skew:
            raise AuthenticationError("not yet valid", iss=iss)

        if issuer.tenants is not None:
            tenant = claims.get("tenant")
            if not isinstance(tenant, str) or tenant not in issuer.tenants:
                raise AuthenticationError("tenant not allowed", iss=iss)

        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise AuthenticationError("missing jti", iss=iss)
        if len(jti) > MAX_JTI_CHARS:
            raise AuthenticationError("jti too long", iss=iss)
        # Remember the jti for as long as the token could still be accepted.
        if self.replay_store.seen(iss, jti, exp + skew):
            raise AuthenticationError("replayed jti", iss=iss)

    def _pyjwk_for(self, jwk_data: dict[str, Any], alg: str, iss: str) -> jwt.PyJWK:
        """The PyJWK for ``alg``, only if the key's type (and curve) fits the algorithm."""
        kty, crv = _KEY_TYPE_FOR_ALG[alg]
        if jwk_data.get("kty") != kty or (crv is not None and jwk_data.get("crv") != crv):
            raise AuthenticationError("key does not fit alg", iss=iss)
        if "alg" in jwk_data and jwk_data["alg"] != alg:
            raise AuthenticationError("key does not fit alg", iss=iss)
        if jwk_data.get("use", "sig") != "sig":
            raise AuthenticationError("key not for signing", iss=iss)
        try:
            return jwt.PyJWK(jwk_data, algorithm=alg)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthenticationError("unusable key", iss=iss) from None

    def _find_key(self, issuer: TrustedIssuer, jku: str | None, kid: str, iss: str) -> dict[str, Any]:
        file_entry = self._file_keys.get(issuer.iss)
        if file_entry is not None:  # pinned keys exchanged out of band: never the network
            assert file_entry.keys is not None
            found = file_entry.keys.get(kid)
            if found is None:
                raise AuthenticationError("unknown kid", iss=iss)
            return found
        url = jku or issuer.jku[0]
        return self._key_from_url(url, kid, iss)

    def _key_from_url(self, url: str, kid: str, iss: str) -> dict[str, Any]:
        with self._lock:
            entry = self._url_cache.setdefault(url, _JwksEntry())
        # Fast path without the entry lock, so a slow refetch does not hold up known keys.
        # (entry.keys is replaced, never mutated, so reading it unlocked is safe.)
        keys, fetched_at = entry.keys, entry.fetched_at
        if keys is not None and kid in keys and self._clock() - fetched_at < self.config.jwks_cache_seconds:
            return keys[kid]
        with entry.lock:  # one fetch per URL at a time; other URLs are not blocked
            now = self._clock()
            fresh = entry.keys is not None and now - entry.fetched_at < self.config.jwks_cache_seconds
            if fresh and kid in entry.keys:  # type: ignore[operator]
                return entry.keys[kid]  # type: ignore[index]
            # Stale, never fetched, or an unknown kid (maybe a rotated key): fetch, rate-limited.
            if now - entry.last_attempt < JWKS_MIN_REFETCH_SECONDS:
                if entry.keys is None or not fresh:
                    raise AuthenticationError("jwks unavailable (refetch rate-limited)", iss=iss)
                raise AuthenticationError("unknown kid", iss=iss)
            entry.last_attempt = now
            if not fresh:
                entry.keys = None  # expired keys are never used again
            entry.keys = self._fetch_jwks(url, iss)
            entry.fetched_at = now
            found = entry.keys.get(kid)
            if found is None:
                raise AuthenticationError("unknown kid", iss=iss)
            return found

    def _fetch_jwks(self, url: str, iss: str) -> dict[str, dict[str, Any]]:
        try:
            resp = self._session.get(
                url,
                timeout=self.config.jwks_timeout_seconds,
                headers={"Accept": "application/json"},
                allow_redirects=False,  # the jku allow-list is exact: do not follow elsewhere
                stream=True,
            )
        except requests.Timeout:
            raise AuthenticationError("jwks fetch failed: timeout", iss=iss) from None
        except requests.RequestException:
            raise AuthenticationError("jwks fetch failed: network error", iss=iss) from None
        try:
            if resp.status_code != 200:
                raise AuthenticationError(f"jwks fetch failed: HTTP {resp.status_code}", iss=iss)
            body = bytearray()
            # requests' timeout is per socket operation; also bound the whole download.
            deadline = time.monotonic() + 2 * self.config.jwks_timeout_seconds
            try:
                for chunk in resp.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > JWKS_MAX_BYTES:
                        raise AuthenticationError("jwks fetch failed: too large", iss=iss)
                    if time.monotonic() > deadline:
                        raise AuthenticationError("jwks fetch failed: timeout", iss=iss)
            except requests.RequestException:
                raise AuthenticationError("jwks fetch failed: network error", iss=iss) from None
        finally:
            resp.close()
        try:
            return _parse_jwks(json.loads(bytes(body)))
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise AuthenticationError("bad jwks json", iss=iss) from None


def _number(claims: Mapping[str, Any], name: str, iss: str) -> float:
    value = claims.get(name)
    if value is None:
        raise AuthenticationError(f"missing {name}", iss=iss)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AuthenticationError(f"bad {name}", iss=iss)
    return float(value)
