"""Client authentication (checklist §8 X2–X7, §12): real keys, real signatures, network mocked only.

Tokens are signed with PyJWT using EC P-384 and RSA keys generated here; the JWKS is served by
``responses`` (the network) or read from a file in ``tmp_path``. A fake clock drives expiry,
the JWKS cache and the replay store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_hooks.auth import (
    DEFAULT_ALGORITHMS,
    JWKS_MIN_REFETCH_SECONDS,
    SANDBOX_ISSUER,
    SANDBOX_JKU,
    SANDBOX_JWKS_FILE,
    AuthConfig,
    AuthenticationError,
    ClientVerifier,
    InMemoryReplayStore,
    TrustedIssuer,
    load_auth_config,
)

NOW = 1_750_000_000.0
ISS = "https://ehr.example.org"
JKU = "https://ehr.example.org/.well-known/jwks.json"
JKU2 = "https://ehr.example.org/keys/second.json"
FILE_ISS = "https://partner.example.net"
TENANT_ISS = "https://multi.example.com"
TENANT_JKU = "https://multi.example.com/jwks"
AUD = "https://cds.example.org/cds-services/cramp-order-select"

# Keys: generated once per module (RSA 2048 is the slow one).
EC_KEY = ec.generate_private_key(ec.SECP384R1())
EC_OTHER = ec.generate_private_key(ec.SECP384R1())  # same kid, different key: a forger
EC_ROTATED = ec.generate_private_key(ec.SECP384R1())
EC_P256 = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, alg: str = "ES384") -> dict[str, Any]:
    d = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**d, "kid": kid, "alg": alg, "use": "sig"}


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, alg: str = "RS384") -> dict[str, Any]:
    d = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**d, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [ec_jwk(EC_KEY, "ec-1"), rsa_jwk(RSA_KEY, "rsa-1")]}


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "jti": str(uuid.uuid4()),
    }
    for k, v in overrides.items():
        if v is ...:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def token(
    key: Any = EC_KEY,
    alg: str = "ES384",
    *,
    kid: str | None = "ec-1",
    jku: str | None = JKU,
    header: dict[str, Any] | None = None,
    **claim_overrides: Any,
) -> str:
    h: dict[str, Any] = {"typ": "JWT"}
    if kid is not None:
        h["kid"] = kid
    if jku is not None:
        h["jku"] = jku
    h.update(header or {})
    return jwt.encode(claims(**claim_overrides), key, algorithm=alg, headers=h)


def bearer(tok: str) -> str:
    return f"Bearer {tok}"


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    p = tmp_path / "partner-jwks.json"
    p.write_text(json.dumps({"keys": [ec_jwk(EC_KEY, "file-ec"), rsa_jwk(RSA_KEY, "file-rsa")]}))
    return p


@pytest.fixture
def config(jwks_file: Path) -> AuthConfig:
    return AuthConfig(
        issuers={
            ISS: TrustedIssuer(iss=ISS, jku=(JKU, JKU2)),
            FILE_ISS: TrustedIssuer(iss=FILE_ISS, jwks_file=str(jwks_file)),
            TENANT_ISS: TrustedIssuer(
                iss=TENANT_ISS, jku=(TENANT_JKU,), tenants=("hospital-a", "hospital-b")
            ),
        }
    )


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as r:
        r.get(JKU, json=JWKS)
        yield r


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(config: AuthConfig, clock: FakeClock, rsps: responses.RequestsMock) -> ClientVerifier:
    return ClientVerifier(config, clock=clock)


def fetches(rsps: responses.RequestsMock, url: str = JKU) -> int:
    return sum(1 for c in rsps.calls if c.request.url == url)


def accepted(verifier: ClientVerifier, authorization: str, aud: str = AUD) -> dict[str, Any]:
    """Verify, and check that the claims returned are exactly the token's own."""
    claims_back = verifier.verify(authorization, aud)
    assert claims_back == jwt.decode(authorization.split()[-1], options={"verify_signature": False})
    return claims_back


def rejected(verifier: ClientVerifier, authorization: str | None, aud: str = AUD) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(authorization, aud)
    return info.value


# --------------------------------------------------------------------------- accepted tokens


def test_x5_es384_token_from_jku_accepted(verifier, rsps):
    c = verifier.verify(bearer(token()), AUD)
    assert c["iss"] == ISS and c["aud"] == AUD
    assert fetches(rsps) == 1


def test_x5_rs384_token_accepted(verifier):
    c = verifier.verify(bearer(token(RSA_KEY, "RS384", kid="rsa-1")), AUD)
    assert c["iss"] == ISS


def test_x4_aud_array_containing_url_accepted(verifier):
    c = verifier.verify(bearer(token(aud=["https://other.example.org", AUD])), AUD)
    assert AUD in c["aud"]


def test_x4_aud_trailing_slash_ignored(verifier):
    accepted(verifier, bearer(token(aud=AUD + "/")), AUD)
    accepted(verifier, bearer(token()), AUD + "/")


def test_x3_without_jku_header_uses_first_configured_jku(verifier, rsps):
    accepted(verifier, bearer(token(jku=None)), AUD)
    assert fetches(rsps) == 1


def test_x3_second_allowed_jku_is_fetched(verifier, rsps):
    rsps.get(JKU2, json={"keys": [ec_jwk(EC_ROTATED, "second")]})
    accepted(verifier, bearer(token(EC_ROTATED, jku=JKU2, kid="second")), AUD)
    assert fetches(rsps, JKU2) == 1 and fetches(rsps) == 0


def test_x3_jwks_file_issuer_accepted_without_network(verifier, rsps):
    accepted(verifier, bearer(token(iss=FILE_ISS, kid="file-ec", jku=None)), AUD)
    accepted(verifier, bearer(token(RSA_KEY, "RS384", iss=FILE_ISS, kid="file-rsa", jku=None)), AUD)
    assert len(rsps.calls) == 0


def test_x7_jwks_cached_between_calls_and_refreshed_after_expiry(verifier, rsps, clock):
    accepted(verifier, bearer(token()), AUD)
    accepted(verifier, bearer(token(RSA_KEY, "RS384", kid="rsa-1")), AUD)
    assert fetches(rsps) == 1
    clock.advance(verifier.config.jwks_cache_seconds + 1)
    accepted(verifier, bearer(token(iat=int(clock.now), exp=int(clock.now) + 60)), AUD)
    assert fetches(rsps) == 2


def test_x4_tenant_in_allow_list_accepted(verifier, rsps):
    rsps.get(TENANT_JKU, json=JWKS)
    c = verifier.verify(bearer(token(iss=TENANT_ISS, jku=TENANT_JKU, tenant="hospital-b")), AUD)
    assert c["tenant"] == "hospital-b"


def test_x7_exp_within_clock_skew_accepted(verifier, clock):
    tok = token(iat=int(NOW) - 100, exp=int(NOW) - 30)  # expired 30 s ago, skew is 60 s
    accepted(verifier, bearer(tok), AUD)


def test_x2_bearer_scheme_is_case_insensitive(verifier):
    accepted(verifier, "bearer  " + token(), AUD)


# --------------------------------------------------------------------------- signature and algorithm


def test_x7_bad_signature_other_key_same_kid(verifier):
    err = rejected(verifier, bearer(token(EC_OTHER)))
    assert err.reason == "bad signature"


