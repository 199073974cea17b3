"""The one exception authentication raises; its reason is for the log only."""

from __future__ import annotations


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
