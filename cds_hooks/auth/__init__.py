"""Authentication of CDS clients (CDS Hooks "Trusting CDS Clients", checklist §8 X1–X7).

| module | job |
|---|---|
| `config` | trusted issuers and limits (`AuthConfig`) from the environment and the trusted-clients file |
| `jwks` | the issuers' public keys: pinned JWKS files, or `jku` URLs fetched, cached, refetched at a bounded rate |
| `verifier` | `ClientVerifier.verify`: one Bearer JWT → verified claims, or `AuthenticationError` |
| `replay` | the `jti` memory that refuses a token seen before |
| `errors` | `AuthenticationError` (its reason is for the log only) |
"""

from cds_hooks.auth.config import (
    DEFAULT_ALGORITHMS,
    SANDBOX_ISSUER,
    SANDBOX_JKU,
    SANDBOX_JWKS_FILE,
    AuthConfig,
    TrustedIssuer,
    load_auth_config,
)
from cds_hooks.auth.errors import AuthenticationError
from cds_hooks.auth.jwks import JWKS_MIN_REFETCH_SECONDS
from cds_hooks.auth.replay import InMemoryReplayStore, ReplayStore


def __getattr__(name: str):
    # The verifier needs PyJWT and cryptography (a tenth of the start-up): imported only when it is used,
    # i.e. with authentication on (reading the settings imports this package either way).
    if name == "ClientVerifier":
        from cds_hooks.auth.verifier import ClientVerifier

        return ClientVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ALGORITHMS",
    "JWKS_MIN_REFETCH_SECONDS",
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