def test_x7_tampered_payload_rejected(verifier):
    h, _, s = token().split(".")
    forged = b64url(json.dumps(claims(sub="someone-else")).encode())
    assert rejected(verifier, bearer(f"{h}.{forged}.{s}")).reason == "bad signature"


def test_x5_alg_none_rejected(verifier, rsps):
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    err = rejected(verifier, bearer(f"{header}.{payload}."))
    assert err.reason == "alg not allowed"
    assert len(rsps.calls) == 0


@pytest.mark.parametrize("alg", ["None", "NONE"])
def test_x5_alg_none_any_case_rejected(verifier, alg):
    header = b64url(json.dumps({"alg": alg, "kid": "ec-1"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    assert rejected(verifier, bearer(f"{header}.{payload}.")).reason == "alg not allowed"


def _hs256_with_public_pem(kid: str) -> str:
    """The classic confusion attack: HMAC-SHA256 keyed with the server's public key PEM."""
    pem = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid, "jku": JKU}).encode())
    payload = b64url(json.dumps(claims()).encode())
    sig = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def test_x5_hs256_with_public_key_pem_as_secret_rejected(verifier):
    assert rejected(verifier, bearer(_hs256_with_public_pem("ec-1"))).reason == "alg not allowed"


def test_x5_hs256_refused_even_if_config_is_tampered(config, clock, rsps):
    # AuthConfig refuses HS256; force it in anyway to show verify() refuses on its own.
    object.__setattr__(config, "algorithms", (*config.algorithms, "HS256"))
    v = ClientVerifier(config, clock=clock)
    assert rejected(v, bearer(_hs256_with_public_pem("ec-1"))).reason == "alg not allowed"


def test_x5_alg_outside_configured_list_rejected(config, clock, rsps):
    only_es384 = AuthConfig(issuers=config.issuers, algorithms=("ES384",))
    v = ClientVerifier(only_es384, clock=clock)
    assert rejected(v, bearer(token(RSA_KEY, "RS384", kid="rsa-1"))).reason == "alg not allowed"


def test_x5_key_type_must_fit_alg(verifier, rsps):
    # RS384 header pointing at the EC key, and ES256 (P-256) pointing at the P-384 key.
    assert rejected(verifier, bearer(token(RSA_KEY, "RS384", kid="ec-1"))).reason == "key does not fit alg"
    assert rejected(verifier, bearer(token(EC_P256, "ES256", kid="ec-1"))).reason == "key does not fit alg"


def test_x5_key_alg_member_must_match_header_alg(verifier, rsps):
    # rsa-1 is published for RS384 only; a PS384 token naming it is refused.
    assert rejected(verifier, bearer(token(RSA_KEY, "PS384", kid="rsa-1"))).reason == "key does not fit alg"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_x5_weak_rsa_key_rejected(config, clock, rsps):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsps.get(JKU2, json={"keys": [rsa_jwk(weak, "weak")]})
    v = ClientVerifier(config, clock=clock)
    assert rejected(v, bearer(token(weak, "RS384", kid="weak", jku=JKU2))).reason == "unusable key"


# --------------------------------------------------------------------------- header checks (X3)


def test_x3_missing_kid_rejected(verifier):
    assert rejected(verifier, bearer(token(kid=None))).reason == "missing kid"


def test_x3_typ_other_than_jwt_rejected(verifier):
    assert rejected(verifier, bearer(token(header={"typ": "at+jwt"}))).reason == "bad typ"


def test_x3_typ_absent_accepted(verifier):
    tok = jwt.encode(claims(), EC_KEY, algorithm="ES384", headers={"kid": "ec-1", "typ": None})
    assert "typ" not in jwt.get_unverified_header(tok)
    accepted(verifier, bearer(tok), AUD)


def test_x3_crit_header_rejected(verifier):
    h = b64url(json.dumps({"alg": "ES384", "kid": "ec-1", "crit": ["exp"], "exp": 1}).encode())
    p = b64url(json.dumps(claims()).encode())
    assert rejected(verifier, bearer(f"{h}.{p}.AAAA")).reason in ("malformed token", "unsupported header")


def test_x3_unknown_kid_refetches_once_then_fails(verifier, rsps, clock):
    accepted(verifier, bearer(token()), AUD)
    assert fetches(rsps) == 1
    # Right after a fetch, an unknown kid does not refetch (at most one fetch per URL per 60 s).
    assert rejected(verifier, bearer(token(kid="nope"))).reason == "unknown kid"
    assert fetches(rsps) == 1
    clock.advance(JWKS_MIN_REFETCH_SECONDS + 1)
    assert rejected(verifier, bearer(token(kid="nope"))).reason == "unknown kid"
    assert fetches(rsps) == 2  # one refetch, in case the key was rotated
    for _ in range(5):  # an attacker cannot force a fetch storm
        assert rejected(verifier, bearer(token(kid=f"nope-{_}"))).reason == "unknown kid"
    assert fetches(rsps) == 2
    accepted(verifier, bearer(token()), AUD)  # known keys still work during the rate limit
    clock.advance(JWKS_MIN_REFETCH_SECONDS + 1)
    assert rejected(verifier, bearer(token(kid="nope", iat=int(clock.now)))).reason == "unknown kid"
    assert fetches(rsps) == 3


def test_x3_rotated_key_accepted_after_refetch(config, clock):
    rotated = {"keys": [*JWKS["keys"], ec_jwk(EC_ROTATED, "ec-2")]}
    with responses.RequestsMock() as r:
        r.get(JKU, json=JWKS)
        r.get(JKU, json=rotated)  # responses serves registrations in order
        v = ClientVerifier(config, clock=clock)
        accepted(v, bearer(token()), AUD)
        clock.advance(JWKS_MIN_REFETCH_SECONDS + 1)  # the client rotates its key a while later
        c = v.verify(bearer(token(EC_ROTATED, kid="ec-2")), AUD)
        assert c["iss"] == ISS
        assert len(r.calls) == 2


# --------------------------------------------------------------------------- issuer and jku (X6)


def test_x6_untrusted_iss_rejected(verifier, rsps):
    err = rejected(verifier, bearer(token(iss="https://evil.example.com")))
    assert err.reason == "untrusted iss"
    assert err.iss == "https://evil.example.com"
    assert len(rsps.calls) == 0


def test_x6_untrusted_iss_is_sanitised_for_the_log(verifier):
    err = rejected(verifier, bearer(token(iss="https://evil\n\x1b[31mx" + "y" * 500)))
    assert err.iss is not None and "\n" not in err.iss and "\x1b" not in err.iss and len(err.iss) <= 200


def test_x3_key_embedded_in_header_is_never_used(verifier):
    embedded = ec_jwk(EC_OTHER, "attacker")
    tok = token(EC_OTHER, kid="attacker", header={"jwk": embedded})
    assert rejected(verifier, bearer(tok)).reason == "unknown kid"


def test_x6_missing_iss_rejected(verifier):
    assert rejected(verifier, bearer(token(iss=...))).reason == "missing iss"


def test_x6_jku_not_in_allow_list_rejected_without_fetch(verifier, rsps):
    evil = "https://evil.example.com/.well-known/jwks.json"
    rsps.get(evil, json=JWKS)
    assert rejected(verifier, bearer(token(jku=evil))).reason == "jku not allowed"
    assert len(rsps.calls) == 0


