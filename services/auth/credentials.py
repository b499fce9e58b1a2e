"""Reading a Bearer token from the ``Authorization`` header without trusting it (POST /authorize).

Basic credentials are ``services.common.basic_auth``'s to read (the gateway reads them the same
way); a header that is not one Bearer token is the same ``MalformedCredentials``, which the app
answers with 401, never an exception that escapes as a 500.
"""

from __future__ import annotations

from services.common.basic_auth import MalformedCredentials


def bearer(header: str | None) -> str | None:
    """The Bearer token of the header; None when there is no header."""
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        raise MalformedCredentials("expected a Bearer token")
    return value
