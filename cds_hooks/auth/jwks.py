"""Where the keys that verify client JWTs come from: a pinned JWKS file, or a ``jku`` URL fetched,
cached and refetched at a bounded rate (X3, X6).

requests is imported when a :class:`KeySource` is made (authentication on), not with this module: reading the
settings imports it either way, and requests is ~40 ms of the service's start-up."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds_hooks.auth.errors import AuthenticationError

if TYPE_CHECKING:
    import requests

    from cds_hooks.auth.config import AuthConfig, TrustedIssuer

#: At most one network fetch of a given JWKS URL per this many seconds, whatever triggers it
#: (an unknown ``kid``, a failed fetch, expiry), so that tokens cannot force fetch storms.
JWKS_MIN_REFETCH_SECONDS = 60.0
#: A JWKS larger than this is refused (a JWKS holds a handful of public keys).
JWKS_MAX_BYTES = 256 * 1024


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


class _JwksEntry:
    __slots__ = ("fetched_at", "keys", "last_attempt", "lock")

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] | None = None
        self.fetched_at = float("-inf")
        self.last_attempt = float("-inf")
        self.lock = threading.Lock()


class KeySource:
    """The public keys of the trusted issuers: pinned files loaded once, URLs fetched and cached."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import requests

        self.config = config
        self._session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._url_cache: dict[str, _JwksEntry] = {}
        # Out-of-band JWKS files are loaded once, now: a bad file is a start-up error (ValueError).
        self._file_keys: dict[str, _JwksEntry] = {}
        for issuer in config.issuers.values():
            if issuer.jwks_file:
                entry = _JwksEntry()
                entry.keys = _read_jwks_file(issuer.jwks_file)
                self._file_keys[issuer.iss] = entry

    def find(self, issuer: TrustedIssuer, jku: str | None, kid: str, iss: str) -> dict[str, Any]:
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
        import requests

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