def test_x6_jku_prefix_trick_rejected(verifier):
    assert rejected(verifier, bearer(token(jku=JKU + "?x=1"))).reason == "jku not allowed"
    assert rejected(verifier, bearer(token(jku=JKU + "/"))).reason == "jku not allowed"


def test_x6_file_issuer_rejects_any_jku_header(verifier):
    tok = token(iss=FILE_ISS, kid="file-ec", jku="https://partner.example.net/jwks.json")
    assert rejected(verifier, bearer(tok)).reason == "jku not allowed"


def test_x6_other_issuers_key_not_usable(verifier):
    # A valid key of ISS cannot sign for FILE_ISS (keys are looked up per issuer).
    assert rejected(verifier, bearer(token(iss=FILE_ISS, kid="ec-1", jku=None))).reason == "unknown kid"


# --------------------------------------------------------------------------- claims (X4, X7)


def test_x4_wrong_aud_rejected(verifier):
    err = rejected(verifier, bearer(token(aud="https://cds.example.org/cds-services/other")))
    assert err.reason == "wrong aud"


@pytest.mark.parametrize(
    "aud", [..., None, 42, [], ["https://x.example"], {"u": AUD}, "https://cds.example.org"]
)
def test_x4_missing_or_bad_aud_rejected(verifier, aud):
    assert rejected(verifier, bearer(token(aud=aud))).reason == "wrong aud"


def test_x4_aud_scheme_and_host_must_match(verifier):
    assert rejected(verifier, bearer(token(aud=AUD.replace("https", "http")))).reason == "wrong aud"


def test_x7_expired_rejected(verifier):
    tok = token(iat=int(NOW) - 400, exp=int(NOW) - 61)
    assert rejected(verifier, bearer(tok)).reason == "expired"


def test_x7_expires_while_held(verifier, clock):
    tok = token()
    clock.advance(300 + 60)
    assert rejected(verifier, bearer(tok)).reason == "expired"


def test_x4_iat_in_future_rejected(verifier):
    tok = token(iat=int(NOW) + 120, exp=int(NOW) + 300)
    assert rejected(verifier, bearer(tok)).reason == "iat in future"


def test_x4_iat_within_skew_accepted(verifier):
    accepted(verifier, bearer(token(iat=int(NOW) + 30)), AUD)


def test_x7_lifetime_too_long_rejected(verifier):
    tok = token(iat=int(NOW), exp=int(NOW) + 3601)
    assert rejected(verifier, bearer(tok)).reason == "lifetime too long"


def test_x4_nbf_in_future_rejected(verifier):
    assert rejected(verifier, bearer(token(nbf=int(NOW) + 600))).reason == "not yet valid"


@pytest.mark.parametrize(
    ("claim", "value", "reason"),
    [
        ("exp", ..., "missing exp"),
        ("iat", ..., "missing iat"),
        ("jti", ..., "missing jti"),
        ("jti", "", "missing jti"),
        ("exp", "tomorrow", "bad exp"),
        ("iat", True, "bad iat"),
    ],
)
def test_x4_required_claims(verifier, claim, value, reason):
    assert rejected(verifier, bearer(token(**{claim: value}))).reason == reason


def test_x4_non_string_jti_rejected(verifier):
    assert rejected(verifier, bearer(token(jti=123))).reason in ("invalid token", "missing jti")


def test_x7_replayed_jti_rejected(verifier):
    tok = token()
    accepted(verifier, bearer(tok), AUD)
    assert rejected(verifier, bearer(tok)).reason == "replayed jti"
    # A fresh token reusing the jti is a replay too; another issuer may use the same jti.
    jti = jwt.decode(tok, options={"verify_signature": False})["jti"]
    assert rejected(verifier, bearer(token(jti=jti))).reason == "replayed jti"
    accepted(verifier, bearer(token(iss=FILE_ISS, kid="file-ec", jku=None, jti=jti)), AUD)


def test_x7_failed_token_does_not_burn_its_jti(verifier):
    jti = "once"
    assert rejected(verifier, bearer(token(EC_OTHER, jti=jti))).reason == "bad signature"
    assert rejected(verifier, bearer(token(jti=jti, aud="https://wrong.example"))).reason == "wrong aud"
    accepted(verifier, bearer(token(jti=jti)), AUD)


@pytest.mark.parametrize(
    ("tenant", "reason"), [(..., "tenant not allowed"), ("hospital-z", "tenant not allowed")]
)
def test_x7_tenant_not_allowed(verifier, rsps, tenant, reason):
    rsps.get(TENANT_JKU, json=JWKS)
    tok = token(iss=TENANT_ISS, jku=TENANT_JKU, tenant=tenant)
    assert rejected(verifier, bearer(tok)).reason == reason


def test_x4_tenant_ignored_when_issuer_has_no_tenant_list(verifier):
    accepted(verifier, bearer(token(tenant="anything")), AUD)


# --------------------------------------------------------------------------- malformed input


def test_x2_missing_authorization_rejected(verifier):
    assert rejected(verifier, None).reason == "missing Authorization"
    assert rejected(verifier, "").reason == "missing Authorization"
    assert rejected(verifier, "   ").reason == "missing Authorization"


def _seg(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


GARBAGE = [
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer ",
    "Token abc.def.ghi",
    "Bearer abc",
    "Bearer a.b",
    "Bearer a.b.c.d.e",
    "Bearer !!!.@@@.###",
    "Bearer e30.e30.",
    "Bearer ..",
    "Bearer x.y.z extra",
    "Bearer " + b64url(b"not json") + "." + _seg({}) + ".",
    "Bearer " + _seg([1, 2]) + "." + _seg({}) + ".",
    "Bearer " + _seg({"alg": "ES384", "kid": "ec-1"}) + "." + b64url(b"\xff\xfe") + ".AAAA",
    "Bearer " + _seg({"alg": "ES384", "kid": "ec-1"}) + "." + _seg([1]) + ".AAAA",
    "Bearer " + _seg({"alg": "ES384", "kid": 7}) + "." + _seg(claims()) + ".AAAA",
    "Bearer " + _seg({"alg": ["ES384"], "kid": "ec-1"}) + "." + _seg(claims()) + ".AAAA",
    "Bearer " + _seg({"alg": "ES384", "kid": "ec-1"}) + "." + _seg(claims()) + ".AAAA",  # short sig
    "Bearer " + _seg({"alg": "ES384", "kid": "ec-1", "jku": 5}) + "." + _seg(claims()) + ".AAAA",
    "Bearer " + _seg({"alg": "ES384", "kid": "ec-1", "b64": False}) + ".." + "AAAA",
    "Bearer " + _seg({"alg": "ES384", "kid": "ec-1"}) + "." + _seg(claims(iss=["x"])) + ".AAAA",
    "Bearer " + "a" * 20000 + ".b.c",
    "Bearer h\u00e9.llo.w",
]


@pytest.mark.parametrize("authorization", GARBAGE, ids=range(len(GARBAGE)))
def test_x3_malformed_tokens_rejected_cleanly(verifier, authorization):
    err = rejected(verifier, authorization)
    assert err.reason and len(err.reason) < 60
    token_part = authorization.split(" ", 1)[-1]
    if len(token_part) > 8:
        assert token_part not in err.reason and token_part not in str(err)


def test_x3_random_garbage_never_raises_other_exceptions(verifier):
    rng = random.Random(1234)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.= "
    good = token()
    rejected_count = 0
    for _ in range(300):
        if rng.random() < 0.5:
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        else:  # mutate a valid token
            chars = list(good)
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            s = "".join(chars)
        try:
            accepted(verifier, "Bearer " + s, AUD)
        except AuthenticationError:
            rejected_count += 1
        # Any other exception propagates and fails the test. A mutation can be a no-op (same
        # character, or base64 padding bits), so a rare acceptance is not an error.
    assert rejected_count >= 290


def test_x7_reason_never_contains_the_token(verifier):
    tok = token(iss="https://evil.example.com")
    err = rejected(verifier, bearer(tok))
    assert tok not in str(err) and tok not in err.reason and tok not in repr(err)


# --------------------------------------------------------------------------- JWKS network failures


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ({"body": requests.exceptions.ConnectTimeout()}, "jwks fetch failed: timeout"),
        ({"body": requests.exceptions.ReadTimeout()}, "jwks fetch failed: timeout"),
        ({"body": requests.exceptions.ConnectionError()}, "jwks fetch failed: network error"),
        ({"status": 500, "body": "oops"}, "jwks fetch failed: HTTP 500"),
        ({"status": 404, "json": {}}, "jwks fetch failed: HTTP 404"),
        (
            {"status": 302, "headers": {"Location": "https://elsewhere.example/jwks"}},
            "jwks fetch failed: HTTP 302",
        ),
        ({"body": "<html>not json</html>"}, "bad jwks json"),
        ({"json": {"keys": "nope"}}, "bad jwks json"),
        ({"json": {"keys": [{"kty": "EC"}]}}, "bad jwks json"),
        ({"json": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "ec-1"}]}}, "bad jwks json"),
        ({"body": b"\xff\xfe\x00"}, "bad jwks json"),
        ({"body": "{" + " " * (300 * 1024) + "}"}, "jwks fetch failed: too large"),
    ],
    ids=[
        "connect-timeout",
        "read-timeout",
        "conn-error",
        "500",
        "404",
        "redirect",
        "html",
        "keys-not-list",
        "no-kid",
        "symmetric",
        "binary",
        "too-large",
    ],
)
def test_x7_jwks_fetch_failures_rejected(config, clock, response, reason):
    with responses.RequestsMock() as r:
        r.get(JKU, **response)
        v = ClientVerifier(config, clock=clock)
        assert rejected(v, bearer(token())).reason == reason


