"""Authentication of CDS clients (CDS Hooks "Trusting CDS Clients", checklist §8 X1–X7).

A CDS client (an EHR, the public sandbox) sends ``Authorization: Bearer <JWT>`` on every call
(X2). :class:`ClientVerifier` checks that JWT against an allow-list of trusted issuers
(:class:`~cds_hooks.auth.config.AuthConfig`) and returns the
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

Without a ``replay_store`` the jti memory is in memory and therefore **per process**. The service passes
:class:`cds_hooks.storage.replay.DatabaseReplayStore` (anything with ``seen(iss, jti, exp) -> bool`` fits),
which is shared by every worker and host and survives restarts.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import requests

from cds_hooks.auth.config import AuthConfig, TrustedIssuer, _forbidden_alg
from cds_hooks.auth.errors import AuthenticationError
from cds_hooks.auth.jwks import KeySource
from cds_hooks.auth.replay import InMemoryReplayStore, ReplayStore

#: Tokens longer than this are refused before parsing.
MAX_TOKEN_CHARS = 16 * 1024
MAX_JTI_CHARS = 512

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
        self._clock = clock
        # "is None", not "or": an empty store may well be falsy (it has a length)
        self.replay_store: ReplayStore = InMemoryReplayStore(clock=clock) if replay_store is None else replay_store
        # A bad pinned JWKS file is a start-up error (ValueError) raised here.
        self.keys = KeySource(config, session=session, clock=clock)

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

        jwk_data = self.keys.find(issuer, jku, kid, iss)
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

def _number(claims: Mapping[str, Any], name: str, iss: str) -> float:
    value = claims.get(name)
    if value is None:
        raise AuthenticationError(f"missing {name}", iss=iss)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AuthenticationError(f"bad {name}", iss=iss)
    return float(value)