def test_x7_jwks_fetch_passes_timeout(config, clock):
    with responses.RequestsMock() as r:
        r.get(JKU, json=JWKS)
        ClientVerifier(config, clock=clock).verify(bearer(token()), AUD)
        assert r.calls[0].request.req_kwargs["timeout"] == config.jwks_timeout_seconds


def test_x7_failed_fetch_is_retried_only_after_the_rate_limit(config, clock):
    with responses.RequestsMock() as r:
        r.get(JKU, status=500)
        r.get(JKU, json=JWKS)
        v = ClientVerifier(config, clock=clock)
        assert rejected(v, bearer(token())).reason == "jwks fetch failed: HTTP 500"
        assert rejected(v, bearer(token())).reason == "jwks unavailable (refetch rate-limited)"
        assert len(r.calls) == 1
        clock.advance(JWKS_MIN_REFETCH_SECONDS + 1)
        accepted(v, bearer(token(iat=int(clock.now))), AUD)
        assert len(r.calls) == 2


def test_x7_failed_refetch_keeps_the_known_keys(config, clock):
    with responses.RequestsMock() as r:
        r.get(JKU, json=JWKS)
        r.get(JKU, status=503)
        v = ClientVerifier(config, clock=clock)
        accepted(v, bearer(token()), AUD)
        clock.advance(JWKS_MIN_REFETCH_SECONDS + 1)
        assert rejected(v, bearer(token(kid="new"))).reason == "jwks fetch failed: HTTP 503"
        accepted(v, bearer(token()), AUD)
        assert len(r.calls) == 2


# --------------------------------------------------------------------------- replay store


def test_x7_replay_store_remembers_until_exp_then_purges():
    clock = FakeClock()
    store = InMemoryReplayStore(clock=clock)
    assert store.seen("iss", "a", NOW + 10) is False
    assert store.seen("iss", "a", NOW + 10) is True
    assert store.seen("other-iss", "a", NOW + 10) is False
    assert store.seen("iss", "b", NOW + 100) is False
    assert len(store) == 3
    clock.advance(11)
    assert len(store) == 1  # the two "a" entries are purged
    assert store.seen("iss", "a", NOW + 50) is False
    clock.advance(100)
    assert len(store) == 0


def test_x7_replay_store_is_thread_safe():
    store = InMemoryReplayStore(clock=FakeClock())
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        r = store.seen("iss", "same", NOW + 60)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(False) == 1 and results.count(True) == 15


def test_x7_verifier_keeps_jti_for_token_life_plus_skew(verifier, clock):
    accepted(verifier, bearer(token()), AUD)
    store = verifier.replay_store
    assert isinstance(store, InMemoryReplayStore) and len(store) == 1
    clock.advance(300 + 59)
    assert len(store) == 1
    clock.advance(2)
    assert len(store) == 0


def test_x7_pluggable_replay_store(config, clock, rsps):
    calls: list[tuple[str, str, float]] = []

    class Shared:
        def seen(self, iss: str, jti: str, exp: float) -> bool:
            calls.append((iss, jti, exp))
            return len(calls) > 1

    v = ClientVerifier(config, clock=clock, replay_store=Shared())
    accepted(v, bearer(token(jti="j1")), AUD)
    assert calls == [(ISS, "j1", NOW + 300 + 60)]
    assert rejected(v, bearer(token(jti="j2"))).reason == "replayed jti"


# --------------------------------------------------------------------------- sandbox (§12)


def test_s12_sandbox_jwks_file_is_public_p384_es384():
    doc = json.loads(Path(SANDBOX_JWKS_FILE).read_text())
    (key,) = doc["keys"]
    assert key["kid"] == "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-384", "ES384", "sig")
    assert "d" not in key and set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    pub = jwt.PyJWK(key).key  # the point is validated on the curve by cryptography
    assert pub.curve.name == "secp384r1"


def test_s12_sandbox_token_checked_against_shipped_key_without_network(clock):
    cfg = load_auth_config({"CRAMP_TRUST_CDS_HOOKS_SANDBOX": "1"})
    with responses.RequestsMock() as r:  # no URL registered: any fetch would fail the test
        v = ClientVerifier(cfg, clock=clock)
        # Sandbox-shaped token (§12 header) but signed by us: the key is found, the signature fails.
        tok = token(kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f", jku=SANDBOX_JKU, iss=SANDBOX_ISSUER)
        assert rejected(v, bearer(tok)).reason == "bad signature"
        assert len(r.calls) == 0


# --------------------------------------------------------------------------- configuration


def write_clients(tmp_path: Path, clients: Any, name: str = "clients.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"clients": clients}) if not isinstance(clients, str) else clients)
    return p


def test_config_defaults_when_off():
    cfg = load_auth_config({}, default_enabled=False)
    assert cfg.enabled is False
    assert cfg.algorithms == DEFAULT_ALGORITHMS
    assert cfg.clock_skew_seconds == 60 and cfg.max_token_lifetime_seconds == 3600
    assert cfg.jwks_timeout_seconds == 5.0 and cfg.jwks_cache_seconds == 3600
    assert dict(cfg.issuers) == {}


def test_config_on_without_clients_is_an_error():
    with pytest.raises(ValueError, match="CRAMP_TRUSTED_CLIENTS"):
        load_auth_config({})
    with pytest.raises(ValueError, match="CRAMP_TRUSTED_CLIENTS"):
        load_auth_config({"CRAMP_AUTH": "on"}, default_enabled=False)


@pytest.mark.parametrize(("value", "enabled"), [("off", False), ("OFF", False), ("on", True), ("On", True)])
def test_config_cramp_auth_switch(tmp_path, value, enabled):
    p = write_clients(tmp_path, [{"iss": ISS, "jku": [JKU]}])
    cfg = load_auth_config(
        {"CRAMP_AUTH": value, "CRAMP_TRUSTED_CLIENTS": str(p)}, default_enabled=not enabled
    )
    assert cfg.enabled is enabled


def test_config_bad_cramp_auth_value():
    with pytest.raises(ValueError, match="CRAMP_AUTH"):
        load_auth_config({"CRAMP_AUTH": "maybe"})


def test_config_file_parsing(tmp_path, jwks_file):
    sub = tmp_path / "keys"
    sub.mkdir()
    (sub / "p.json").write_text(jwks_file.read_text())
    p = write_clients(
        tmp_path,
        [
            {"iss": ISS, "jku": [JKU, JKU2], "name": "Example EHR"},
            {"iss": FILE_ISS, "jwks_file": "keys/p.json"},
            {"iss": TENANT_ISS, "jku": [TENANT_JKU], "tenants": ["hospital-a"]},
        ],
    )
    cfg = load_auth_config(
        {
            "CRAMP_TRUSTED_CLIENTS": str(p),
            "CRAMP_JWT_ALGORITHMS": " ES384 , RS384 ",
            "CRAMP_JWT_CLOCK_SKEW": "30",
        }
    )
    assert cfg.enabled is True
    assert cfg.algorithms == ("ES384", "RS384")
    assert cfg.clock_skew_seconds == 30
    assert cfg.issuers[ISS] == TrustedIssuer(iss=ISS, jku=(JKU, JKU2))
    assert cfg.issuers[FILE_ISS].jwks_file == str((sub / "p.json").resolve())
    assert cfg.issuers[TENANT_ISS].tenants == ("hospital-a",)
    with pytest.raises(TypeError):
        cfg.issuers["x"] = cfg.issuers[ISS]  # type: ignore[index]


def test_config_file_clients_verify_end_to_end(tmp_path, jwks_file, clock):
    p = write_clients(tmp_path, [{"iss": FILE_ISS, "jwks_file": str(jwks_file)}])
    v = ClientVerifier(load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)}), clock=clock)
    assert v.verify(bearer(token(iss=FILE_ISS, kid="file-ec", jku=None)), AUD)["iss"] == FILE_ISS


@pytest.mark.parametrize("algs", ["HS256", "ES384,HS256", "RS384, hs512", "none", "ES384,None"])
def test_config_x5_symmetric_or_none_algorithms_refused(algs):
    with pytest.raises(ValueError, match="CRAMP_JWT_ALGORITHMS.*not allowed"):
        load_auth_config({"CRAMP_JWT_ALGORITHMS": algs}, default_enabled=False)


def test_config_unknown_algorithm_refused():
    with pytest.raises(ValueError, match="CRAMP_JWT_ALGORITHMS.*unsupported"):
        load_auth_config({"CRAMP_JWT_ALGORITHMS": "ES384,XY999"}, default_enabled=False)


def test_config_x5_authconfig_itself_refuses_hs256():
    with pytest.raises(ValueError, match="HS256"):
        AuthConfig(algorithms=("ES384", "HS256"))


@pytest.mark.parametrize("skew", ["abc", "-1", "301", "1.5"])
def test_config_bad_clock_skew(skew):
    with pytest.raises(ValueError, match="CRAMP_JWT_CLOCK_SKEW"):
        load_auth_config({"CRAMP_JWT_CLOCK_SKEW": skew}, default_enabled=False)


def test_config_missing_file_named(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=r"CRAMP_TRUSTED_CLIENTS file .*nope\.json"):
        load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(missing)})


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps([1]), '"clients" array'),
        (json.dumps({"clients": {}}), '"clients" array'),
        ([42], r"clients\[0\]: must be an object"),
        ([{"jku": [JKU]}], r"clients\[0\]: iss must be"),
        ([{"iss": ISS}], r"clients\[0\] \(iss https://ehr\.example\.org\): needs jku URLs or a jwks_file"),
        ([{"iss": ISS, "jku": JKU}], "jku must be an array"),
        ([{"iss": ISS, "jku": ["http://ehr.example.org/jwks"]}], "must be an absolute https"),
        ([{"iss": ISS, "jku": ["/relative/jwks"]}], "must be an absolute https"),
        ([{"iss": ISS, "jwks_url": JKU}], "unknown field.*jwks_url"),
        ([{"iss": ISS, "jku": [JKU]}, {"iss": ISS, "jku": [JKU]}], r"clients\[1\].*duplicate iss"),
        ([{"iss": ISS, "jku": [JKU], "tenants": []}], "tenants must be"),
        ([{"iss": ISS, "jwks_file": "absent.json"}], r"clients\[0\].*JWKS file .*absent\.json"),
    ],
)
def test_config_bad_file_names_file_and_entry(tmp_path, content, match):
    p = write_clients(tmp_path, content)
    with pytest.raises(ValueError, match=match) as info:
        load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)})
    assert str(p) in str(info.value)


def test_config_jwks_file_with_private_key_refused(tmp_path):
    bad = tmp_path / "private.json"
    d = ECAlgorithm.to_jwk(EC_KEY, as_dict=True)  # includes "d"
    bad.write_text(json.dumps({"keys": [{**d, "kid": "k"}]}))
    p = write_clients(tmp_path, [{"iss": ISS, "jwks_file": "private.json"}])
    with pytest.raises(ValueError, match="private or symmetric"):
        load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)})


def test_config_loopback_http_jku_allowed_for_local_tests(tmp_path):
    p = write_clients(tmp_path, [{"iss": ISS, "jku": ["http://127.0.0.1:8765/jwks.json"]}])
    assert load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)}).issuers[ISS].jku == (
        "http://127.0.0.1:8765/jwks.json",
    )


def test_config_sandbox_trust_flag(tmp_path):
    cfg = load_auth_config({"CRAMP_TRUST_CDS_HOOKS_SANDBOX": "1"})
    sb = cfg.issuers[SANDBOX_ISSUER]
    assert sb.jku == (SANDBOX_JKU,) and sb.jwks_file == SANDBOX_JWKS_FILE
    assert Path(SANDBOX_JWKS_FILE).parent.name == "trust"
    assert (
        SANDBOX_ISSUER
        not in load_auth_config({"CRAMP_TRUST_CDS_HOOKS_SANDBOX": "0"}, default_enabled=False).issuers
    )
    # Together with a clients file, both are trusted; listing the sandbox twice is an error.
    p = write_clients(tmp_path, [{"iss": ISS, "jku": [JKU]}])
    both = load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p), "CRAMP_TRUST_CDS_HOOKS_SANDBOX": "1"})
    assert set(both.issuers) == {ISS, SANDBOX_ISSUER}
    dup = write_clients(tmp_path, [{"iss": SANDBOX_ISSUER, "jku": [SANDBOX_JKU]}], name="dup.json")
    with pytest.raises(ValueError, match="CRAMP_TRUST_CDS_HOOKS_SANDBOX"):
        load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(dup), "CRAMP_TRUST_CDS_HOOKS_SANDBOX": "1"})


def test_config_bad_jwks_file_at_verifier_start(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    cfg = AuthConfig(issuers={FILE_ISS: TrustedIssuer(iss=FILE_ISS, jwks_file=str(bad))})
    with pytest.raises(ValueError, match=r"bad\.json"):
        ClientVerifier(cfg)


# =========================================================================== limits (issue 18: mutation testing)
# Every bound tried on both sides (clock skew, token lifetime, nbf), every configuration mistake with its own
# message, and an accepted token returns exactly the claims that were signed.

SKEW = 60  # the default CRAMP_JWT_CLOCK_SKEW
T = int(NOW)


def test_x7_accepted_token_returns_exactly_the_signed_claims(verifier):
    signed = claims(sub="Practitioner/123", tenant="t", fhirUser="Practitioner/123", jti="claims-1")
    got = verifier.verify(bearer(token(**{k: v for k, v in signed.items()})), AUD)
    assert got == signed


# --------------------------------------------------------------------------- time bounds, both sides


@pytest.mark.parametrize(("iat", "exp", "reason"), [
    (T - 300, T - SKEW, "expired"),              # exp exactly now - skew: expired
    (T - 300, T - SKEW + 1, None),               # one second later: still inside the skew
    (T + SKEW, T + SKEW + 10, None),             # iat exactly now + skew: tolerated
    (T + SKEW + 1, T + SKEW + 10, "iat in future"),
    (T, T - 10, "exp before iat"),               # not expired yet (skew), but a token cannot end before it starts
    (T, T, None),                                # a zero-lifetime token inside the skew is not malformed
    (T, T + 3600, None),                         # lifetime exactly the maximum (one hour)
    (T, T + 3601, "lifetime too long"),
])
def test_x7_time_claims_at_their_bounds(verifier, iat, exp, reason):
    tok = bearer(token(iat=iat, exp=exp))
    if reason is None:
        assert verifier.verify(tok, AUD)["exp"] == exp
    else:
        err = rejected(verifier, tok)
        assert (err.reason, err.iss) == (reason, ISS)  # the issuer goes to the log, to help onboarding


@pytest.mark.parametrize(("nbf", "reason"), [(T + SKEW, None), (T + SKEW + 1, "not yet valid"), (T - 5, None)])
def test_x4_nbf_at_its_bound(verifier, nbf, reason):
    tok = bearer(token(nbf=nbf))
    if reason is None:
        assert verifier.verify(tok, AUD)["nbf"] == nbf
    else:
        assert rejected(verifier, tok).reason == reason


def test_x7_configured_clock_skew_is_the_one_applied(config, clock, rsps):
    strict = AuthConfig(issuers=config.issuers, clock_skew_seconds=0)
    v = ClientVerifier(strict, clock=clock)
    assert rejected(v, bearer(token(iat=T - 100, exp=T))).reason == "expired"
    assert rejected(v, bearer(token(iat=T + 1))).reason == "iat in future"
    assert v.verify(bearer(token(iat=T - 100, exp=T + 1)), AUD)["exp"] == T + 1


def test_x7_configured_lifetime_is_the_one_applied(config, clock, rsps):
    short = AuthConfig(issuers=config.issuers, max_token_lifetime_seconds=300)
    v = ClientVerifier(short, clock=clock)
    assert v.verify(bearer(token(exp=T + 300)), AUD)["exp"] == T + 300
    assert rejected(v, bearer(token(exp=T + 301))).reason == "lifetime too long"


@pytest.mark.parametrize(("claim", "value", "reason"), [
    ("exp", float("nan"), "bad exp"), ("exp", float("inf"), "bad exp"), ("iat", "now", "bad iat"),
    ("nbf", "soon", "bad nbf"), ("nbf", None, "missing nbf"), ("jti", "x" * 513, "jti too long"),
])
def test_x4_malformed_claims_have_their_reason(verifier, claim, value, reason):
    err = rejected(verifier, bearer(token(**{claim: value})))
    assert (err.reason, err.iss) == (reason, ISS)


@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_x4_missing_time_claim_names_the_issuer(verifier, claim):
    err = rejected(verifier, bearer(token(**{claim: ...})))
    assert (err.reason, err.iss) == (f"missing {claim}", ISS)


def test_x4_wrong_aud_names_the_issuer(verifier):
    err = rejected(verifier, bearer(token(aud="https://elsewhere.example/cds-services/x")))
    assert (err.reason, err.iss) == ("wrong aud", ISS)


def test_x4_aud_compared_whole_except_a_trailing_slash(verifier):
    called = "https://cds.example.org/cds-services/serviceX"
    assert verifier.verify(bearer(token(aud=called)), called)["aud"] == called
    assert verifier.verify(bearer(token(aud=called + "/")), called)["aud"] == called + "/"
    assert rejected(verifier, bearer(token(aud="https://cds.example.org/cds-services/service")), called).reason \
        == "wrong aud"


def test_x7_replay_entry_expiring_now_is_already_forgotten():
    clock = FakeClock()
    store = InMemoryReplayStore(clock=clock)
    assert store.seen("iss", "a", NOW) is False
    assert store.seen("iss", "a", NOW) is False  # its expiry is now: purged before the lookup
    assert store.seen("iss", "b", NOW + 1) is False and store.seen("iss", "b", NOW + 1) is True


def test_x7_jti_at_its_length_limit_accepted(verifier):
    assert verifier.verify(bearer(token(jti="j" * 512)), AUD)["jti"] == "j" * 512


# --------------------------------------------------------------------------- the key's own restrictions


@pytest.mark.parametrize("use", ["enc", "SIG", ""])
def test_x5_key_published_for_another_use_is_not_used_for_signatures(config, clock, use):
    with responses.RequestsMock() as r:
        r.get(JKU, json={"keys": [{**ec_jwk(EC_KEY, "ec-1"), "use": use}]})
        v = ClientVerifier(config, clock=clock)
        assert rejected(v, bearer(token())).reason == "key not for signing"


def test_x5_key_without_use_or_alg_members_is_usable(config, clock):
    bare = {k: v for k, v in rsa_jwk(RSA_KEY, "rsa-1").items() if k not in ("use", "alg")}
    with responses.RequestsMock() as r:
        r.get(JKU, json={"keys": [bare]})
        v = ClientVerifier(config, clock=clock)
        assert v.verify(bearer(token(RSA_KEY, "RS384", kid="rsa-1")), AUD)["iss"] == ISS
        assert v.verify(bearer(token(RSA_KEY, "PS256", kid="rsa-1")), AUD)["iss"] == ISS


# --------------------------------------------------------------------------- AuthConfig refuses at start


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"issuers": {ISS: TrustedIssuer(iss=ISS)}},
     "trusted issuer 'https://ehr.example.org' has neither jku nor jwks_file"),
    ({"issuers": {"https://other.example": TrustedIssuer(iss=ISS, jku=(JKU,))}},
     "issuers mapping key 'https://other.example' differs from its iss 'https://ehr.example.org'"),
    ({"algorithms": ()}, "at least one JWT algorithm must be allowed"),
    ({"algorithms": ("ES384", "XY999")}, "unsupported JWT algorithms XY999; choose from ES384, RS384"),
    ({"algorithms": ("none",)}, "JWT algorithms none are not allowed"),
    ({"algorithms": ("hs512",)}, "JWT algorithms hs512 are not allowed"),
    ({"clock_skew_seconds": -1}, "clock skew must be >= 0"),
    ({"max_token_lifetime_seconds": 0}, "token lifetime and JWKS timeout must be > 0"),
    ({"jwks_timeout_seconds": 0}, "token lifetime and JWKS timeout must be > 0"),
    ({"jwks_cache_seconds": 59}, "jwks_cache_seconds must be at least 60"),
])
def test_x6_authconfig_refuses_each_mistake_with_its_message(kwargs, message):
    with pytest.raises(ValueError) as info:
        AuthConfig(**kwargs)
    assert message in str(info.value)


def test_x6_authconfig_limits_themselves_are_allowed():
    cfg = AuthConfig(clock_skew_seconds=0, max_token_lifetime_seconds=1, jwks_timeout_seconds=0.1,
                     jwks_cache_seconds=60, algorithms=("PS512",))
    assert (cfg.clock_skew_seconds, cfg.max_token_lifetime_seconds, cfg.jwks_cache_seconds) == (0, 1, 60)


# --------------------------------------------------------------------------- the environment and the clients file


@pytest.mark.parametrize("value", ["on", "1", "true", "yes", " TRUE ", "Yes"])
def test_config_every_spelling_of_on(tmp_path, value):
    p = write_clients(tmp_path, [{"iss": ISS, "jku": [JKU]}])
    assert load_auth_config({"CRAMP_AUTH": value, "CRAMP_TRUSTED_CLIENTS": str(p)}, default_enabled=False).enabled


@pytest.mark.parametrize("value", ["off", "0", "false", "no", "FALSE", "No"])
def test_config_every_spelling_of_off(value):
    assert load_auth_config({"CRAMP_AUTH": value}).enabled is False


@pytest.mark.parametrize("value", ["yes", "true", "on"])
def test_config_sandbox_flag_spellings(value):
    assert "https://sandbox.cds-hooks.org" in load_auth_config({"CRAMP_TRUST_CDS_HOOKS_SANDBOX": value}).issuers


@pytest.mark.parametrize("skew", ["0", "300", " 45 "])
def test_config_clock_skew_limits_accepted(skew):
    cfg = load_auth_config({"CRAMP_JWT_CLOCK_SKEW": skew}, default_enabled=False)
    assert cfg.clock_skew_seconds == int(skew)


@pytest.mark.parametrize("url", ["http://localhost:8765/jwks.json", "http://[::1]:8765/jwks.json",
                                 "https://keys.example.org/jwks"])
def test_config_jku_loopback_http_or_https(tmp_path, url):
    p = write_clients(tmp_path, [{"iss": ISS, "jku": [url]}])
    assert load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)}).issuers[ISS].jku == (url,)


@pytest.mark.parametrize(("entry", "message"), [
    ({"iss": ISS, "jku": [""]}, "jku entries must be non-empty strings"),
    ({"iss": ISS, "jku": [7]}, "jku entries must be non-empty strings"),
    ({"iss": ISS, "jku": ["http://10.0.0.1/jwks"]}, "must be an absolute https:// URL"),
    ({"iss": ISS, "jwks_file": ""}, "jwks_file must be a path string"),
    ({"iss": ISS, "jwks_file": 3}, "jwks_file must be a path string"),
    ({"iss": ISS, "jku": [JKU], "tenants": ["hospital-a", ""]}, "tenants must be a non-empty array of strings"),
    ({"iss": ISS, "jku": [JKU], "tenants": [1]}, "tenants must be a non-empty array of strings"),
    ({"iss": ISS, "jku": [JKU], "tenants": "hospital-a"}, "tenants must be a non-empty array of strings"),
    ({"iss": " ", "jku": [JKU]}, "iss must be a non-empty string"),
    ({"iss": ISS, "jku": [JKU], "keys": [], "jwks_url": JKU}, "unknown field(s) jwks_url, keys"),
])
def test_config_clients_file_entry_errors(tmp_path, entry, message):
    p = write_clients(tmp_path, [entry])
    with pytest.raises(ValueError) as info:
        load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)})
    assert message in str(info.value) and "clients[0]" in str(info.value)


def test_config_clients_file_name_and_comment_are_documentation(tmp_path):
    p = write_clients(tmp_path, [{"iss": ISS, "jku": [JKU], "name": "Example EHR", "comment": "onboarded 2026"}])
    assert load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)}).issuers[ISS] == TrustedIssuer(iss=ISS, jku=(JKU,))


def test_config_unreadable_clients_file_says_why(tmp_path):
    missing = tmp_path / "absent.json"
    with pytest.raises(ValueError) as info:
        load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(missing)})
    assert str(info.value) == f"CRAMP_TRUSTED_CLIENTS file {missing}: cannot be read (No such file or directory)"


def test_config_clients_file_is_read_as_utf8(tmp_path):
    p = tmp_path / "clients.json"
    p.write_bytes(json.dumps({"clients": [{"iss": ISS, "jku": [JKU], "name": "Hôpital Étoile"}]},
                             ensure_ascii=False).encode("utf-8"))
    assert ISS in load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)}).issuers


def test_config_relative_jwks_file_is_beside_the_clients_file(tmp_path, jwks_file):
    sub = tmp_path / "etc"
    sub.mkdir()
    p = write_clients(sub, [{"iss": ISS, "jwks_file": "../partner-jwks.json"}])
    loaded = load_auth_config({"CRAMP_TRUSTED_CLIENTS": str(p)}).issuers[ISS].jwks_file
    assert Path(loaded).resolve() == jwks_file.resolve()


def test_authentication_error_keeps_reason_and_issuer():
    err = AuthenticationError("expired", iss=ISS)
    assert (str(err), err.reason, err.iss) == ("expired", "expired", ISS)
    assert AuthenticationError("malformed token").iss is None


def _signed_raw(header: dict[str, Any], payload: dict[str, Any], key: Any = EC_KEY) -> str:
    """A compact JWS signed by hand, for headers PyJWT's encoder would rewrite (e.g. ``b64``)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = ECAlgorithm(ECAlgorithm.SHA384).sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def test_x3_b64_header_rejected_even_when_signed(verifier):
    tok = _signed_raw({"alg": "ES384", "typ": "JWT", "kid": "ec-1", "b64": True}, claims())
    assert rejected(verifier, bearer(tok)).reason == "unsupported header"
    assert verifier.verify(bearer(_signed_raw({"alg": "ES384", "typ": "JWT", "kid": "ec-1"}, claims())), AUD)


def test_x3_typ_is_case_insensitive(verifier):
    assert verifier.verify(bearer(token(header={"typ": "jwt"})), AUD)["iss"] == ISS


def test_x3_non_string_jku_header_rejected(verifier):
    tok = _signed_raw({"alg": "ES384", "typ": "JWT", "kid": "ec-1", "jku": ["x"]}, claims())
    assert rejected(verifier, bearer(tok)).reason == "jku not allowed"


@pytest.mark.parametrize(("extra", "reason"), [(0, None), (1, "token too large")])
def test_x2_token_size_limit(verifier, extra, reason):
    authorization = "Bearer " + "a" * (16 * 1024 - len("Bearer ") + extra)
    assert len(authorization) == 16 * 1024 + extra
    got = rejected(verifier, authorization).reason
    assert (got == "token too large") is (reason is not None)


def test_x7_jwks_cache_expires_exactly_after_its_lifetime(verifier, rsps, clock):
    accepted(verifier, bearer(token()), AUD)
    clock.advance(verifier.config.jwks_cache_seconds - 1)
    accepted(verifier, bearer(token(iat=int(clock.now), exp=int(clock.now) + 60)), AUD)
    assert fetches(rsps) == 1
    clock.advance(1)  # exactly the cache lifetime: stale
    accepted(verifier, bearer(token(iat=int(clock.now), exp=int(clock.now) + 60)), AUD)
    assert fetches(rsps) == 2


def test_x3_refetch_allowed_exactly_after_the_rate_limit(verifier, rsps, clock):
    accepted(verifier, bearer(token()), AUD)
    clock.advance(JWKS_MIN_REFETCH_SECONDS - 1)
    assert rejected(verifier, bearer(token(kid="new", iat=int(clock.now)))).reason == "unknown kid"
    assert fetches(rsps) == 1
    clock.advance(1)
    assert rejected(verifier, bearer(token(kid="new", iat=int(clock.now)))).reason == "unknown kid"
    assert fetches(rsps) == 2


def test_x7_expired_keys_are_never_used_again_when_the_refetch_fails(config, clock):
    with responses.RequestsMock() as r:
        r.get(JKU, json=JWKS)
        r.get(JKU, status=503)
        v = ClientVerifier(config, clock=clock)
        accepted(v, bearer(token()), AUD)
        clock.advance(config.jwks_cache_seconds + 1)
        assert rejected(v, bearer(token(iat=int(clock.now)))).reason == "jwks fetch failed: HTTP 503"
        assert rejected(v, bearer(token(iat=int(clock.now)))).reason == "jwks unavailable (refetch rate-limited)"


def test_x7_jwks_request_asks_for_json(config, clock):
    with responses.RequestsMock() as r:
        r.get(JKU, json=JWKS)
        ClientVerifier(config, clock=clock).verify(bearer(token()), AUD)
        (call,) = r.calls
        assert call.request.headers["Accept"] == "application/json"


@pytest.mark.parametrize(("size", "reason"), [(256 * 1024, None), (256 * 1024 + 1, "jwks fetch failed: too large")])
def test_x7_jwks_size_limit_is_256_kib(config, clock, size, reason):
    body = json.dumps(JWKS)
    body = body[:-1] + " " * (size - len(body.encode())) + "}"
    assert len(body.encode()) == size
    with responses.RequestsMock() as r:
        r.get(JKU, body=body, content_type="application/json")
        v = ClientVerifier(config, clock=clock)
        if reason is None:
            assert v.verify(bearer(token()), AUD)["iss"] == ISS
        else:
            assert rejected(v, bearer(token())).reason == reason


def test_x3_jwks_keys_without_kid_or_not_objects_are_skipped_and_the_first_kid_wins(config, clock):
    jwks = {"keys": ["junk", {"kty": "EC"}, ec_jwk(EC_KEY, "ec-1"), ec_jwk(EC_OTHER, "ec-1")]}
    with responses.RequestsMock() as r:
        r.get(JKU, json=jwks)
        v = ClientVerifier(config, clock=clock)
        assert v.verify(bearer(token()), AUD)["iss"] == ISS
        assert rejected(v, bearer(token(EC_OTHER))).reason == "bad signature"


@pytest.mark.parametrize(("content", "message"), [
    ("[]", 'not a JWKS (expected an object with a "keys" array)'),
    (json.dumps({"keys": [{"kty": "EC"}]}), "no usable key with a kid"),
    (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}), "key 's' is private or symmetric"),
    ("{", "JWKS file"),
])
def test_config_jwks_file_errors_name_the_file_and_the_problem(tmp_path, content, message):
    bad = tmp_path / "keys.json"
    bad.write_text(content)
    cfg = AuthConfig(issuers={FILE_ISS: TrustedIssuer(iss=FILE_ISS, jwks_file=str(bad))})
    with pytest.raises(ValueError) as info:
        ClientVerifier(cfg)
    assert str(info.value).startswith(f"JWKS file {bad}: ") and message in str(info.value)


def test_config_unreadable_jwks_file_says_why(tmp_path):
    cfg = AuthConfig(issuers={FILE_ISS: TrustedIssuer(iss=FILE_ISS, jwks_file=str(tmp_path / "none.json"))})
    with pytest.raises(ValueError) as info:
        ClientVerifier(cfg)
    assert str(info.value) == f"JWKS file {tmp_path / 'none.json'}: cannot be read (No such file or directory)"


def test_x3_file_issuer_unknown_kid(verifier, rsps):
    assert rejected(verifier, bearer(token(iss=FILE_ISS, kid="nope", jku=None))).reason == "unknown kid"
    assert len(rsps.calls) == 0


def test_package_gives_the_verifier_lazily_and_nothing_else():
    import cds_hooks.auth as auth_package
    from cds_hooks.auth.verifier import ClientVerifier as direct

    assert auth_package.__getattr__("ClientVerifier") is direct
    with pytest.raises(AttributeError) as info:
        auth_package.__getattr__("Verifier")
    assert str(info.value) == "module 'cds_hooks.auth' has no attribute 'Verifier'"


@pytest.mark.parametrize("response", [{"body": requests.exceptions.ConnectTimeout()}, {"status": 500}])
def test_x7_jwks_failures_name_the_issuer(config, clock, response):
    with responses.RequestsMock() as r:
        r.get(JKU, **response)
        err = rejected(ClientVerifier(config, clock=clock), bearer(token()))
        assert err.reason.startswith("jwks fetch failed") and err.iss == ISS


@pytest.mark.parametrize(("claim", "value", "reason"), [("nbf", T + SKEW + 1, "not yet valid"),
                                                        ("jti", ..., "missing jti")])
def test_x4_other_claim_failures_name_the_issuer(verifier, claim, value, reason):
    err = rejected(verifier, bearer(token(**{claim: value})))
    assert (err.reason, err.iss) == (reason, ISS)


def test_x3_each_jku_url_has_its_own_cache(verifier, rsps):
    rsps.get(JKU2, json={"keys": [ec_jwk(EC_ROTATED, "second")]})
    accepted(verifier, bearer(token()))
    accepted(verifier, bearer(token(EC_ROTATED, jku=JKU2, kid="second")))
    assert (fetches(rsps), fetches(rsps, JKU2)) == (1, 1)


def test_x5_curve_must_fit_even_without_an_alg_member(config, clock):
    p384_no_alg = {k: v for k, v in ec_jwk(EC_KEY, "ec-1").items() if k != "alg"}
    with responses.RequestsMock() as r:
        r.get(JKU, json={"keys": [p384_no_alg]})
        v = ClientVerifier(config, clock=clock)
        assert rejected(v, bearer(token(EC_P256, "ES256", kid="ec-1"))).reason == "key does not fit alg"


def test_x5_key_that_is_no_valid_point_is_unusable(config, clock):
    bad_point = {**ec_jwk(EC_KEY, "ec-1"), "y": ec_jwk(EC_OTHER, "x")["y"]}  # x of one key, y of another
    with responses.RequestsMock() as r:
        r.get(JKU, json={"keys": [bad_point]})
        assert rejected(ClientVerifier(config, clock=clock), bearer(token())).reason == "unusable key"
